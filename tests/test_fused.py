"""notation.fused: loops in C that give numpy's bits, used only where built from this fused.c."""
import numpy as np
import pytest

from notation import fused


@pytest.fixture
def built(monkeypatch):
    monkeypatch.setenv("NOTATION_FUSED", "1")
    if fused.describe().startswith("numpy passes"):
        pytest.skip(f"Adam's fused update: {fused.describe()}")


@pytest.mark.usefixtures("built")
def test_a_library_built_from_another_fused_c_is_not_used(monkeypatch, tmp_path):
    """A stale build (fused.c changed since) says to run the set-up again instead of running old code."""
    changed = tmp_path / "fused.c"
    changed.write_text(fused.SOURCE.read_text() + "/* changed */\n")
    monkeypatch.setattr(fused, "SOURCE", changed)
    monkeypatch.setattr(fused, "_state", {"lib": None, "why": None})
    assert fused.describe() == "numpy passes: _fused.so was built from another fused.c; run scripts/setup.sh again"
    g = np.ones(4, np.float32)
    assert not fused.adam(g, g.copy(), g.copy(), g.copy(), 0.9, 0.999, 1e-8, 0.1)


def test_a_library_that_does_not_load_says_so(monkeypatch, tmp_path):
    broken = tmp_path / "_fused.so"
    broken.write_text("not a shared object")
    monkeypatch.setattr(fused, "LIBRARY", broken)
    monkeypatch.setattr(fused, "_state", {"lib": None, "why": None})
    assert fused.describe().startswith("numpy passes: _fused.so does not load (")
    assert fused.describe().endswith("run scripts/setup.sh again")


@pytest.mark.usefixtures("built")
def test_arrays_it_cannot_take_go_to_numpy():
    """Mixed dtypes, a strided block or a read-only weight: False, and nothing written."""
    w = np.ones(8, np.float32)
    frozen = w.copy()
    frozen.flags.writeable = False
    for g, w_ in ((np.ones(8), w), (np.ones(16, np.float32)[::2], w), (np.ones(8, np.float32), frozen)):
        assert not fused.adam(g, w_, np.zeros(8, np.float32), np.zeros(8, np.float32), 0.9, 0.999, 1e-8, 0.1)
    np.testing.assert_array_equal(w, 1.0)
    assert fused.adam(np.ones(8, np.float32), w, np.zeros(8, np.float32), np.zeros(8, np.float32), 0.9, 0.999,
                      1e-8, 0.1)  # the same, all float32, contiguous and writable: it runs
    assert (w < 1.0).all()
