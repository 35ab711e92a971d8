"""The seven-layer network of eq. (27)-(28): shapes, gradients, planning once, learning."""
import re

import numpy as np
import opt_einsum
import pytest

import engine
import notation.equation

from conftest import SPEC, train_steps


@pytest.fixture(scope="module")
def net64():
    return engine.load(SPEC, dtype="float64")


def test_the_default_network_is_the_report_s_seven_layers_with_tensorflow_sizes(net64):
    shapes = {layer: {p: v.shape for p, v in ps.items()} for layer, ps in net64.params.items()}
    assert shapes == {
        "conv1": {"w": (5, 5, 1, 32), "b": (32,)}, "pool1": {},
        "conv2": {"w": (5, 5, 32, 64), "b": (64,)}, "pool2": {}, "flatten": {},
        "dense1": {"w": (3136, 1024), "b": (1024,)}, "dense2": {"w": (1024, 10), "b": (10,)}}


def test_forward_gives_a_probability_distribution_per_example(net64):
    x = np.random.default_rng(0).random((3, 28, 28, 1))
    probs = net64.forward(x)
    assert probs.shape == (3, 10)
    assert np.allclose(probs.sum(axis=1), 1.0) and (probs > 0).all()


def test_float32_is_the_default():
    net = engine.load(SPEC, check=False)
    assert all(v.dtype == np.float32 for ps in net.params.values() for v in ps.values())
    assert net.forward(np.zeros((1, 28, 28, 1))).dtype == np.float32


def test_whole_network_gradient_matches_finite_differences(net64):
    rng = np.random.default_rng(3)
    x, labels = rng.random((2, 28, 28, 1)), np.array([3, 7])
    _, grads = net64.loss_and_grads(x, labels)
    base = {l: {p: v.copy() for p, v in ps.items()} for l, ps in net64.params.items()}
    h = 1e-6
    for layer, ps in base.items():
        for p, value in ps.items():
            v = rng.standard_normal(value.shape)
            v /= np.linalg.norm(v)  # a short step in total, so no ReLU or max switches inside it
            shifted = []
            for sign in (1, -1):
                trial = {l: dict(q) for l, q in base.items()}
                trial[layer][p] = value + sign * h * v
                net64.set_params(trial)
                shifted.append(net64.loss_and_grads(x, labels)[0])
            net64.set_params(base)
            numeric = (shifted[0] - shifted[1]) / (2 * h)
            analytic = float(np.sum(grads[layer][p] * v))
            assert abs(numeric - analytic) <= 1e-6 * max(abs(analytic), 1e-4), (layer, p, numeric, analytic)


def test_nothing_is_planned_or_parsed_again_after_the_first_step(monkeypatch):
    net = engine.load(SPEC, check=False)
    rng = np.random.default_rng(0)
    x, labels = rng.random((4, 28, 28, 1)), rng.integers(0, 10, 4)
    net.loss_and_grads(x, labels)
    calls = []
    for module, name in [(opt_einsum, "contract_path"), (opt_einsum, "contract_expression"),
                         (notation.equation, "parse")]:
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _o=original, _n=name, **k: calls.append(_n) or _o(*a, **k))
    for _ in range(3):
        net.loss_and_grads(x, labels)
        net.forward(x)
    assert calls == []
    net.loss_and_grads(x[:2], labels[:2])  # a new batch size is planned once, on first use
    assert "contract_path" in calls


def test_set_params_refuses_a_wrong_shape(net64):
    params = {l: dict(ps) for l, ps in net64.params.items()}
    params["dense2"]["w"] = np.zeros((10, 1024))
    with pytest.raises(ValueError, match=r"dense2.w has shape \(10, 1024\), expected \(1024, 10\)"):
        net64.set_params(params)


@pytest.mark.parametrize("replacement, held", [(np.zeros((10, 1024)), "shape (10, 1024)"), (None, "no array"),
                                               ([[0.0] * 10] * 1024, "list")])
def test_a_parameter_replaced_by_hand_with_another_shape_is_one_line_before_any_layer_runs(replacement, held):
    """The layers run their equations on net.params unchecked: the step itself refuses what does not fit."""
    net = engine.load(SPEC, dtype="float64", check=False)
    net.params["dense2"]["w"] = replacement
    x = np.random.default_rng(0).random((2, 28, 28, 1))
    said = re.escape(f"net.params['dense2']['w'] holds {held}, the network needs shape (1024, 10); load arrays "
                     "with net.set_params(...)")
    for run in (lambda: net.forward(x), lambda: net.loss_and_grads(x, [0, 1])):
        with pytest.raises(ValueError, match=f"^{said}$"):
            run()


def test_loss_falls_training_on_real_digits(mnist_test):
    images, labels = mnist_test
    net = engine.load(SPEC, seed=0)
    losses = train_steps(net, images, labels, steps=150, batch=16, lr=1e-3)
    assert np.mean(losses[-30:]) < 0.5 * np.mean(losses[:10])
    probs = net.forward(images[-500:])
    assert (probs.argmax(1) == labels[-500:]).mean() > 0.7


def test_every_heavy_contraction_lands_on_blas():
    from engine.compiler.plans import collect
    doc = collect(engine.load(SPEC, check=False), batch=64)
    steps = [s for b in doc["blocks"] for c in b["contractions"] for p in c["products"] for s in p["steps"]]
    heavy = [(s["einsum"], s["kind"], s["runs"]) for s in steps if s["flops"] > 5e7]
    # conv1 (im2col, channels first): (15), (17); conv2 (fourier): the kernel's spectrum and (17) back to the
    # taps, the per-frequency products of (15)-(17), the inverse transforms of z and dz; dense1: (12)-(14)
    assert len(heavy) == 14
    assert all(runs.startswith("np.matmul") for _, _, runs in heavy), heavy
    assert ("pqrbij,pqrk->bijk", "GEMM", "np.matmul") in heavy  # conv1's (15) on its windows, channels first
    assert sum("(u,v)" in runs for _, _, runs in heavy) == 3  # (15)-(17) per frequency, batched over the bins
    # stacked, in place: z's inverse transform and dz's transform (two steps each), the two per-frequency
    # products that read wb, the kernel's spectrum and (17) back to the taps
    assert sum("blocks" in runs and "no copy" in runs for _, _, runs in heavy) == 8


def test_a_network_shows_its_name_size_and_input_in_a_repl():
    net = engine.load(SPEC, network="softmax-regression", check=False)
    assert repr(net) == (f"<Network 'softmax-regression' of {SPEC}: 2 layers, 7,850 parameters, float32, "
                         "input (28, 28, 1)>")


@pytest.mark.parametrize("network", ["seven-layer-bn", "resnet"])
def test_a_training_step_allocates_no_large_array_after_the_first(network):
    """Every buffer, a nested function's result and a folded product's included, is made once; what a
    step still allocates is small next to one activation (1.6 MB here)."""
    import tracemalloc
    net = engine.load(SPEC, network=network)
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 16)
    for _ in range(2):
        net.loss_and_grads(x, y, copy=False)
    tracemalloc.start()
    try:
        net.loss_and_grads(x, y, copy=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 400_000


@pytest.mark.parametrize("as_one_hot", [False, True])
def test_each_step_s_labels_are_its_own_though_their_buffer_is_kept(as_one_hot):
    """The one-hot targets live in one buffer per batch size (the loss's runs then see the same array every
    step): a step with other labels gives what a fresh network gives for them, as class numbers or one-hot."""
    rng = np.random.default_rng(1)
    x = rng.random((8, 28, 28, 1), dtype=np.float32)
    first, second = rng.integers(0, 10, 8), (rng.integers(0, 10, 8) + 1) % 10

    def given(labels):
        return np.eye(10)[labels] if as_one_hot else labels

    net = engine.load(SPEC, network="softmax-regression", seed=0)
    net.loss_and_grads(x, given(first))
    loss, grads = net.loss_and_grads(x, given(second))
    fresh_loss, fresh_grads = engine.load(SPEC, network="softmax-regression", seed=0).loss_and_grads(x, given(second))
    assert loss == fresh_loss
    np.testing.assert_array_equal(grads["dense"]["w"], fresh_grads["dense"]["w"])
