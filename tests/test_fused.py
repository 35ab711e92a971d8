"""notation.runtime.fused: loops in C that give numpy's bits, used only where built from this fused.c."""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import as_strided

from notation.lowering.maxima import window_max
from notation.runtime import fused

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def built(monkeypatch):
    monkeypatch.setenv("NOTATION_FUSED", "1")
    if fused.describe().startswith("numpy passes"):
        pytest.skip(f"the fused loops: {fused.describe()}")


@pytest.mark.usefixtures("built")
def test_a_library_built_from_another_fused_c_is_not_used(monkeypatch, tmp_path):
    """A stale build (fused.c changed since) says to run the set-up again instead of running old code."""
    changed = tmp_path / "fused.c"
    changed.write_text(fused.SOURCE.read_text() + "/* changed */\n")
    monkeypatch.setattr(fused, "SOURCE", changed)
    monkeypatch.setattr(fused, "_state", {"lib": None, "why": None})
    assert fused.describe() == "numpy passes: _fused.so was built from another fused.c; run scripts/setup.sh again"
    assert fused.update("adam", np.float32) is None


def test_a_library_that_does_not_load_says_so(monkeypatch, tmp_path):
    broken = tmp_path / "_fused.so"
    broken.write_text("not a shared object")
    monkeypatch.setattr(fused, "LIBRARY", broken)
    monkeypatch.setattr(fused, "_state", {"lib": None, "why": None})
    assert fused.describe().startswith("numpy passes: _fused.so does not load (")
    assert fused.describe().endswith("run scripts/setup.sh again")


def _pool_gradient_operands(rng, dtype, b=3, i=4, j=5, c=8):
    """(19)'s operands as the notation lines them up: dz broadcast over the window offsets, the mask a
    strided view of its planes [p, q, b, i, j, c], dx's view [b, i, p, j, q, c]."""
    dz = rng.standard_normal((b, i, 1, j, 1, c)).astype(dtype)
    dz.flat[::7] = -0.0
    dz.flat[3] = np.nan
    planes = rng.random((2, 2, b, i, j, c)) < 0.3
    mask = planes.transpose(2, 3, 0, 4, 1, 5)
    return dz, mask, np.empty((b, i, 2, j, 2, c), dtype)


@pytest.mark.usefixtures("built")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["float, bool", "bool, float", "float, float"])
def test_multiply_gives_numpys_bits_on_broadcast_strided_operands(dtype, order):
    """NaN, -0.0 and 0 x negative (-0.0) included; a bool counts as 0 or 1, as numpy casts it."""
    rng = np.random.default_rng(3)
    dz, mask, out = _pool_gradient_operands(rng, dtype)
    other = mask if order != "float, float" else rng.standard_normal(mask.shape).astype(dtype)[:, :, ::-1]
    a, b = (other, dz) if order == "bool, float" else (dz, other)
    want = np.multiply(a, b, out=np.empty_like(out))
    assert fused.multiply(a, b, out)
    np.testing.assert_array_equal(out.view(f"u{out.itemsize}"), want.view(f"u{out.itemsize}"))


@pytest.mark.usefixtures("built")
def test_multiply_leaves_to_numpy_what_it_does_not_speed_up():
    """Long rows (numpy's loop is as fast), a strided or broadcast last axis, mixed floats, integers."""
    rng = np.random.default_rng(4)
    long_rows = np.ones((4, fused.ROW + 1), np.float32)
    strided = np.ones((4, 16), np.float32)[:, ::2]
    f32, f64 = np.ones((4, 8), np.float32), np.ones((4, 8))
    for a, b, out in ((long_rows, long_rows, long_rows.copy()), (strided, strided, np.empty((4, 8), np.float32)),
                      (f32, f32[:, :1], f32.copy()), (f32, f64, f32.copy()),
                      (f32.astype(int), f32.astype(int), f32.astype(int))):
        assert not fused.multiply(a, b, out)
    scalar = np.ones((), np.float32)
    assert not fused.multiply(scalar, scalar, scalar.copy())  # nothing to loop over
    row = np.arange(8, dtype=np.float32)
    assert not fused.multiply(row[1:], row[1:], row[:7])  # out overlaps an operand, shifted
    dz, mask, out = _pool_gradient_operands(rng, np.float32)
    out[...] = 7.0
    assert not fused.multiply(dz, mask[:, :, :1, :, :1, :].repeat(3, axis=2), out)  # shapes that do not broadcast
    np.testing.assert_array_equal(out, 7.0)


def _windows(x, size, stride):
    """(18)'s windows of x [b, h, w, c] as notation lowers them: a view [b, i, j, c, p, q], no copy."""
    b, h, w, c = x.shape
    sb, sh, sw, sc = x.strides
    shape = (b, (h - size) // stride + 1, (w - size) // stride + 1, c, size, size)
    return as_strided(x, shape, (sb, stride * sh, stride * sw, sc, sh, sw), writeable=False)


def _bits(a):
    return a.view(f"u{a.itemsize}")


@pytest.mark.usefixtures("built")
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtype=st.sampled_from([np.float32, np.float64]), b=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       c=st.integers(1, 300), size=st.integers(1, 3), stride=st.integers(1, 3), positions=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_window_max_gives_numpys_values_and_first_maxima(monkeypatch, dtype, b, h, w, c, size, stride, positions,
                                                         seed):
    """(18)'s values and (19)'s positions, the C loop against numpy's passes, to the bit: ties (the
    first in the window's C order wins), NaN (it wins; no position), -0.0 against 0.0 (numpy's sign),
    rows longer than the C loop's chunk of 256 channels and overlapping windows included."""
    if size > min(h, w):
        return
    x = _awkward((b, h, w, c), dtype, seed)
    got_at = _same_maxima(monkeypatch, _windows(x, size, stride), 2, positions)
    if positions:
        assert got_at.sum(axis=(-2, -1)).max() <= 1  # one position per window at most


def _awkward(shape, dtype, seed):
    """Halves from -1 to 1, with ties, -0.0 (a fifth) and NaN (a twentieth)."""
    rng = np.random.default_rng(seed)
    x = (rng.integers(-2, 3, size=shape) * 0.5).astype(dtype)
    x[rng.random(x.shape) < 0.2] = -0.0
    x[rng.random(x.shape) < 0.05] = np.nan
    return x


def _same_maxima(monkeypatch, inner, k, positions):
    """window_max's values (and positions) with the C loops and with numpy's passes: asserted the same
    bits; the positions returned."""
    runs = []
    for flag in ("0", "1"):
        monkeypatch.setenv("NOTATION_FUSED", flag)
        runs.append(window_max(inner, k, positions=positions))
    (want, want_at), (got, got_at) = runs
    np.testing.assert_array_equal(_bits(got), _bits(want))
    if positions:
        np.testing.assert_array_equal(got_at, want_at)
    return got_at


@pytest.mark.usefixtures("built")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtype=st.sampled_from([np.float32, np.float64]), lead=st.lists(st.integers(1, 5), min_size=1, max_size=3),
       w=st.sampled_from([1, 2, 10, 16, 300, 5000]), positions=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_a_max_over_each_rows_contiguous_entries_gives_numpys_values_and_first_maxima(monkeypatch, dtype, lead, w,
                                                                                      positions, seed):
    """A softmax's max[m] s[b,h,n,m] (the window each row's own entries, a row at a time, where WINDOW_MAX
    would take one entry a row): the C loop against numpy's passes, to the bit, ties, NaN and -0.0 included,
    rows wider than its block of 4,096 too."""
    x = _awkward((*lead, w), dtype, seed)
    _same_maxima(monkeypatch, x, 1, positions)
    assert fused.row_max(x, np.empty(x.shape[:-1], dtype))  # it ran the C loop


@pytest.mark.usefixtures("built")
def test_window_max_leaves_to_numpy_what_it_cannot_take():
    """Rows that are not contiguous (channels first), integers, a result overlapping its input: False,
    and nothing written."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 6, 6, 4)).astype(np.float32)
    channels_first = _windows(np.ascontiguousarray(x.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1), 2, 2)
    values = np.full((2, 3, 3, 4), 7.0, np.float32)
    for inner, out in ((channels_first, values), (_windows(x.astype(np.int32), 2, 2), values.astype(np.int32)),
                       (_windows(values, 1, 1), values)):
        assert not fused.window_max(inner, 2, out)
    np.testing.assert_array_equal(values, 7.0)
    assert not fused.row_max(x.transpose(0, 1, 3, 2), np.empty((2, 6, 4), np.float32))  # a row's entries apart
    assert fused.window_max(_windows(x, 2, 2), 2, values)  # NHWC windows of floats: it runs
    np.testing.assert_array_equal(values, _windows(x, 2, 2).max(axis=(-2, -1)))


def test_the_network_computes_the_same_bits_with_the_fused_loops_or_without(monkeypatch):
    """A training step's loss and every gradient, and an inference, with the pools' (18) and (19) and
    Adam's update fused or not."""
    import engine
    net = engine.load(ROOT / "layers.yaml", dtype="float64")
    rng = np.random.default_rng(5)
    x = rng.random((4, 28, 28, 1))
    x[:, :8] = 0.0  # flat background: ties in the pools' windows
    y = np.arange(4)
    runs, outputs = [], []
    for flag in ("0", "1"):
        monkeypatch.setenv("NOTATION_FUSED", flag)
        loss, grads = net.loss_and_grads(x, y)
        runs.append((loss, grads))
        outputs.append(net.forward(x))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(outputs[0], outputs[1])
    for layer, ps in runs[0][1].items():
        for p, g in ps.items():
            np.testing.assert_array_equal(g, runs[1][1][layer][p])


@pytest.mark.usefixtures("built")
def test_a_multiply_memo_serves_the_same_arrays_and_is_remade_for_others():
    """The call kept for three arrays reads them anew each time (changed in place), and other arrays
    given with the same memo get a call of their own."""
    rng = np.random.default_rng(3)
    memo = [None]
    a, b, out = rng.random((3, 4, 8)), rng.random((3, 1, 8)), np.empty((3, 4, 8))
    assert fused.multiply(a, b, out, memo)
    a *= 2.0
    assert fused.multiply(a, b, out, memo)
    np.testing.assert_array_equal(out, a * b)
    c, other = rng.random((3, 4, 8)), np.empty((3, 4, 8))
    assert fused.multiply(c, b, other, memo)
    np.testing.assert_array_equal(other, c * b)
    np.testing.assert_array_equal(out, a * b)  # the first result stays as it was


@pytest.mark.usefixtures("built")
def test_batch_norms_sums_give_the_same_bits_with_the_fused_loops_or_without(monkeypatch):
    """resnet's training step in float32 (no dropout: the same step twice): batch norm's v, dg and dr in
    fused.c's COLSUM or in numpy's passes, every gradient to the bit."""
    import engine
    net = engine.load(ROOT / "layers.yaml", network="resnet", seed=0)
    rng = np.random.default_rng(7)
    x, y = rng.random((8, 28, 28, 1)).astype(np.float32), np.arange(8) % 10
    runs = []
    for flag in ("0", "1"):
        monkeypatch.setenv("NOTATION_FUSED", flag)
        runs.append(net.loss_and_grads(x, y))
    assert runs[0][0] == runs[1][0]
    for layer, ps in runs[0][1].items():
        for p, g in ps.items():
            np.testing.assert_array_equal(g, runs[1][1][layer][p])
