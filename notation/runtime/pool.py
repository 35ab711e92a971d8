"""Matrix products on fused.c's pool: the pieces of a split product, each a GEMM of numpy's own BLAS
called as np.matmul calls it, shared between the calling thread and the library's own helper threads
without the GIL (a hand-off of a microsecond or two, against 20-60 for the crew's, which need it).

The same bits as numpy's: a piece is taken only where np.matmul would hand it whole, uncopied, to
cblas_?gemm (each matrix at least 2 x 2 x 2, every operand laid out for BLAS, the result C-ordered or,
in a stack, F-ordered, as numpy then makes o^T = b^T a^T; not a product of a matrix and its own
transpose), and numpy's BLAS is found for sure (the scipy-openblas that numpy's wheels carry, its
symbols and integer width read from numpy's build configuration).  Anything else runs as before
(notation/runtime/parallel.py).
"""
from __future__ import annotations

import ctypes

import numpy as np

from . import fused

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
UNDER = 8  # fused.c's pool_errors: 1 invalid, 2 divide, 4 over, 8 under
BLAS_MOST = 2 ** 31 - 1  # numpy's BLAS_MAXSIZE with 32-bit integers; sizes beyond it are not ours
_state = {"bound": None}  # the library the GEMMs are bound in, or False where numpy's BLAS is not found
_tables = {}  # a product's layout -> its table (or None: not numpy's plain GEMM), made once


def _numpy_gemm():
    """(path, sgemm, dgemm symbol names, ilp64) of the BLAS numpy calls, or None where not known for sure."""
    try:
        blas = np.__config__.CONFIG["Build Dependencies"]["blas"]
        from threadpoolctl import ThreadpoolController
        libs = ThreadpoolController().select(user_api="blas").lib_controllers
    except (AttributeError, KeyError, TypeError, ImportError):  # numpy's configuration not as its wheels have it
        return None
    if not isinstance(blas, dict) or blas.get("name") != "scipy-openblas" or len(libs) != 1 or \
            "scipy_openblas" not in str(libs[0].filepath):
        return None
    ilp64 = "USE64BITINT" in str(blas.get("openblas configuration", ""))
    suffix = "64_" if ilp64 else ""
    return libs[0].filepath, f"scipy_cblas_sgemm{suffix}", f"scipy_cblas_dgemm{suffix}", ilp64


def _bound():
    """fused.c's library with numpy's GEMMs handed to it, or None."""
    lib = fused.library()
    if lib is None:
        return None
    if _state["bound"] is None or (_state["bound"] is not False and _state["bound"] is not lib):
        found = _numpy_gemm()
        try:
            blas = found and ctypes.CDLL(found[0])  # numpy's own, already loaded: the same functions
            s, d = found and (ctypes.cast(getattr(blas, found[1]), ctypes.c_void_p).value,
                              ctypes.cast(getattr(blas, found[2]), ctypes.c_void_p).value)
        except (OSError, AttributeError):
            found = None
        if found:
            lib.pool_gemm_functions.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
            lib.pool_gemm_functions.restype = None
            lib.pool_gemm_functions(s, d, int(found[3]))
        _state["bound"] = lib if found else False
    return _state["bound"] or None


def _matrix(shape, strides, size):
    """(trans, leading dimension) as numpy's matmul hands a (d1, d2) operand to BLAS, or None where it would
    copy it first (numpy's is_blasable2d, C order tried first)."""
    (d1, d2), (s1, s2) = shape, strides
    if s2 == size and s1 % size == 0 and d2 <= s1 // size <= BLAS_MOST:
        return NO_TRANS, s1 // size
    if s1 == size and s2 % size == 0 and d1 <= s2 // size <= BLAS_MOST:
        return TRANS, s2 // size
    return None


def _table(a, b, out, add, cut):
    """The products' table (fused.c's GEMM_ROW numbers per matrix, byte offsets from each array's start), the
    extents of a, b and out in bytes and the syrk starts, or None where a piece is not numpy's plain GEMM."""
    size = out.itemsize
    if a.dtype != out.dtype or b.dtype != out.dtype or out.dtype not in fused.FLOATS or \
            (add is not None and add.dtype != out.dtype):
        return None
    swapped = cut == "stack" and abs(out.strides[-2]) < abs(out.strides[-1])
    if swapped:  # numpy's transpose equivalence for a result of F-ordered matrices: o^T = b^T a^T
        add = None if add is None else np.broadcast_to(add, out.shape).swapaxes(-1, -2)
        a, b, out = b.swapaxes(-1, -2), a.swapaxes(-1, -2), out.swapaxes(-1, -2)
    stack = out.shape[:-2]
    arrays = [np.broadcast_to(x, stack + x.shape[-2:]) for x in (a, b)] + [out]
    if add is not None:
        arrays.append(np.broadcast_to(add, out.shape))
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    whole = slice(None)
    pieces = [((), whole, whole, whole, 2)]  # (stack index, rows, columns, sum, which C)
    if cut == "rows":
        pieces = [((), slice(m * i // 2, m * (i + 1) // 2), whole, whole, 2) for i in range(2)]
    elif cut == "columns":
        pieces = [((), whole, slice(n * i // 2, n * (i + 1) // 2), whole, 2) for i in range(2)]
    elif cut == "sum":  # the second half of the sum made apart, in the caller's `part`, added after
        pieces = [((), whole, whole, slice(k * i // 2, k * (i + 1) // 2), (2, 5)[i]) for i in range(2)]
    elif cut == "stack":
        pieces = [(index, whole, whole, whole, 2) for index in np.ndindex(*stack)]
    rows = []
    for index, r, c, s, which in pieces:
        rr, cc, ss = range(m)[r], range(n)[c], range(k)[s]
        mm, nn, kk = len(rr), len(cc), len(ss)
        if min(mm, kk, nn) < 2 or max(mm, kk, nn) > BLAS_MOST:
            return None  # numpy's special cases (a vector, a dot) or its own loop
        start = [sum(i * t for i, t in zip(index, x.strides)) for x in arrays]
        ta, tb = _matrix((mm, kk), a.strides[-2:], size), _matrix((kk, nn), b.strides[-2:], size)
        if ta is None or tb is None or out.strides[-1] != size or not nn <= out.strides[-2] // size or \
                out.strides[-2] % size:
            return None
        row = [ta[0], tb[0], mm, nn, kk, start[0] + rr.start * a.strides[-2] + ss.start * a.strides[-1], ta[1],
               start[1] + ss.start * b.strides[-2] + cc.start * b.strides[-1], tb[1],
               start[2] + rr.start * out.strides[-2] + cc.start * size, out.strides[-2] // size]
        if add is not None:
            d = arrays[3]
            row += [start[3] + rr.start * d.strides[-2] + cc.start * d.strides[-1], d.strides[-2] // size,
                    d.strides[-1] // size]
        else:
            row += [-1, 0, 0]
        rows.append(row + [which])
    # where a's and b's matrices may be one and the same transposed, numpy takes syrk for them (and
    # copies a triangle): such a product is numpy's alone, known by b's start less a's
    syrk = {r[5] - r[7] for r in rows if r[0] != r[1] and r[2] == r[3] and a.strides[-2:] == b.strides[-2:][::-1]}
    return np.array(rows, np.int64), [fused.extent(x) for x in arrays[:3]], syrk, swapped


class _Products:
    """A product's table, where it lies, and how fused.c's pool_run is called for it."""

    __slots__ = ("table", "extents", "syrk", "swapped", "at", "rows", "run", "dtype")

    def __init__(self, lib, dtype, table, extents, syrk, swapped):
        self.table, self.extents, self.syrk, self.swapped, self.rows = table, extents, syrk, swapped, len(table)
        self.at = fused.address(table)
        self.run, self.dtype = lib.pool_run, fused.FLOATS.index(dtype)


def products(a, b, out, add, cut: str, spans: int, part=None) -> bool:
    """out = a @ b (+ add) in the pieces of `cut` ("rows", "columns": two of a 2-d product; "stack": each
    matrix of a stack; "sum": the two halves of the sum, the second into `part`, laid out as out, for
    the caller to add), in at most `spans` spans shared with the crew's helpers; False where numpy's
    BLAS is not found, a piece is not its plain GEMM (nothing done), or a floating-point error was
    raised that numpy's errstate may act on (out to be made again by numpy)."""
    lib = _bound()
    if lib is None:
        return False
    key = (cut, a.shape, a.strides, b.shape, b.strides, out.shape, out.strides, out.dtype,
           None if add is None else (add.shape, add.strides, add.dtype), a.dtype, b.dtype)
    p = _tables.get(key)
    if p is None:
        if len(_tables) >= 512:  # a few per network; more only where shapes keep changing
            _tables.clear()
        made = _table(a, b, out, add, cut)
        p = _tables[key] = made and _Products(lib, out.dtype, *made) or False
    if not p or (cut == "sum") != (part is not None) or part is not None and (
            part.strides != out.strides or part.dtype != out.dtype):
        return False
    at = [fused.address(x) for x in ((b, a, out) if p.swapped else (a, b, out))]
    (a0, a1), (b0, b1), (o0, o1) = [(s + lo, s + hi) for s, (lo, hi) in zip(at, p.extents)]
    if o0 < a1 and a0 < o1 or o0 < b1 and b0 < o1 or p.syrk and at[1] - at[0] in p.syrk:
        return False  # numpy would copy an operand the result overlaps, or take syrk
    # the job's six addresses (fused.c's pool_gemms), made afresh: two threads may run one layout at once
    job = _JOB(*at, fused.address(add) if add is not None else 0, p.at, fused.address(part) if part is not None else 0)
    raised = p.run(fused.POOL["gemm"], p.dtype, job, 0.0, p.rows, min(p.rows, spans), 1)
    # an overflow, a NaN made, ...: numpy's own products again, to warn or raise as the caller's errstate says
    return not raised or raised == UNDER and np.geterr()["under"] == "ignore"


_JOB = ctypes.c_longlong * 6
