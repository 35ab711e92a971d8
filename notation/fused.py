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
import os
import threading
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).with_name("fused.c")
LIBRARY = Path(__file__).with_name("_fused.so")
_C = {np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}
_state = {"lib": None, "why": None}
_lock = threading.Lock()


def source_hash() -> int:
    """The first 16 hex digits of fused.c's SHA-256, as scripts/setup.sh builds them into the library."""
    return int(hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16], 16)


def enabled() -> bool:
    return os.environ.get("NOTATION_FUSED", "1") != "0"


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
    try:
        lib = ctypes.CDLL(str(LIBRARY))
        lib.fused_source.restype = ctypes.c_ulonglong
        built_from = lib.fused_source()
    except (OSError, AttributeError) as e:
        return None, f"{LIBRARY.name} does not load ({e}); run scripts/setup.sh again"
    if built_from != source_hash():
        return None, f"{LIBRARY.name} was built from another {SOURCE.name}; run scripts/setup.sh again"
    for dtype, c in _C.items():
        f = getattr(lib, f"adam_{dtype.name}")
        f.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_ssize_t] + [c] * 4
        f.restype = None
        for other in (dtype.name, "bool"):
            f = getattr(lib, f"multiply_{dtype.name}_{other}")
            f.argtypes = [ctypes.c_void_p] * 7
            f.restype = None
    return lib, None


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def adam(g, w, m, v, b1, b2, eps, step) -> bool:
    """Adam's update of the 1-d contiguous blocks w, m, v from g in one pass (engine/training/optim.py
    writes it as numpy's passes), if the library is at hand and the four share a float dtype; False
    where it does not apply, so the caller runs numpy's passes.  The four must not overlap (they do
    not: the weights, their gradient and the optimizer's two moments)."""
    lib = _lib()
    dtype = w.dtype
    if lib is None or dtype not in _C or any(a.dtype != dtype or not a.flags.c_contiguous for a in (g, m, v)) or \
            not (w.flags.c_contiguous and w.flags.writeable and m.flags.writeable and v.flags.writeable) or \
            not g.size == w.size == m.size == v.size:
        return False
    getattr(lib, f"adam_{dtype.name}")(_address(g), _address(w), _address(m), _address(v), w.size, b1, b2, eps, step)
    return True


ROW = 256  # multiply's last axis at most this long: on longer rows numpy's own loop is as fast or faster


def _strides(x: np.ndarray, ndim: int) -> np.ndarray:
    """x's strides in entries over ndim axes (leading axes added), 0 where x is broadcast."""
    pad = ndim - x.ndim
    return np.array([0] * pad + [0 if n == 1 else s // x.itemsize for n, s in zip(x.shape, x.strides)], np.intp)


def multiply(a, b, out) -> bool:
    """np.multiply(a, b, out=out) in one C loop, the same bits, where numpy's cost per row outweighs
    its work: out up to 6-d, float, its last axis short (<= ROW) and contiguous in all three (a and b
    broadcast against out on the others); b, or a, may be bool.  False where it does not apply."""
    if a.dtype == bool:
        a, b = b, a  # a * b == b * a, to the bit
    if not (1 <= out.ndim <= 6 and out.dtype in _C and 0 < out.shape[-1] <= ROW):
        return False
    n, size = out.shape[-1], out.itemsize
    if a.dtype != out.dtype or b.dtype not in (out.dtype, np.dtype(bool)) or out.strides[-1] != size or \
            max(a.ndim, b.ndim) > out.ndim or any(x.shape[-1] != n or x.strides[-1] != x.itemsize for x in (a, b)) or \
            any(s % x.itemsize for x in (a, b, out) for s in x.strides) or not out.flags.writeable or \
            any(m not in (1, o) for x in (a, b) for m, o in zip(x.shape[::-1], out.shape[::-1])) or \
            any(np.may_share_memory(out, x) for x in (a, b)):  # numpy buffers an overlap; this loop would not
        return False
    lib = _lib()
    if lib is None:
        return False
    shape = np.array((1,) * (6 - out.ndim) + out.shape, np.intp)
    strides = [_strides(x, 6) for x in (a, b, out)]
    kernel = getattr(lib, f"multiply_{out.dtype.name}_{b.dtype.name}")
    kernel(_address(a), _address(strides[0]), _address(b), _address(strides[1]), _address(out),
           _address(strides[2]), _address(shape))
    return True


def available() -> bool:
    """Whether the fused loops run (the library built from this fused.c, and NOTATION_FUSED not 0)."""
    return _lib() is not None


def describe() -> str:
    """Whether the fused loops run here, or why numpy's passes do."""
    if not enabled():
        return "numpy passes (NOTATION_FUSED=0)"
    return f"fused loops in C ({LIBRARY.name})" if available() else f"numpy passes: {_state['why']}"
