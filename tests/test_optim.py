"""Optimizers follow their textbook updates; SGD is the report's eq. (6)-(9)."""
import numpy as np
import pytest

from engine.training import optim
from engine.training.optim import make

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


def test_sgd_adds_delta_minus_eta_times_the_batch_mean_gradient(shape):
    w0, grads, w = run("sgd", 0.1, shape)
    np.testing.assert_allclose(w, w0 - 0.1 * sum(grads), rtol=1e-12)


def test_momentum_accumulates_a_velocity(shape):
    w0, grads, w = run("momentum", 0.1, shape)
    v, ref = np.zeros(shape), w0.copy()
    for g in grads:
        v = 0.9 * v - 0.1 * g
        ref += v
    np.testing.assert_allclose(w, ref, rtol=1e-12)


def test_adam_matches_kingma_and_ba(shape):
    w0, grads, w = run("adam", 0.01, shape)
    m, v, ref = np.zeros(shape), np.zeros(shape), w0.copy()
    for t, g in enumerate(grads, 1):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        ref -= 0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    np.testing.assert_allclose(w, ref, rtol=1e-6)


def test_unknown_optimizer_lists_the_valid_ones():
    valid = r"\['adam', 'momentum', 'sgd'\]"
    with pytest.raises(ValueError, match=rf"optimizer 'adagrad' not found, valid options are {valid}"):
        make("adagrad", {}, 0.1)


def test_an_update_lands_in_the_parameter_array_itself():
    w = np.ones((4, 3))[:, ::2]  # a strided view: updating a flattened copy would lose the step
    with pytest.raises(ValueError, match="C-contiguous"):
        make("sgd", {"l": {"w": w}}, 0.1).step({"l": {"w": w}}, {"l": {"w": np.ones_like(w)}})


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_the_same_bits_on_one_thread_or_two(monkeypatch, name):
    """Adam's blocks are shared between the cores; the result does not depend on how."""
    from notation import parallel
    results = []
    for workers in (1, 2):
        monkeypatch.setattr(parallel, "WORKERS", workers)
        results.append(run(name, 0.01, shape=(3, 5))[2])
    np.testing.assert_array_equal(results[0], results[1])
