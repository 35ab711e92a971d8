"""notation.fused: loops compiled by numba in the background, numpy's passes until they are ready."""
import numpy as np
import pytest

import engine.training.optim  # noqa: F401 - registers the kernel 'adam'
from notation import fused


def _halve(x, out):  # pragma: no cover - compiled by numba
    for i in range(x.size):
        out[i] = x[i] * 0.5


def test_a_kernel_registered_after_the_others_loaded_is_compiled_too(monkeypatch):
    pytest.importorskip("numba")
    monkeypatch.setenv("NOTATION_FUSED", "1")
    fused.get("adam", wait=True)  # the kernels registered at import have loaded
    for registry in ("_ready", "_loaders"):  # put back as they were after the test
        monkeypatch.setattr(fused, registry, dict(getattr(fused, registry)))
    monkeypatch.setitem(fused._kernels, "halve", (_halve, lambda t: [t.void(a, t.Array(t.float64, 1, "C"))
                                                                     for a in fused.arrays(t, t.float64)]))
    kernel = fused.get("halve", wait=True)
    assert kernel is not None, fused.describe()
    x = np.arange(5.0)
    x.flags.writeable = False  # an input may be read-only
    out = np.empty(5)
    kernel(x, out)
    np.testing.assert_array_equal(out, x * 0.5)


def test_an_unknown_kernel_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("NOTATION_FUSED", "1")
    with pytest.raises(KeyError, match=r"no fused kernel 'adamw'; registered: \[.*'adam'"):
        fused.get("adamw")


def test_notation_fused_0_turns_every_kernel_off(monkeypatch):
    monkeypatch.setenv("NOTATION_FUSED", "0")
    assert fused.get("adam", wait=True) is None
