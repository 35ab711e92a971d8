"""Loops numpy cannot fuse, in C: each does the float operations of the numpy passes it replaces, in
their order and rounded alike, so it gives the same bits in fewer passes over memory (fused.c).

scripts/setup.sh builds fused.c into _fused.so beside this file where a C compiler is at hand;
without it, or with NOTATION_FUSED=0, numpy's passes run, to the same bits.  Each function here
says False where its loop does not apply (the caller then runs numpy); a loop runs without the GIL
(ctypes releases it), so the two halves of a split run at once.
"""
from __future__ import annotations

import ctypes
import hashlib
import sys
import threading
from pathlib import Path

import numpy as np

from ..mathematics.functions import GELU_CONSTANTS
from . import environment, ufuncs

SOURCE = Path(__file__).with_name("fused.c")
LIBRARY = Path(__file__).with_name("_fused.so")
STAMP = Path(__file__).with_name("_fused.so.sha256")  # the library's SHA-256, written by scripts/setup.sh
_C = {np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}
_TINY = {d: float(np.finfo(d).tiny) for d in _C}  # each dtype's smallest normal number: the updates' flush
# fused.c's optimizer updates: each rule's state tables (after g and w) and its scalars (after the shrink table)
UPDATES = (("adam", 2, 5), ("momentum", 1, 3), ("sgd", 0, 1))
_state = {"lib": None, "why": None}
_lock = threading.Lock()


def source_hash() -> int:
    """The first 16 hex digits of fused.c's SHA-256, as scripts/setup.sh builds them into the library."""
    return int(hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16], 16)


def enabled() -> bool:
    return environment.get("NOTATION_FUSED")


def _lib():
    """The library where the fused loops run (built from this fused.c, NOTATION_FUSED not 0), else None."""
    return _library() if enabled() else None


def _library():
    """The built library, or None with the reason in _state["why"] (looked for once)."""
    with _lock:
        if _state["lib"] is None and _state["why"] is None:
            _state["lib"], _state["why"] = _load()
        return _state["lib"]


def _load():
    if not LIBRARY.exists():
        return None, f"{LIBRARY.name} is not built (scripts/setup.sh builds it with a C compiler)"
    why = _unfit()
    if why is None:
        try:
            return _bind(ctypes.CDLL(str(LIBRARY.resolve()))), None
        except _Stale:
            why = "stale"
        except (OSError, AttributeError, ValueError) as e:
            why = f"does not load ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    if why == "stale":
        why = f"{LIBRARY.name} was built from another {SOURCE.name}; run scripts/setup.sh again"
    else:
        why = f"{LIBRARY.name} {why}; run scripts/setup.sh again"
        print(f"notation: {why} (numpy's passes run meanwhile: the same results, slower)", file=sys.stderr)
    return None, why


class _Stale(Exception):
    """The library was built from another fused.c."""


STAMP_BYTES = 128  # the stamp is 64 hex digits and a newline; a longer file is not one
MOST = 64 << 20  # a library beyond this size is not ours: refused before it is read


def _unfit():
    """Why the library must not be mapped (a truncated build, a `cp` over it, another library), else None:
    its SHA-256 must be the one scripts/setup.sh wrote beside it once the build was complete.  ctypes
    maps a file whose headers promise more than it holds, and a read past its end is SIGBUS."""
    try:
        with open(STAMP, "rb") as f:
            stamp = f.read(STAMP_BYTES + 1).decode("ascii", "replace").strip()
        size = LIBRARY.stat().st_size
        if size > MOST:
            return f"does not load (it is {size:,} bytes, not the fused loops)"
        digest = hashlib.sha256(LIBRARY.read_bytes()).hexdigest()
    except FileNotFoundError:
        return f"does not load (no {STAMP.name} beside it: an unfinished build, or not one of scripts/setup.sh)"
    except OSError as e:
        return f"does not load ({e.strerror or e})"
    if stamp != digest:
        return (f"does not load (its SHA-256 is not the one in {STAMP.name}: a truncated, overwritten or "
                "foreign file)")
    return None


def _bind(lib):
    """lib with every function's argument and result types set; AttributeError names one it lacks."""
    lib.fused_source.restype = ctypes.c_ulonglong
    if lib.fused_source() != source_hash():
        raise _Stale
    for dtype, c in _C.items():
        for rule, states, scalars in UPDATES:
            f = getattr(lib, f"{rule}_{dtype.name}")
            f.argtypes = [ctypes.c_ssize_t] + [ctypes.c_void_p] * (4 + states) + [c] * scalars
            f.restype = None
        for other in (dtype.name, "bool"):
            f = getattr(lib, f"multiply_{dtype.name}_{other}")
            f.argtypes = [ctypes.c_void_p] * 7
            f.restype = None
        for loop in ("chain", "colsum", "taps", "rows"):  # called by pool_run alone (Rows); here only looked for
            getattr(lib, f"{loop}_{dtype.name}")
        f = getattr(lib, f"row_max_{dtype.name}")
        f.argtypes = [ctypes.c_void_p] + [ctypes.c_ssize_t] * 3 + [ctypes.c_void_p] * 2 + [ctypes.c_ssize_t]
        f.restype = None
        f = getattr(lib, f"window_max_{dtype.name}")
        f.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_ssize_t] + [ctypes.c_void_p] * 6
        f.restype = None
    lib.chain_numpy_loop.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    lib.chain_numpy_loop.restype = None
    lib.chain_gelu_constants.argtypes, lib.chain_gelu_constants.restype = [ctypes.c_double] * 3, None
    lib.chain_gelu_constants(*GELU_CONSTANTS)
    for f, name in enumerate(NUMPY_LOOPS):
        for which, dtype in enumerate(_C):
            found = ufuncs.loop(getattr(np, name), dtype)
            _LOOPS[name, dtype] = found is not None
            if found:
                lib.chain_numpy_loop(f, which, *found)
    flag, n, ns = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong
    for name, args, result in (("flag_wait", [flag, n, ns, ns], n), ("flag_load", [flag], n),
                               ("flag_store", [flag, n], None), ("flag_exchange", [flag, n], n),
                               ("flag_done_wait", [flag, n, flag, flag, flag, n, ns, ns], n)):
        f = getattr(lib, name)
        f.argtypes, f.restype = args, result
    lib.pool_run.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_double, ctypes.c_ssize_t,
                             ctypes.c_int, ctypes.c_int]
    lib.pool_run.restype = ctypes.c_int
    lib.pool_helper_here.argtypes, lib.pool_helper_here.restype = [], None
    lib.machine_busy.argtypes, lib.machine_busy.restype = [], ctypes.c_int
    return lib


POOL = {"chain": 0, "colsum": 1, "taps": 2, "gemm": 3, "rows": 4}  # fused.c's POOL_CHAIN ... POOL_ROWS


class Rows:
    """A C loop over independent rows (chain, colsum or taps), its arguments after the rows (ints and
    addresses, None for NULL) packed once as the 64-bit integers pool_run reads: call(n, parts, share)
    runs rows [0, n) in `parts` spans through fused.c's pool_run, shared with the crew's helpers where
    `share`, without the GIL (a hand-off of a microsecond or two, against some 20 for a part of the
    crew's own); else the spans one after another on the calling thread."""

    __slots__ = ("run", "family", "dtype", "packed", "scale", "keep")

    def __init__(self, lib, family: str, dtype, args, scale: float = 0.0, keep=()):
        self.run, self.family, self.dtype = lib.pool_run, POOL[family], FLOATS.index(np.dtype(dtype))
        self.packed = (ctypes.c_longlong * len(args))(*(0 if a is None else int(a) for a in args))
        self.scale, self.keep = float(scale), keep  # keep: what the addresses point into

    def __call__(self, n: int, parts: int, share: int) -> None:
        self.run(self.family, self.dtype, self.packed, self.scale, n, parts, share)


def flags():
    """The library whose flag_wait, flag_done_wait, flag_load, flag_store and flag_exchange (fused.c)
    hand work between threads without waking a sleeping one (notation/runtime/crew.py), or None where it is
    not built or NOTATION_FUSED is 0."""
    return _lib()


def address(a: np.ndarray) -> int:
    """Where a's first entry lies in memory (what the C loops are handed)."""
    return a.__array_interface__["data"][0]


def extent(x: np.ndarray) -> tuple:
    """The bytes x spans, from its data pointer: (lowest, highest + 1); two arrays overlap where these do."""
    lo = sum(s * (n - 1) for n, s in zip(x.shape, x.strides) if s < 0)
    hi = sum(s * (n - 1) for n, s in zip(x.shape, x.strides) if s > 0) + x.itemsize
    return lo, hi


def update(rule: str, dtype):
    """fused.c's update `rule` (sgd, momentum, adam) over tables of arrays of dtype (notation/runtime/foreach.py
    calls it), or None where the library is not at hand or dtype is not a float it takes."""
    lib = _lib()
    return getattr(lib, f"{rule}_{np.dtype(dtype).name}") if lib is not None and dtype in _C else None


def tiny(dtype) -> float:
    """dtype's smallest normal number: an update stores a moment of smaller magnitude as +0 (fused.c's FLUSH)."""
    return _TINY[np.dtype(dtype)]


ROW = 256  # multiply's last axis at most this long: on longer rows numpy's own loop is as fast or faster


def _strides(x: np.ndarray, ndim: int) -> np.ndarray:
    """x's strides in entries over ndim axes (leading axes added), 0 where x is broadcast."""
    pad = ndim - x.ndim
    return np.array([0] * pad + [0 if n == 1 else s // x.itemsize for n, s in zip(x.shape, x.strides)], np.intp)


def multiply(a, b, out, memo=None) -> bool:
    """np.multiply(a, b, out=out) in one C loop, the same bits, where numpy's cost per row outweighs
    its work: out up to 6-d, float, its last axis short (<= ROW) and contiguous in all three (a and b
    broadcast against out on the others); b, or a, may be bool.  False where it does not apply.
    memo: a caller's one-entry list where the call worked out for the same three arrays is kept."""
    if a.dtype == bool:
        a, b = b, a  # a * b == b * a, to the bit
    lib = _lib()
    if lib is None:
        return False
    bound = memo[0] if memo is not None else None
    if bound is None or bound[0] is not a or bound[1] is not b or bound[2] is not out or bound[3] is not lib:
        bound = (a, b, out, lib, _multiply_call(lib, a, b, out))
        if memo is not None:
            memo[0] = bound
    call = bound[4]
    if call is None:
        return False
    call[0](*call[1:8])  # call[8]: the index array the addresses point into, kept alive with them
    return True


def _multiply_call(lib, a, b, out):
    """(kernel, its arguments) of multiply for these arrays, or None where the loop does not apply."""
    plan = _plan(("multiply", a.dtype, a.shape, a.strides, b.dtype, b.shape, b.strides, out.dtype, out.shape,
                  out.strides), _multiply_plan, a, b, out)
    if not plan or not out.flags.writeable or any(np.may_share_memory(out, x) for x in (a, b)):
        return None  # numpy buffers an overlap; this loop would not
    kernel, ints, at = plan
    step = ints.itemsize
    return (getattr(lib, kernel), address(a), at, address(b), at + 6 * step, address(out), at + 12 * step,
            at + 18 * step, ints)


def _multiply_plan(a, b, out):
    """multiply's kernel and the index array it reads (the strides of a, b and out, then the shape), or
    False where the loop does not apply."""
    if not (1 <= out.ndim <= 6 and out.dtype in _C and 0 < out.shape[-1] <= ROW):
        return False
    n, size = out.shape[-1], out.itemsize
    if a.dtype != out.dtype or b.dtype not in (out.dtype, np.dtype(bool)) or out.strides[-1] != size or \
            max(a.ndim, b.ndim) > out.ndim or any(x.shape[-1] != n or x.strides[-1] != x.itemsize for x in (a, b)) or \
            any(s % x.itemsize for x in (a, b, out) for s in x.strides) or \
            any(m not in (1, o) for x in (a, b) for m, o in zip(x.shape[::-1], out.shape[::-1])):
        return False
    shape = np.array((1,) * (6 - out.ndim) + out.shape, np.intp)
    ints = np.concatenate([_strides(x, 6) for x in (a, b, out)] + [shape])
    return f"multiply_{out.dtype.name}_{b.dtype.name}", ints, address(ints)


_layouts = {}  # a loop's layouts (shapes, strides, dtypes) -> its kernel and index array, or False


def _plan(layout, make, *arrays):
    """The kernel, index array (and its address) for this layout of the arrays, made once by make and kept."""
    plan = _layouts.get(layout)
    if plan is None:
        if len(_layouts) >= 256:  # a few per network; more only where shapes keep changing
            _layouts.clear()
        plan = _layouts[layout] = make(*arrays)
    return plan


def window_max(inner, k, values, planes=None) -> bool:
    """(18)'s max over inner's k trailing (window) axes into values, and where planes is given (bool,
    the window's axes first) (19)'s one-hot positions of each first maximum, in one C loop: the same
    bits as notation/lowering/maxima.py's numpy passes, NaN and -0.0 included.  values up to 5-d, float, with
    its last axis contiguous in inner, values and planes alike.  False where it does not apply."""
    layout = ("window_max", k, inner.dtype, values.dtype, inner.shape, inner.strides, values.shape, values.strides) + \
        ((None,) if planes is None else (planes.dtype, planes.shape, planes.strides))
    plan = _plan(layout, _window_plan, inner, k, values, planes)
    lib = _lib() if plan else None
    if lib is None or not values.flags.writeable or np.may_share_memory(values, inner) or \
            planes is not None and (not planes.flags.writeable or np.may_share_memory(planes, values)):
        return False
    kernel, w, ints, at = plan
    step = ints.itemsize
    getattr(lib, kernel)(address(inner), at, at + 4 * step, w, address(values), at + (4 + w) * step,
                         None if planes is None else address(planes), None if planes is None else at + (13 + w) * step,
                         None if planes is None else at + (17 + w) * step, at + (8 + w) * step)
    return True


def row_max(inner, values, planes=None) -> bool:
    """window_max over inner's last axis where that axis is contiguous and its other axes are one stride
    of rows (a softmax's max[m] s[b,h,n,m]), values C-ordered, planes C-ordered (the window first): one
    C loop, the same bits.  False where it does not apply."""
    lib = _lib()
    if lib is None or values.dtype not in _C or inner.dtype != values.dtype or inner.ndim != values.ndim + 1 or \
            inner.shape[:-1] != values.shape or 0 in inner.shape or not values.flags.c_contiguous or \
            not values.flags.writeable or inner.strides[-1] != inner.itemsize or np.may_share_memory(values, inner):
        return False
    live = [k for k in range(values.ndim) if inner.shape[k] != 1]
    if any(inner.strides[p] != inner.strides[q] * inner.shape[q] for p, q in zip(live, live[1:])) or \
            any(s % inner.itemsize for s in inner.strides):
        return False
    if planes is not None and not (planes.dtype == bool and planes.shape == inner.shape[-1:] + values.shape
                                   and planes.flags.c_contiguous and planes.flags.writeable):
        return False
    xs = inner.strides[live[-1]] // inner.itemsize if live else 0
    kernel = lib.row_max_float32 if values.dtype == np.float32 else lib.row_max_float64  # _C: these two alone
    kernel(address(inner), values.size, inner.shape[-1], xs, address(values),
           None if planes is None else address(planes), values.size)
    return True


def _window_plan(inner, k, values, planes):
    """The kernel, the window's size and the index array WINDOW_MAX (fused.c) reads for this layout, or
    False where the loop does not apply."""
    n = values.ndim
    if not (1 <= n <= 5 and values.dtype in _C and inner.dtype == values.dtype and inner.ndim == n + k) or \
            inner.shape[:n] != values.shape or 0 in inner.shape or \
            any(s % values.itemsize for x in (inner, values) for s in x.strides):
        return False
    window = inner.shape[n:]
    if planes is not None and (planes.dtype != bool or planes.shape != window + values.shape):
        return False
    rows = (inner, values) + ((planes[(0,) * k],) if planes is not None else ())
    if values.shape[-1] > 1 and any(x.strides[n - 1] != x.itemsize for x in rows):
        return False
    size, offsets = values.itemsize, list(np.ndindex(*window))
    outer = lambda x, unit: (0,) * (5 - n) + tuple(s // unit for s in x.strides[:n - 1])  # noqa: E731
    start = lambda strides, unit: [sum(o * s // unit for o, s in zip(off, strides)) for off in offsets]  # noqa: E731
    # xs, xo, vs, n (the outer axes, padded to 4, then the row), ps, po: in the order WINDOW_MAX reads them
    ints = [*outer(inner, size), *start(inner.strides[n:], size), *outer(values, size), *(1,) * (5 - n), *values.shape]
    if planes is not None:
        ints += [*outer(planes[(0,) * k], 1), *start(planes.strides[:k], 1)]
    ints = np.array(ints, np.intp)
    return f"window_max_{values.dtype.name}", len(offsets), ints, address(ints)


# fused.c's CHAIN_ID ...: each the same bits as numpy's; from "tanh" on, numpy's own tanh loop runs inside
CHAIN_FUNCTIONS = ("id", "square", "twice", "drelu", "relu", "tanh", "dtanh", "sigmoid", "dsigmoid", "gelu", "dgelu")
ON_TANH = frozenset(CHAIN_FUNCTIONS[CHAIN_FUNCTIONS.index("tanh"):])
# numpy's passes over its entries for each function that makes more than one (functions.py): the chain saves them
NUMPY_PASSES = {"dtanh": 3, "sigmoid": 4, "dsigmoid": 5, "gelu": 8, "dgelu": 14}
NUMPY_LOOPS = ("tanh", "exp")  # fused.c's NUMPY_TANH_LOOP, NUMPY_EXP_LOOP: numpy's own loops, run by the chain
FINAL = ("exp",)  # a function a chain can apply to its whole sum (exp(s - sm)): numpy's loop on each block
_LOOPS = {}  # (name, dtype) -> whether numpy's loop was found and handed to the library


def chain_runs(functions, dtype) -> bool:
    """Whether the library's chain can run these functions for dtype (those on tanh, and a final exp,
    need numpy's own loop)."""
    dtype = np.dtype(dtype)
    return all(_LOOPS.get(("tanh" if f in ON_TANH else f, dtype), False) for f in functions
               if f in ON_TANH or f in FINAL)


def final_mode(name) -> int:
    """The chain's mode bits that apply function `name` to the sum (fused.c's CHAIN: mode >> 1)."""
    return 0 if name is None else (NUMPY_LOOPS.index(name) + 1) << 1
CHAIN_OPS = 8  # fused.c's CHAIN_OPS: operands of one chain at most


FLOATS = tuple(_C)  # the dtypes the loops take
COLSUM_OPS = 4  # fused.c's COLSUM: factors of one product at most


def colsum_arguments(per, rows, n, blocks, partial) -> tuple | None:
    """fused.c's COLSUM for the product of these C-ordered (rows, n) blocks of one float dtype, summed
    over chunks of `per` rows into partial (chunks, n), as a Rows over the chunks; None where the library
    is not at hand."""
    lib = _lib()
    if lib is None or partial.dtype not in _C or not 1 <= len(blocks) <= COLSUM_OPS:
        return None
    bases = np.array([address(b) for b in blocks], np.uintp)
    args = (per, rows, n, len(blocks), address(bases), address(partial))
    return Rows(lib, "colsum", partial.dtype, args, keep=(bases, blocks, partial))


def library():
    """The library where the fused loops run, else None (NOTATION_FUSED=0, or not built)."""
    return _lib()


def chain_arguments(n, outer, bases, strides, kinds, code, scales, mode, out, ostrides, okind) -> tuple:
    """The arguments of fused.c's CHAIN after its rows (r0, r1), for Rows: the arrays' addresses (they must
    stay alive while these are used), prepared by notation/lowering/chains.py."""
    at = [address(a) for a in (outer, bases, strides, kinds, code, scales, out, ostrides)]
    return (n, at[0], len(kinds), *at[1:6], mode, at[6], at[7], okind)


def available() -> bool:
    """Whether the fused loops run (the library built from this fused.c, and NOTATION_FUSED not 0)."""
    return _lib() is not None


def describe() -> str:
    """Whether the fused loops run here, or why numpy's passes do."""
    if not enabled():
        return "numpy passes (NOTATION_FUSED=0)"
    return f"fused loops in C ({LIBRARY.name})" if available() else f"numpy passes: {_state['why']}"
