"""Loops numpy cannot fuse, compiled by numba: each does numpy's float operations in numpy's order
(no fused multiply-add, no reordering: numba's default, not fastmath), so it gives the same bits,
in fewer passes over memory.

numba is optional (scripts/setup.sh installs it).  The kernels load on a thread of their own at the
first use, so nothing waits for them: until they are ready, without numba, or with NOTATION_FUSED=0,
numpy runs, to the same bits.  A kernel is registered by name (`register`) with its signatures, and
compiled with the others the first time any is asked for (`get`); its compiled code is cached on disk.
"""
from __future__ import annotations

import os
import threading

_kernels = {}   # name -> (the Python function, its numba signatures)
_ready = {}     # name -> the compiled kernel
_loaders = {}   # name -> the thread that compiles it (started at the first get)
_why = "not loaded yet"
_lock = threading.Lock()


def enabled() -> bool:
    return os.environ.get("NOTATION_FUSED", "1") != "0"


def register(name: str, fn, signatures) -> None:
    """Compile fn when the kernels load, for the signatures that signatures(numba.types) lists;
    get(name) then returns it."""
    with _lock:
        _kernels[name] = (fn, signatures)


def _load(names):
    global _why
    try:
        import numba
        for name in names:
            fn, signatures = _kernels[name]
            signatures = signatures(numba.types)
            # nogil: the two halves of a split run on two threads at once; error_model="numpy": a
            # division by zero gives inf as numpy's does, and no check stops a loop's vectorising
            _ready[name] = numba.njit(signatures, nogil=True, cache=True, error_model="numpy")(fn)
        _why = f"numba {numba.__version__}"
    except ImportError:
        _why = "numba is not installed (scripts/setup.sh installs it)"
    except Exception as e:  # a broken numba install: numpy runs, to the same bits
        for name in names:
            _ready.pop(name, None)
        _why = f"numba could not compile the kernels ({type(e).__name__}: {str(e).splitlines()[0][:120]})"


def get(name: str, wait: bool = False):
    """The compiled kernel `name`, or None while the kernels load, without numba, or with
    NOTATION_FUSED=0.  The first call starts loading every kernel registered by then, on a thread
    of their own; wait=True waits for them."""
    if not enabled():
        return None
    kernel = _ready.get(name)
    if kernel is not None:
        return kernel
    if name not in _kernels:
        raise KeyError(f"no fused kernel {name!r}; registered: {sorted(_kernels)}")
    with _lock:
        loader = _loaders.get(name)
        if loader is None:
            pending = [n for n in _kernels if n not in _loaders]
            # not a daemon: a process that ends while numba compiles waits for it rather than tearing
            # the compiler down halfway (a second or two, once: the compiled code is cached)
            loader = threading.Thread(target=_load, args=(pending,), name="notation-fused-load")
            _loaders.update(dict.fromkeys(pending, loader))
            loader.start()
    if wait:
        loader.join()
    return _ready.get(name)


def describe() -> str:
    """Which fused kernels run here, or why numpy's passes do (waits for the kernels to load)."""
    if not enabled():
        return "numpy passes (NOTATION_FUSED=0)"
    ready = [n for n in sorted(_kernels) if get(n, wait=True) is not None]
    return f"{', '.join(ready)} fused ({_why})" if ready else f"numpy passes: {_why}"


def arrays(t, dtype, readonly=(False, True)):
    """1-d contiguous arrays of dtype, writable and read-only (an input may be either)."""
    return [t.Array(dtype, 1, "C", readonly=r) for r in readonly]
