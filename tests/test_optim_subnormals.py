"""The optimizers keep no subnormal number in their state: a moment (Adam's m and v, momentum's velocity)
under its dtype's smallest normal number is stored as +0, by numpy's passes and the fused loop alike."""
import numpy as np
import pytest

from engine.training import checkpoint as ckpt_io
from engine.training.optim import make

from conftest import needs_the_library

DTYPES = [np.float32, np.float64]


def subnormals(a) -> int:
    a = np.asarray(a)
    if a.dtype.kind != "f":
        return 0  # the step count
    return int(np.count_nonzero((np.abs(a) < np.finfo(a.dtype).tiny) & (a != 0)))




def steps(opt, w, gradients):
    """Each gradient in turn; the number of subnormal entries in the optimizer's state after each."""
    found = []
    for g in gradients:
        opt.step({"l": {"w": w}}, {"l": {"w": g}})
        found.append(sum(subnormals(a) for a in opt.state().values()))
    return found


@pytest.mark.usefixtures("update")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["adam", "momentum"])
def test_a_dead_units_moments_reach_zero_without_turning_subnormal(name, dtype):
    """A unit whose gradient stays 0 (a dead ReLU's) has its moments decay by beta1 (mu) a step: without
    the flush, 0.9 times a few of the smallest subnormals rounds back to them and they stay for good."""
    w = np.linspace(-1, 1, 50, dtype=dtype)
    opt = make(name, {"l": {"w": w}}, 1e-3)
    found = steps(opt, w, [np.linspace(0.1, 1, 50, dtype=dtype)] + [np.zeros(50, dtype)] * 8000)
    assert sum(found) == 0
    first = opt.m if name == "adam" else opt.v
    assert not np.any(first["l.w"])  # decayed all the way to +0


@pytest.mark.usefixtures("update")
@pytest.mark.parametrize("dtype", DTYPES)
def test_gradients_whose_squares_or_selves_are_subnormal_leave_adams_moments_normal_or_zero(dtype):
    tiny = np.finfo(dtype).tiny
    g = np.array([np.sqrt(tiny) / 8, tiny / 4, -tiny / 4, tiny, 1e-30, 1.0], dtype)  # g*g, or g itself, subnormal
    w = np.ones(g.size, dtype)
    opt = make("adam", {"l": {"w": w}}, 1e-3)
    assert steps(opt, w, [g] * 20) == [0] * 20
    assert opt.v["l.w"][0] == 0 and opt.m["l.w"][1] == 0  # the subnormal square, the subnormal decayed gradient
    assert opt.m["l.w"][4] != 0 and opt.v["l.w"][5] != 0  # normal moments are kept


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_fused_loop_flushes_to_the_bits_of_numpys_passes(monkeypatch, dtype):
    """Gradients from subnormal to large, exact zeros for long runs, a NaN: the weights and both moments
    come out the same to the bit, so a resumed run may take either path."""
    monkeypatch.setenv("NOTATION_FUSED", "1")
    needs_the_library()
    rng = np.random.default_rng(2)
    tiny = np.finfo(dtype).tiny
    w0 = rng.standard_normal(4000).astype(dtype)
    params = {"numpy": {"l": {"w": w0.copy()}}, "fused": {"l": {"w": w0.copy()}}}
    opts = {k: make("adam", p, 0.01) for k, p in params.items()}
    scales = np.array([0, tiny / 2, np.sqrt(tiny) / 3, np.sqrt(tiny) * 3, 1e-30, 1e-3, 1.0], dtype)
    for t in range(900):
        g = (rng.standard_normal(4000) * scales[rng.integers(0, scales.size, 4000)]).astype(dtype)
        g[:2000] = 0 if t > 5 else g[:2000]  # half the units die after a few steps
        g[-1] = np.nan
        for k in ("numpy", "fused"):
            monkeypatch.setenv("NOTATION_FUSED", "0" if k == "numpy" else "1")
            opts[k].step(params[k], {"l": {"w": g}})
    np.testing.assert_array_equal(params["numpy"]["l"]["w"], params["fused"]["l"]["w"])
    for slot in ("m", "v"):
        np.testing.assert_array_equal(getattr(opts["numpy"], slot)["l.w"], getattr(opts["fused"], slot)["l.w"])
        assert subnormals(getattr(opts["fused"], slot)["l.w"]) == 0
    assert np.isnan(opts["fused"].m["l.w"][-1])  # a NaN is kept: a diverged run is still seen


@pytest.mark.usefixtures("update")
def test_an_update_leaves_the_callers_floating_point_mode_as_it_was():
    """No flush-to-zero or denormals-are-zero is left set on the thread: numpy still makes subnormals."""
    w = np.ones(64, np.float32)
    make("adam", {"l": {"w": w}}, 1e-3).step({"l": {"w": w}}, {"l": {"w": np.full(64, 1e-20, np.float32)}})
    half = np.float32(np.finfo(np.float32).tiny) / np.float32(2)
    assert half != 0 and subnormals(half) == 1  # not flushed to zero
    assert half * np.float32(1) == half  # a subnormal operand is not read as zero


@pytest.mark.usefixtures("update")
def test_adams_state_through_a_checkpoint_holds_no_subnormal(tmp_path):
    w = np.linspace(-1, 1, 100, dtype=np.float32)
    opt = make("adam", {"l": {"w": w}}, 1e-3)
    steps(opt, w, [np.ones(100, np.float32)] + [np.zeros(100, np.float32)] * 1000)
    ckpt_io.save(tmp_path / "run.npz", ckpt_io.Checkpoint({"l": {"w": w}}, opt.state(), {}, {}))
    read = ckpt_io.load(tmp_path / "run.npz").optim
    assert read.keys() == opt.state().keys()
    assert all(subnormals(a) == 0 for a in read.values())
    resumed = make("adam", {"l": {"w": w}}, 1e-3)
    resumed.load_state(read)
    assert steps(resumed, w, [np.zeros(100, np.float32)] * 10) == [0] * 10
