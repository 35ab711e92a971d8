"""Loops numpy cannot fuse, in C: each does the float operations of the numpy passes it replaces, in
their order and rounded alike, so it gives the same bits in fewer passes over memory (fused.c).

scripts/setup.sh builds fused.c into _fused.so beside this file where a C compiler is at hand;
without it, or with NOTATION_FUSED=0, numpy's passes run, to the same bits.  A kernel is called with
numpy arrays (1-d, contiguous) and numbers; it runs without the GIL (ctypes releases it), so the two
halves of a split run at once.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

LIBRARY = Path(__file__).with_name("_fused.so")
VERSION = 1  # fused.c's FUSED_VERSION: a library built from another fused.c is not used
_C = {np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}
_state = {"lib": None, "why": None}


def enabled() -> bool:
    return os.environ.get("NOTATION_FUSED", "1") != "0"


def _library():
    """The built library, or None with the reason in _state["why"] (looked for once)."""
    if _state["lib"] is not None or _state["why"] is not None:
        return _state["lib"]
    if not LIBRARY.exists():
        _state["why"] = f"{LIBRARY.name} is not built (scripts/setup.sh builds it with a C compiler)"
        return None
    try:
        lib = ctypes.CDLL(str(LIBRARY))
        version = lib.fused_version()
    except (OSError, AttributeError) as e:
        _state["why"] = f"{LIBRARY.name} does not load ({e}); run scripts/setup.sh again"
        return None
    if version != VERSION:
        _state["why"] = f"{LIBRARY.name} is from another fused.c (version {version}, want {VERSION}); " \
                        "run scripts/setup.sh again"
        return None
    for dtype, c in _C.items():
        f = getattr(lib, f"adam_{dtype.name}")
        f.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_ssize_t] + [c] * 4
        f.restype = None
    _state["lib"] = lib
    return lib


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def adam(g, w, m, v, b1, b2, eps, step) -> bool:
    """Adam's update of the 1-d contiguous blocks w, m, v from g in one pass (engine/training/optim.py
    writes it as numpy's passes), if the library is at hand and the four share a float dtype; False
    where it does not apply, so the caller runs numpy's passes."""
    lib = _library() if enabled() else None
    dtype = w.dtype
    if lib is None or dtype not in _C or any(a.dtype != dtype or not a.flags.c_contiguous for a in (g, m, v)) or \
            not (w.flags.c_contiguous and w.flags.writeable and m.flags.writeable and v.flags.writeable) or \
            not g.size == w.size == m.size == v.size:
        return False
    getattr(lib, f"adam_{dtype.name}")(_address(g), _address(w), _address(m), _address(v), w.size, b1, b2, eps, step)
    return True


def describe() -> str:
    """Whether the fused loops run here, or why numpy's passes do."""
    if not enabled():
        return "numpy passes (NOTATION_FUSED=0)"
    return f"fused loops in C ({LIBRARY.name})" if _library() is not None else f"numpy passes: {_state['why']}"
