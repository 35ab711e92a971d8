"""Matrix products (and large elementwise passes) on two cores that hold up when the machine is busy.

OpenBLAS's own threads wait for each other inside every call; when another process holds a core
that wait turns into milliseconds per call (a batched product of 144 small GEMMs measured 2 ms
alone and 0.1-4.6 s beside three test suites).  Here a large product is cut in two along its
batch, its rows or (for a thin result) its summed axis, and each half runs on single-threaded BLAS,
one on the calling thread and one on a helper thread of ours (numpy releases the GIL): no call
waits on a thread it cannot see.
"""
from __future__ import annotations

import math
import time

import numpy as np

from . import counters, environment, pool
from .crew import Crew

try:  # a well-kept library that finds the BLAS numpy loaded and sets its thread count
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover - without it, np.matmul as it is
    ThreadpoolController = None

# How many threads of ours share a large product: NOTATION_THREADS (checked by environment.py), else the
# machine's cores (2 at most).  With 1, every product runs whole on single-threaded BLAS: beside other work
# on 2 cores that was the fastest (a step 52 ms against 57 split, 219 on OpenBLAS's); on a quiet one, 2 are.
WORKERS = environment.get("NOTATION_THREADS") or min(2, environment.cores())
MIN_FLOPS = 2_000_000  # smaller products run as they are: a hand-off costs tens of microseconds
# An elementwise numpy pass (a broadcast product, a function into its result) of this many entries or more
# is cut in two as well (a pool's (19) at batch 64: 1.6 M entries in rows of 32, 1.4 ms on one thread): from
# 2^16 a step at batch 32 lost as often as it gained; from 2^18 one gains 1-2% at batch 64 and 128.
MIN_ENTRIES = 1 << 18
# A single GEMM of this many FLOPs or more runs on OpenBLAS's own threads instead: faster on a quiet machine
# (dense1's (12): 2.3 against 4.8 ms), they collapse on a busy one (a step under load 6: 314 against 103
# ms), so by default never; NOTATION_BLAS_THREADS_FLOPS=200000000 on a machine of your own.
BLAS_THREADS_FLOPS = environment.get("NOTATION_BLAS_THREADS_FLOPS")
_crew = _blas = None  # the helpers and numpy's BLAS, found on first use
_depth = 0  # nesting of serial_blas()


def _setup():
    global _crew, _blas
    if _crew is None:
        _crew = Crew()
        _blas = ThreadpoolController().select(user_api="blas")
    _crew.grow(WORKERS - 1)
    return _crew, _blas


def enabled() -> bool:
    """Whether products are ours to schedule now (else numpy's BLAS runs them on its own threads): see
    FORCED and threads(); read at some 30 calls a forward pass."""
    return _ENABLED


# Whose threads run the products: NOTATION_PARALLEL=1 ours, 0 BLAS's own, unset (None) chosen for each
# network, batch size and pass by timing both (engine/compiler/threads.py).  Read once, as the process starts.
FORCED = environment.get("NOTATION_PARALLEL")
_AVAILABLE = ThreadpoolController is not None
_ENABLED = _AVAILABLE and FORCED is not False


def choosable() -> bool:
    """Whether the two can be timed against each other and either taken: two workers, threadpoolctl to
    set BLAS's threads, nothing forced, and OpenBLAS, whose products give the same bits on any number
    of its threads (each entry of a result is summed whole by one thread; tests/test_thread_bits.py)."""
    if FORCED is not None or not _AVAILABLE or WORKERS < 2:
        return False
    _, blas = _setup()
    return bool(blas.lib_controllers) and all(c.internal_api == "openblas" for c in blas.lib_controllers)


class threads:
    """Products inside on our threads (ours=True: each large one split between WORKERS of them, BLAS on
    one) or on BLAS's own, WORKERS of them (ours=False), whatever the process had; as before after.
    Which is faster depends on the network and the machine: OpenBLAS's threads cost little a call for
    large 2-d products, ours split stacks of small ones and elementwise passes too."""

    __slots__ = ("ours", "before", "counts")

    def __init__(self, ours: bool):
        self.ours = ours

    def __enter__(self):
        global _ENABLED
        self.before, self.counts = _ENABLED, ()
        _ENABLED = _AVAILABLE and FORCED is not False and (self.ours or FORCED is True)
        if not _ENABLED and _AVAILABLE and not _depth:
            self.counts = _blas_threads(WORKERS)
        return self

    def __exit__(self, *exc):
        global _ENABLED, _blas_spins
        try:
            _put_back(self.counts, WORKERS)
        finally:
            if not _ENABLED:
                _blas_spins = time.monotonic() + BLAS_SPIN_S
            _ENABLED = self.before


# OpenBLAS's threads keep their cores spinning this long after a call (2^28 cycles, its default): a split
# of ours meanwhile would wait for a core, so until then the parts run one after the other here.
BLAS_SPIN_S = 0.1
_blas_spins = 0.0  # time.monotonic() until which they may


def arithmetic() -> str:
    """What the bits of a result depend on here, in a line a checkpoint keeps: the BLAS library and its
    kernels and, but for OpenBLAS (whose products give the same bits on any number of its threads),
    whether its own threads compute products.  The number of our threads is not part of it: every
    product is cut the same way whatever it is."""
    global _arithmetic
    if _arithmetic is None:
        info = ThreadpoolController().select(user_api="blas").info() if ThreadpoolController else []
        blas = " ".join(str(info[0].get(k)) for k in ("internal_api", "version", "architecture")) if info else \
            "numpy's BLAS"
        if info and all(i.get("internal_api") == "openblas" for i in info):
            threads = "the same bits on any threads"
        elif FORCED is False:
            threads = "its own threads for every product (NOTATION_PARALLEL=0)"
        elif BLAS_THREADS_FLOPS < 10 ** 18:
            threads = (f"its own {WORKERS} threads for products of {BLAS_THREADS_FLOPS} FLOPs or more "
                       "(NOTATION_BLAS_THREADS_FLOPS)")
        else:
            threads = "one thread a product"
        _arithmetic = f"{blas}, {threads}"
    return _arithmetic


_arithmetic = None


def serial_blas():
    """BLAS on one thread inside (every product of a training step, small ones too); the large
    ones are split over our own workers by matmul().  Nested uses cost nothing."""
    return _SerialBlas()


class _SerialBlas:
    """serial_blas()'s context: a class, not a generator, since some 150 nested uses a step each cost
    a few microseconds that way."""

    __slots__ = ("before",)

    def __enter__(self):
        global _depth
        self.before = None
        if not enabled() or _depth:
            _depth += 1
            return
        _depth += 1
        try:
            self.before = _blas_threads(1)
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc):
        global _depth
        try:
            _put_back(self.before or (), 1)
        finally:
            _depth -= 1


def _blas_threads(n: int) -> list:
    """numpy's BLAS set to n threads; the (library, its count before) pairs for _put_back.  Each library's
    own get and set (3 us) rather than threadpoolctl's limit() (10 us a call)."""
    _, blas = _setup()
    before = [(c, c.get_num_threads()) for c in blas.lib_controllers]
    for c, k in before:
        if k != n:
            c.set_num_threads(n)
    return before


def _put_back(before, n: int) -> None:
    """Each library's count as before _blas_threads(n)."""
    for c, k in before:
        if k != n:
            c.set_num_threads(k)


def one_blas_thread():
    """BLAS on one thread inside, on ours or BLAS's threads alike: a GEMV (a sum as ones @ matrix, a
    product of one row or column), which OpenBLAS's threads would cut along its sum, changing the bits."""
    return _OneThread()


class _OneThread:
    __slots__ = ("before",)

    def __enter__(self):
        self.before = ()
        if (_ENABLED and _depth) or not _AVAILABLE:
            return  # inside a step on our threads: BLAS is on one already
        self.before = _blas_threads(1)

    def __exit__(self, *exc):
        _put_back(self.before, 1)


def _under(err, fn, *args, **kwargs):
    """fn(*args) on a worker, with the caller's floating-point error handling (threads do not inherit it)."""
    with np.errstate(**err):
        return fn(*args, **kwargs)


def _share(fn, parts) -> None:
    """fn(*part) for each part, one per worker (the first on the calling thread), each under the
    caller's floating-point error handling, which threads do not inherit."""
    if time.monotonic() < _blas_spins:  # the same parts, one after the other: the same bits
        for part in parts:
            fn(*part)
        return
    crew, _ = _setup()
    err = np.geterr()
    crew.run([(fn, tuple(parts[0]))] + [(_under, (err, fn) + tuple(part)) for part in parts[1:]])


# Lanes shorter than this run one after the other, each product split on the pool: for the crew's hand-off (20-60 us,
# the GIL), the caller's splits whole, lanes of 0.24-0.83 ms lost (mixer 19.5 -> 18.4 ms, resnet 41.3 -> 39.1 a step).
ASIDE_SECONDS = 1e-3


def aside() -> bool:
    """Whether start() hands work to a helper (two workers or more, ours to schedule, nothing being
    counted: the counters time one thread); else the caller runs it at once."""
    return _ENABLED and WORKERS >= 2 and counters.ACTIVE is None


def start(fn, *args) -> None:
    """fn(*args) on a helper of ours while the caller goes on (under the caller's floating-point error
    handling), until finish(); where aside() is False, here and now.  Meanwhile the caller's own
    splits run whole on its thread, and fn's run whole on the helper: each in the same pieces as ever,
    so the bits are those of one thread."""
    if not aside():
        fn(*args)
        return
    crew, _ = _setup()
    crew.start(_under, (np.geterr(), fn) + args)


def finish() -> None:
    """Once everything start() handed out is done; its first error raised here."""
    if _crew is not None and _crew.started:
        _crew.finish()


def each(fn, items) -> None:
    """fn(part) for WORKERS interleaved parts of `items` (items[0::2], items[1::2] on two workers),
    each on a thread of ours, or fn(items) whole with one worker; for work that splits into
    independent pieces (an optimizer's blocks), where the order of the pieces cannot matter."""
    items = list(items)
    if not enabled() or WORKERS < 2 or len(items) < 2:
        fn(items)
        return
    _share(fn, [(items[k::WORKERS],) for k in range(WORKERS)])


def spans(fn, n: int) -> None:
    """fn(start, stop) for each worker's consecutive span of range(n) (parallel.cuts), or fn(0, n) where
    our threads do not run now: for a C loop over rows that do not depend on each other (a chain's, a
    sum's chunks, the taps' outer rows), the same bits however they are shared."""
    if not _ENABLED or WORKERS < 2 or n < 2:
        fn(0, n)
        return
    _share(fn, [(s.start, s.stop) for s in cuts(n)])


# A C loop (fused.Rows: a chain, a chunked sum, the taps) of this many entries or more is shared with the
# crew's helpers in C_SPANS spans a worker, each taken by whichever thread is free first (fused.c's pool).
C_MIN_ENTRIES, C_SPANS = 1 << 15, 2


def rows(call, n: int, entries: int, least: int = C_MIN_ENTRIES) -> None:
    """call(n, parts, share) for a C loop over n independent rows, `entries` in all (fused.Rows): shared
    with the crew's helpers where it has `least` entries or more, else whole; the same bits either way."""
    if n >= 2 and entries >= least and _pool():
        call(n, C_SPANS * WORKERS, 1)
    else:
        call(n, 1, 0)


def _pool() -> bool:
    """Whether the pool's spans are shared now: on our threads, two workers or more, no lane of ours beside
    the caller (start()), the machine not busy; the crew's helpers then woken where asleep, to take them."""
    if not _ENABLED or WORKERS < 2 or _crew is not None and (_crew.started or getattr(_crew.local, "helper", False)):
        return False
    crew, _ = _setup()
    if crew.c is None or crew.c.machine_busy():
        return False
    crew.wake()
    return True


def _cut_pass(fn, inputs, out, axis, s):
    """fn on the part s of out's axis (each input's part, or all of one broadcast along that axis)."""
    fn(*[_along(v, axis, out.ndim, s) for v in inputs], out=_along(out, axis, out.ndim, s))


def _even_axis(shape):
    """The outermost axis that cuts into WORKERS parts of (nearly) equal size, if any."""
    return next((k for k, n in enumerate(shape) if n >= WORKERS and (n % WORKERS == 0 or n >= 8 * WORKERS)), None)


def elementwise(fn, inputs, out):
    """fn(*inputs, out=out) for an elementwise fn (inputs broadcast against out), a large one cut
    along an outer axis of out between the workers: each entry is computed as it would be whole."""
    axis = _even_axis(out.shape) if enabled() and WORKERS >= 2 and out.size >= MIN_ENTRIES else None
    if axis is None:
        fn(*inputs, out=out)
        return out
    _share(_cut_pass, [(fn, inputs, out, axis, s) for s in cuts(out.shape[axis])])
    return out


def cuts(n: int, parts: int | None = None) -> list:
    """n split into `parts` (WORKERS) consecutive slices of (nearly) equal length, one per worker
    (integer arithmetic: np.linspace here cost 20 us a split, some 40 splits a step)."""
    parts = parts or WORKERS
    return [slice(n * i // parts, n * (i + 1) // parts) for i in range(parts)]


def _along(x, axis, ndim, cut):
    """x's part of a cut along `axis` of an ndim-dimensional broadcast stack (all of x if it is broadcast
    there; None stays None: no addend)."""
    if x is None:
        return None
    k = axis - (ndim - x.ndim)
    if k < 0 or x.shape[k] == 1:
        return x
    key = [slice(None)] * x.ndim
    key[k] = cut
    return x[tuple(key)]


def _product(a, b, out, add):
    """out = a @ b, then out += add (a bias, while the part is still in cache)."""
    if not _ENABLED and (a.shape[-2] == 1 or b.shape[-1] == 1):
        with _OneThread():  # a GEMV: see one_blas_thread()
            out = np.matmul(a, b, out=out)
    else:
        out = np.matmul(a, b, out=out)
    if add is not None:
        np.add(out, add, out=out)
    return out


# A large 2-d product is always computed in PARTS fixed pieces (its columns, its rows, or for a thin
# result its sum), whatever WORKERS is: cutting a sum changes its bits, and so can cutting rows or
# columns (OpenBLAS takes another kernel below about 10^6 multiply-adds).  Two threads share the
# pieces; one thread, or BLAS's own threads, compute them one after the other, to the same bits.
PARTS = 2


def _cut(m: int, k: int, n: int):
    """How a 2-d product of these sizes is cut into PARTS pieces ("columns", "rows", "sum"), or None
    (computed whole): a function of the sizes alone, so every thread count computes the same pieces."""
    if 2 * m * n * k < MIN_FLOPS:
        return None
    if n > m and n >= 16 * PARTS and m * n >= 4096:
        # each worker packs its own part of the larger operand b, not all of it: a few rows against a
        # wide b (dense1's (12), (13) at batch 64: 3.3-3.8 against 3.7-4.5 ms split by rows)
        return "columns"
    if m >= 2 * PARTS and m * n >= 4096:
        return "rows"
    if k >= 64 * PARTS:  # a thin result: along the sum, then the parts added in order
        return "sum"
    return None


def _pieces(cut, a, b, out, add):
    """The PARTS pieces of a 2-d product cut as `cut` says, and the arrays of a cut sum's later parts."""
    if cut == "columns":
        return [(a, b[:, s], out[:, s], _along(add, 1, 2, s)) for s in cuts(b.shape[1], PARTS)], []
    if cut == "rows":
        return [(a[s], b, out[s], _along(add, 0, 2, s)) for s in cuts(a.shape[0], PARTS)], []
    parts = [np.empty_like(out) for _ in range(PARTS - 1)]
    return [(a[:, s], b[s], dest, None) for s, dest in zip(cuts(a.shape[1], PARTS), [out] + parts)], parts


def _fixed(cut, a, b, out, add):
    """out = a @ b (+ add) in the fixed pieces of `cut`: shared by the workers, or one after another
    (on BLAS's own threads when ours are off, or for a product of BLAS_THREADS_FLOPS), to the same bits."""
    big = 2 * a.shape[0] * a.shape[1] * b.shape[1] >= BLAS_THREADS_FLOPS
    shared = _ENABLED and not big and WORKERS >= PARTS
    if shared and cut != "sum":
        with serial_blas():  # the pool first: its table is made once, and the pieces' views are not needed
            if _pool() and pool.products(a, b, out, add, cut, PARTS):
                return out
    pieces, parts = _pieces(cut, a, b, out, add)
    if shared:
        with serial_blas():
            if cut != "sum" or not _pool() or not pool.products(a, b, out, None, cut, PARTS, *parts):
                _share(_product, pieces)
    else:  # one after another: one large GEMM on OpenBLAS's own threads, else BLAS as the process has it
        with _setup()[1].limit(limits=WORKERS) if _ENABLED and big else serial_blas():
            for piece in pieces:
                _product(*piece)
    for p in parts:
        out += p
    if parts and add is not None:
        out += add
    return out


def matmul(a, b, out=None, add=None):
    """np.matmul(a, b, out=out) (plus `add`, broadcast to the result: each worker adds its part of it
    right after its product, on its own core), the work split over WORKERS threads of single-threaded
    BLAS.  A stack is cut between the matrices (each computed whole); a 2-d product in the fixed
    pieces of _cut, whoever computes them: the bits never depend on the number of threads."""
    m, k = a.shape[-2], a.shape[-1]
    n = b.shape[-1]
    if a.ndim == 2 and b.ndim == 2:
        stack, cut = (), _cut(m, k, n)
    else:
        stack, cut = _stack(a.shape, b.shape), None
    if out is None and (add is not None or cut):
        out = np.empty(stack + (m, n), dtype=np.result_type(a, b))
    if cut:
        return _fixed(cut, a, b, out, add)
    if not _ENABLED:
        return _product(a, b, out, add)
    if WORKERS < 2 or not stack or max(stack) < WORKERS or 2 * math.prod(stack) * m * n * k < MIN_FLOPS:
        if _depth:  # inside serial_blas() already (a training step, a forward): no context to enter
            return _product(a, b, out, add)
        with serial_blas():
            return _product(a, b, out, add)
    if out is None:
        out = np.empty(stack + (m, n), dtype=np.result_type(a, b))
    with serial_blas():  # each matrix's product whole: on the pool, or half the stack's longest axis each
        if not _pool() or not pool.products(a, b, out, add, "stack", C_SPANS * WORKERS):
            axis = int(np.argmax(stack))
            _share(_product, [tuple(_along(t, axis, len(stack) + 2, s) for t in (a, b, out, add))
                              for s in cuts(stack[axis])])
    return out


def _stack(a: tuple, b: tuple) -> tuple:
    """The stack two matmul operands of these shapes broadcast to (np.broadcast_shapes costs some
    microseconds a call; the stacks are mostly equal, or one operand is a single matrix)."""
    if a[:-2] == b[:-2] or len(b) == 2:
        return a[:-2]
    if len(a) == 2:
        return b[:-2]
    return np.broadcast_shapes(a[:-2], b[:-2])
