"""This machine's rates, and the modelled time and roofline bound of a product's road.

A road's time is modelled from its FLOPs at the GEMM rate (or np.einsum's own rate off BLAS), the
bytes it moves at the memory's bandwidth, and numpy's cost per call and per block of a stack; the
bound is what no road can beat: the FLOPs at the GEMM rate or the bytes read and written once at
the bandwidth, whichever is longer.  The rates are measured once per machine (about 0.2 s) and kept
in the user's cache folder; NOTATION_RATES=reference uses fixed ones instead (the tests do, so that
a choice never depends on the machine that runs them).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..runtime import environment


@dataclass(frozen=True)
class Rates:
    """What the cost model reads: FLOP/s, bytes/s and seconds, with where they came from."""

    gemm: float  # FLOP/s of a large float32 GEMM on numpy's BLAS, both cores
    bandwidth: float  # bytes/s of a streaming elementwise pass (read and written)
    einsum: float  # FLOP/s of np.einsum's own loops (no BLAS), one core
    call: float  # seconds numpy spends on one call, before any work
    block: float  # seconds per block of a stacked np.matmul
    source: str = "reference"

    def describe(self) -> str:
        return (f"GEMM {self.gemm / 1e9:.0f} GFLOP/s, bandwidth {self.bandwidth / 1e9:.0f} GB/s, "
                f"einsum {self.einsum / 1e9:.1f} GFLOP/s, {self.call * 1e6:.1f} us a call ({self.source})")


# A 2-core AMD Zen 4 of this workplace, measured by measure() in December 2026 (a quiet machine)
REFERENCE = Rates(gemm=190e9, bandwidth=36e9, einsum=8e9, call=1.5e-6, block=0.2e-6)

_lock = threading.Lock()
_current: list = []


def rates() -> Rates:
    """The rates in force: NOTATION_RATES=reference for fixed ones, else this machine's, measured once
    and cached (${XDG_CACHE_HOME:-~/.cache}/einsum-engine/rates.json, one entry per machine and BLAS)."""
    with _lock:
        if not _current:
            _current.append(REFERENCE if environment.get("NOTATION_RATES") == "reference" else cached())
        return _current[0]


def use(r: Rates | None) -> None:
    """Put these rates in force for what is compiled from now on (None: back to rates()' own choice)."""
    with _lock:
        _current.clear()
        if r is not None:
            _current.append(r)


def cache_file() -> Path:
    return environment.cache_root() / "rates.json"


def machine_key() -> str:
    """What the rates depend on: the processor, the core count, numpy and its BLAS."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    blas = ""
    try:
        from threadpoolctl import threadpool_info
        blas = ";".join(f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')}"
                        for i in threadpool_info() if i.get("user_api") == "blas")
    except ImportError:  # pragma: no cover
        pass
    text = f"{model}|{os.cpu_count()}|numpy {np.__version__}|{blas}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached(path: Path | None = None) -> Rates:
    """This machine's rates from the cache, else measured now and written there (atomically; a cache
    that cannot be written or read is measured again, never an error)."""
    path = path or cache_file()
    key = machine_key()
    table = {}
    try:
        table = json.loads(path.read_text())
        entry = table[key]
        return Rates(**{f: (float(entry[f]) if f != "source" else str(entry[f])) for f in Rates.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    r = measure()
    keep(path, key, asdict(r))
    return r


def keep(path: Path, key: str, value) -> None:
    """table[key] = value in the JSON cache file `path`, written whole to a temporary file and renamed
    (two processes never leave half a file); a cache that cannot be read starts anew, one that
    cannot be written is no error: it is measured again next time."""
    try:
        try:
            table = json.loads(path.read_text())
            table = table if isinstance(table, dict) else {}
        except (OSError, ValueError):
            table = {}
        table[key] = value
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-")
        with os.fdopen(fd, "w") as f:
            json.dump(table, f, indent=1)
        os.replace(tmp, path)
    except OSError:
        pass


def _fastest(fn, repeats=5) -> float:
    fn()
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure() -> Rates:
    """The rates of this machine as it is now: a 1024^3 GEMM, a pass over 3 x 16 MiB, a
    one-pass np.einsum reduction, an empty call, a stack of small blocks (fastest of a few runs)."""
    from ..runtime import parallel
    rng = np.random.default_rng(0)
    a = rng.random((1024, 1024), dtype=np.float32)
    out = np.empty_like(a)
    gemm = 2 * 1024 ** 3 / _fastest(lambda: parallel.matmul(a, a, out=out))
    x = rng.random(1 << 22, dtype=np.float32)
    y, z = x.copy(), np.empty_like(x)
    bandwidth = 3 * x.nbytes / _fastest(lambda: parallel.elementwise(np.multiply, (x, y), z))
    p, q = x.reshape(-1, 64), y.reshape(-1, 64)
    einsum = 2 * p.size / _fastest(lambda: np.einsum("nk,nk->k", p, q))
    tiny = np.ones((2, 2), np.float32)
    call = _fastest(lambda: np.matmul(tiny, tiny), 50)
    stack = np.ones((256, 2, 2), np.float32)
    block = max(_fastest(lambda: np.matmul(stack, stack), 20) - call, 0.0) / 256
    when = time.strftime("%Y-%m-%d", time.gmtime())
    return Rates(gemm=gemm, bandwidth=bandwidth, einsum=einsum, call=call, block=block,
                 source=f"measured on this machine, {when}")


# -- the model --------------------------------------------------------------------------------------
TRANSPOSED = 3.0  # a transposing copy moves bytes this many times slower than a streaming pass
LINE = 64  # bytes of a cache line: what an entry read with a large stride costs


def matmul_seconds(x_shape, y_shape, itemsize, r: Rates, copies=0, strided=0) -> float:
    """One np.matmul of stacked blocks x[B,L,K] @ y[B,K,R]: the longer of its FLOPs at the GEMM rate and
    its bytes at the bandwidth, numpy's call and per-block costs, `copies` entries copied first, and
    `strided` entries' worth of bytes read again because blocks interleave in memory."""
    blocks = math.prod(x_shape[:-2])
    m, k, n = x_shape[-2], x_shape[-1], y_shape[-1]
    flops = 2 * blocks * m * n * k
    moved = itemsize * blocks * (m * k + k * n + m * n)
    return (max(flops / r.gemm, moved / r.bandwidth) + r.call + (blocks * r.block if blocks > 1 else 0.0)
            + (TRANSPOSED * 2 * copies + strided) * itemsize / r.bandwidth)


def einsum_seconds(flops, entries, itemsize, r: Rates) -> float:
    """np.einsum's own loop: its FLOPs at einsum's rate or its bytes at the bandwidth, and a call."""
    return max(flops / r.einsum, itemsize * entries / r.bandwidth) + r.call


def pass_seconds(entries, itemsize, r: Rates, calls=1) -> float:
    """A pass that reads and writes `entries` at the bandwidth (an elementwise product, a copy)."""
    return itemsize * entries / r.bandwidth + calls * r.call


def bound_seconds(flops, entries, itemsize, r: Rates) -> float:
    """The roofline bound: the FLOPs at the GEMM rate or the bytes at the bandwidth, whichever is longer,
    and never less than one numpy call (the floor of any road here, for a product of a few entries)."""
    return max(flops / r.gemm, itemsize * entries / r.bandwidth, r.call)


VECTOR = 3.0  # fused.c's TAPS on a contiguous row (vectors in registers) against np.einsum's loop, per FLOP
SCALAR = 0.5  # the same loop one entry at a time (a row strided in the result)
ROW_FLOPS = 30  # a row's setup (its pointers, its store), in np.einsum's FLOPs (3-5 ns measured here)


def taps_seconds(macs, rows, entries, vector, itemsize, r: Rates) -> float:
    """fused.c's TAPS: `macs` multiply-adds at a multiple of np.einsum's rate (VECTOR on a contiguous row,
    SCALAR without), each of `rows` rows' setup, or the bytes it reads and writes, whichever is longer."""
    flops = 2 * macs / (VECTOR if vector else SCALAR) + ROW_FLOPS * rows
    return max(flops / r.einsum, itemsize * entries / r.bandwidth)
