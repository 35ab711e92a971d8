"""Optimizers follow their textbook updates; SGD is the report's eq. (6)-(9)."""
import numpy as np
import pytest

from engine.training import optim
from engine.training.optim import make
from notation.runtime import foreach, fused, parallel

from conftest import needs_the_library

SHAPES = [(6,), (3, 5)]  # a vector, and a matrix that spans several blocks below


@pytest.fixture(params=[optim.BLOCK, 4], ids=["one block", "blocks of 4 with a tail"], autouse=True)
def block(request, monkeypatch):
    """Every update rule gives the same result however the arrays are cut into blocks."""
    monkeypatch.setattr(optim, "BLOCK", request.param)
    return request.param




@pytest.fixture(params=SHAPES, ids=["vector", "matrix"])
def shape(request):
    return request.param


def run(name, lr, shape=(6,), steps=4, seed=0):
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal(shape)
    params = {"l": {"w": w0.copy()}}
    opt = make(name, params, lr)
    grads = [rng.standard_normal(shape) for _ in range(steps)]
    for g in grads:
        opt.step(params, {"l": {"w": g}})
    return w0, grads, params["l"]["w"]


@pytest.mark.usefixtures("update")
def test_sgd_adds_delta_minus_eta_times_the_batch_mean_gradient(shape):
    w0, grads, w = run("sgd", 0.1, shape)
    np.testing.assert_allclose(w, w0 - 0.1 * sum(grads), rtol=1e-12)


@pytest.mark.usefixtures("update")
def test_momentum_accumulates_a_velocity(shape):
    w0, grads, w = run("momentum", 0.1, shape)
    v, ref = np.zeros(shape), w0.copy()
    for g in grads:
        v = 0.9 * v - 0.1 * g
        ref += v
    np.testing.assert_allclose(w, ref, rtol=1e-12)


@pytest.mark.usefixtures("update")
def test_adam_matches_kingma_and_ba(shape):
    w0, grads, w = run("adam", 0.01, shape)
    m, v, ref = np.zeros(shape), np.zeros(shape), w0.copy()
    for t, g in enumerate(grads, 1):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        ref -= 0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    np.testing.assert_allclose(w, ref, rtol=1e-6)


@pytest.mark.usefixtures("update")
@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_weight_decay_shrinks_weights_by_rate_times_decay_and_leaves_biases(name):
    rng = np.random.default_rng(0)
    params = {"l": {"w": rng.standard_normal((3, 5)), "b": rng.standard_normal(5)}}
    before = {k: v.copy() for k, v in params["l"].items()}
    opt = optim.decaying(make(name, params, 0.1), 0.5)
    opt.step(params, {"l": {k: np.zeros_like(v) for k, v in params["l"].items()}})  # no gradient: decay alone
    np.testing.assert_array_equal(params["l"]["w"], before["w"] * (1 - 0.1 * 0.5))
    np.testing.assert_array_equal(params["l"]["b"], before["b"])


@pytest.mark.usefixtures("update")
def test_adam_with_weight_decay_matches_loshchilov_and_hutter():
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 5))
    params = {"l": {"w": w0.copy()}}
    opt = optim.decaying(make("adam", params, 0.01), 0.1)
    m, v, ref = np.zeros_like(w0), np.zeros_like(w0), w0.copy()
    for t in range(1, 5):
        g = rng.standard_normal(w0.shape)
        opt.step(params, {"l": {"w": g}})
        ref *= 1 - 0.01 * 0.1
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        ref -= 0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    np.testing.assert_allclose(params["l"]["w"], ref, rtol=1e-6)


def test_an_optimizer_without_weight_decay_is_refused_in_one_line():
    class Plain:
        name = "plain"
    with pytest.raises(ValueError, match=r"^optimizer 'plain' has no weight decay; leave `weight_decay` at 0"):
        optim.decaying(Plain(), 0.1)


def test_unknown_optimizer_lists_the_valid_ones():
    valid = r"\['adam', 'momentum', 'sgd'\]"
    with pytest.raises(ValueError, match=rf"optimizer 'adagrad' not found, valid options are {valid}"):
        make("adagrad", {}, 0.1)


def test_an_update_lands_in_the_parameter_array_itself():
    w = np.ones((4, 3))[:, ::2]  # a strided view: updating a flattened copy would lose the step
    with pytest.raises(ValueError, match="C-contiguous"):
        make("sgd", {"l": {"w": w}}, 0.1).step({"l": {"w": w}}, {"l": {"w": np.ones_like(w)}})


@pytest.mark.usefixtures("update")
@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_the_same_bits_on_one_thread_or_two(monkeypatch, name):
    """The entries are shared between the cores; the result does not depend on how."""
    monkeypatch.setattr(foreach, "SPLIT", 1)  # the fused loop shares even these few entries
    results = []
    for workers in (1, 2):
        monkeypatch.setattr(parallel, "WORKERS", workers)
        results.append(run(name, 0.01, shape=(3, 5))[2])
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_one_pass_over_all_arrays_gives_the_bits_of_numpys_passes(monkeypatch, dtype, name):
    """fused.c does numpy's float operations in their order, weight decay first: the same bits, step
    after step, over gradients of every scale (so a resumed run may take either)."""
    monkeypatch.setenv("NOTATION_FUSED", "1")
    needs_the_library()
    rng = np.random.default_rng(1)
    w0 = {"w": rng.standard_normal((7, 5)).astype(dtype), "b": rng.standard_normal(5).astype(dtype)}
    params = {k: {"l": {p: w.copy() for p, w in w0.items()}} for k in ("numpy", "fused")}
    opts = {k: optim.decaying(make(name, p, 0.01), 0.1) for k, p in params.items()}
    for _ in range(5):
        g = {"l": {p: (rng.standard_normal(w.shape) * 10.0 ** rng.integers(-40, 3)).astype(dtype)
                   for p, w in w0.items()}}
        for k in ("numpy", "fused"):
            monkeypatch.setenv("NOTATION_FUSED", "0" if k == "numpy" else "1")
            opts[k].step(params[k], g)
    for p in w0:
        np.testing.assert_array_equal(params["numpy"]["l"][p], params["fused"]["l"][p])
        assert not np.array_equal(params["fused"]["l"][p], w0[p])
    for slot, a in opts["numpy"].state().items():
        np.testing.assert_array_equal(a, opts["fused"].state()[slot])


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_every_array_is_updated_in_one_call_where_the_library_is_built(monkeypatch, name):
    """Small arrays take one C call in all, on the calling thread: no call per array, no hand-off."""
    monkeypatch.setenv("NOTATION_FUSED", "1")
    needs_the_library()
    calls, real = [], fused.update
    monkeypatch.setattr(fused, "update", lambda *a: (lambda *args: calls.append(args) or real(*a)(*args)))
    params = {"l": {"w": np.ones((3, 4), np.float32), "b": np.ones(4, np.float32)}, "m": {"w": np.ones(2, np.float32)}}
    opt = make(name, params, 0.1)
    opt.step(params, {k: {p: np.ones_like(w) for p, w in ps.items()} for k, ps in params.items()})
    assert len(calls) == 1
    for ps in params.values():
        np.testing.assert_allclose(np.concatenate([w.ravel() for w in ps.values()]), 0.9, rtol=1e-6)


def test_weights_replaced_between_steps_are_the_ones_updated():
    """A network's set_params puts new arrays in place: the next step updates those, not the old ones."""
    params = {"l": {"w": np.ones((2, 3))}}
    opt = make("adam", params, 0.1)
    grads = {"l": {"w": np.ones((2, 3))}}
    opt.step(params, grads)
    old = params["l"]["w"]
    params["l"]["w"] = np.ones((2, 3))
    opt.step(params, grads)
    assert (params["l"]["w"] < 1).all()
    np.testing.assert_allclose(old, 0.9)


def test_without_the_library_the_update_runs_numpys_passes_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("NOTATION_FUSED", "0")
    assert fused.describe() == "numpy passes (NOTATION_FUSED=0)"
    monkeypatch.setenv("NOTATION_FUSED", "1")
    monkeypatch.setattr(fused, "LIBRARY", tmp_path / "_fused.so")  # not built here
    monkeypatch.setattr(fused, "_state", {"lib": None, "why": None})
    assert fused.describe() == "numpy passes: _fused.so is not built (scripts/setup.sh builds it with a C compiler)"
    w0, grads, w = run("adam", 0.01)  # the update still runs, on numpy's passes
    assert not np.array_equal(w, w0)


def test_a_gradient_of_another_dtype_takes_numpys_passes_to_the_same_result(monkeypatch):
    """float64 gradients for some float32 weights: the fused loop leaves those to numpy's passes and
    updates the rest, to the bits of numpy's passes for all."""
    results = []
    for flag in ("0", "1"):
        monkeypatch.setenv("NOTATION_FUSED", flag)
        params = {"l": {"w": np.linspace(-1, 1, 1001, dtype=np.float32), "b": np.linspace(0, 1, 7, dtype=np.float32)}}
        opt = make("adam", params, 0.01)
        for k in range(3):
            opt.step(params, {"l": {"w": np.cos(np.arange(1001) + k),
                                    "b": np.sin(np.arange(7, dtype=np.float32) + k)}})
        results.append(params["l"])
    for p in ("w", "b"):
        np.testing.assert_array_equal(results[0][p], results[1][p])
