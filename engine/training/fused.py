"""Adam's update in one pass over each block (numba), where numpy needs twelve.

The kernel does the float operations of `optim.Adam._update`, in the same order and rounded alike
(no fused multiply-add, no reordering: numba's default, not fastmath), so it gives the same bits;
only the passes over memory are fewer (an update at batch 64: 3.5 -> 1.8 ms).  numba is optional
(setup.sh installs it): without it, before it has loaded, or with ENGINE_FUSED=0, the numpy passes
run.  It loads on a thread of its own at the first update, so a run never waits for it: the first
steps take the numpy passes, to the same bits.
"""
from __future__ import annotations

import os
import threading

import numpy as np

_kernel = None
_loader = None
_why = "not loaded yet"
_lock = threading.Lock()

# 1-d contiguous blocks of g, w, m, v, then beta1, beta2, eps and the step size, in the weights' dtype
SIGNATURES = [f"void({t}[::1], {t}[::1], {t}[::1], {t}[::1], {t}, {t}, {t}, {t})" for t in ("float32", "float64")]


def enabled() -> bool:
    return os.environ.get("ENGINE_FUSED", "1") != "0"


def _adam(g, w, m, v, b1, b2, eps, step):  # pragma: no cover - compiled by numba, run outside Python
    for i in range(w.size):
        gi = g[i]
        mi = (m[i] - gi) * b1 + gi      # m = b1 m + (1 - b1) g, as optim.Adam._update writes it
        sq = gi * gi
        vi = (v[i] - sq) * b2 + sq      # v = b2 v + (1 - b2) g^2
        m[i] = mi
        v[i] = vi
        w[i] -= mi / (np.sqrt(vi) + eps) * step  # w -= step m / (sqrt(v) + eps)


def _load():
    global _kernel, _why
    try:
        import numba
        # nogil: the two halves of an update run on two threads at once; error_model="numpy": a
        # division by zero gives inf as numpy's does, and no check stops the loop's vectorising
        _kernel = numba.njit(SIGNATURES, nogil=True, cache=True, error_model="numpy")(_adam)
        _why = f"numba {numba.__version__}"
    except ImportError:
        _why = "numba is not installed (scripts/setup.sh installs it)"
    except Exception as e:  # a broken numba install: the numpy passes, which give the same bits
        _why = f"numba could not compile the kernel ({type(e).__name__}: {str(e).splitlines()[0][:120]})"


def adam(wait: bool = False):
    """The compiled kernel kernel(g, w, m, v, b1, b2, eps, step), or None while it loads, without
    numba, or with ENGINE_FUSED=0.  The first call starts loading it; wait=True waits for it."""
    global _loader
    if not enabled():
        return None
    if _kernel is not None:
        return _kernel
    with _lock:
        if _loader is None:
            # not a daemon: a process that ends while numba compiles waits for it rather than
            # tearing the compiler down halfway (a second or so, once: the result is cached)
            _loader = threading.Thread(target=_load, name="engine-fused-load")
            _loader.start()
    if wait:
        _loader.join()
    return _kernel


def describe() -> str:
    """How Adam's update runs here, for bench.py and the plans: one pass (numba) or numpy's passes."""
    if not enabled():
        return "numpy passes (ENGINE_FUSED=0)"
    return f"one pass per block ({_why})" if adam(wait=True) is not None else f"numpy passes: {_why}"
