"""Optimizers follow their textbook updates; SGD is the report's eq. (6)-(9)."""
import numpy as np
import pytest

from engine.training import optim
from engine.training.optim import make
from notation.runtime import fused, parallel

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
    """Adam's blocks are shared between the cores; the result does not depend on how."""
    from notation.runtime import parallel
    results = []
    for workers in (1, 2):
        monkeypatch.setattr(parallel, "WORKERS", workers)
        results.append(run(name, 0.01, shape=(3, 5))[2])
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adams_one_pass_gives_the_bits_of_numpys_passes(monkeypatch, dtype):
    """fused.c does numpy's float operations in their order: the same bits, step after step, over
    gradients of every scale (so a resumed run may take either)."""
    monkeypatch.setenv("NOTATION_FUSED", "1")
    needs_the_library()
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal((7, 5)).astype(dtype)
    params = {"numpy": {"l": {"w": w0.copy()}}, "fused": {"l": {"w": w0.copy()}}}
    opts = {k: make("adam", p, 0.01) for k, p in params.items()}
    for _ in range(5):
        g = {"l": {"w": (rng.standard_normal((7, 5)) * 10.0 ** rng.integers(-6, 3)).astype(dtype)}}
        for k in ("numpy", "fused"):
            monkeypatch.setenv("NOTATION_FUSED", "0" if k == "numpy" else "1")
            opts[k].step(params[k], g)
    np.testing.assert_array_equal(params["numpy"]["l"]["w"], params["fused"]["l"]["w"])
    for slot in ("m", "v"):
        np.testing.assert_array_equal(getattr(opts["numpy"], slot)["l.w"], getattr(opts["fused"], slot)["l.w"])
    assert not np.array_equal(params["fused"]["l"]["w"], w0)


def test_adam_updates_through_the_fused_loop_where_it_is_built(monkeypatch):
    monkeypatch.setenv("NOTATION_FUSED", "1")
    needs_the_library()
    calls, real = [], fused.adam
    monkeypatch.setattr(fused, "adam", lambda *args: calls.append(args) or real(*args))
    w = np.ones(10, np.float32)
    make("adam", {"l": {"w": w}}, 0.1).step({"l": {"w": w}}, {"l": {"w": np.ones_like(w)}})
    assert len(calls) == parallel.WORKERS  # once per worker: no cache-sized blocks
    assert all(np.shares_memory(c[1], w) for c in calls)  # on the weights themselves, not a copy
    np.testing.assert_allclose(w, 0.9, rtol=1e-6)  # the first step moves each weight by lr


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
    """float64 gradients for float32 weights: the fused loop declines, numpy's passes update."""
    results = []
    for flag in ("0", "1"):
        monkeypatch.setenv("NOTATION_FUSED", flag)
        w = np.linspace(-1, 1, 1001, dtype=np.float32)
        opt = make("adam", {"l": {"w": w}}, 0.01)
        for k in range(3):
            opt.step({"l": {"w": w}}, {"l": {"w": np.cos(np.arange(w.size) + k)}})
        results.append(w)
    np.testing.assert_array_equal(results[0], results[1])
