"""Networks as graphs with train and eval modes: a layer names its inputs, gradients are summed
where an output feeds several layers, running statistics and random masks behave as a training
step and an evaluation expect, and bad graphs are one line naming the layer and field."""
import copy

import numpy as np
import opt_einsum
import pytest
import yaml

import engine

from conftest import SPEC, spec_error

BASE = yaml.safe_load(SPEC.read_text())

# bn feeds three layers (conv_b, add, cat); add feeds one; a residual block and a concatenation
BRANCHY = {
    "cites": "test", "input": [5, 5, 2], "loss": "softmax_cross_entropy",
    "layers": [
        {"name": "conv_a", "kind": "conv2d", "filters": 3, "kernel": 3, "padding": "same"},
        {"name": "bn", "kind": "batchnorm", "activation": "relu"},
        {"name": "conv_b", "kind": "conv2d", "filters": 3, "kernel": 3, "padding": "same"},
        {"name": "add", "kind": "add", "inputs": ["conv_b", "bn"], "activation": "tanh"},
        {"name": "cat", "kind": "concat", "inputs": ["add", "bn"]},
        {"name": "gap", "kind": "global_avgpool"},
        {"name": "drop", "kind": "dropout", "rate": 0.5},
        {"name": "dense", "kind": "dense", "units": 4, "activation": "softmax", "init": "glorot"},
    ]}


def spec_with(**networks):
    data = copy.deepcopy(BASE)
    data["networks"].update(networks)
    return data


@pytest.fixture(scope="module")
def branchy():
    return engine.load(spec_with(branchy=BRANCHY), network="branchy", dtype="float64")


def batch(seed=0, n=6, shape=(5, 5, 2), classes=4):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n,) + shape), rng.integers(0, classes, n)


def test_gradients_through_a_graph_match_central_differences_with_the_masks_held(branchy):
    net = branchy
    net.set_params(net.init(1))
    x, y = batch()
    start = net.rng.bit_generator.state
    state = {layer: {n: v.copy() for n, v in ns.items()} for layer, ns in net.state.items()}

    def loss():  # the same dropout mask every time: rewind the generator
        net.rng.bit_generator.state = start
        net.set_state(state)
        return net.loss_and_grads(x, y)[0]

    net.rng.bit_generator.state = start
    _, grads = net.loss_and_grads(x, y)
    rng = np.random.default_rng(2)
    for layer, params in net.params.items():
        for p, w in params.items():
            v = rng.standard_normal(w.shape)
            h = 1e-6
            w0 = w.copy()
            params[p] = w0 + h * v
            plus = loss()
            params[p] = w0 - h * v
            minus = loss()
            params[p] = w0
            numeric = (plus - minus) / (2 * h)
            analytic = float(np.sum(grads[layer][p] * v))
            assert abs(numeric - analytic) <= 1e-6 * abs(numeric) + 1e-9, (layer, p, numeric, analytic)


def test_a_residual_hands_its_gradient_to_both_inputs_without_a_copy(branchy):
    """add's dx1 = dz and dx2 = dz are dz itself (the gradients above match central differences)."""
    x, y = batch()
    branchy.loss_and_grads(x, y)
    add = next(s for s in branchy.compiled(len(x)) if s.name == "add")
    for dx in ("dx1", "dx2"):
        assert np.shares_memory(add.env[dx], add.env["dz"]) and add.env[dx].shape == add.env["dz"].shape


def test_eval_mode_is_the_default_deterministic_and_uses_running_statistics(branchy):
    net = branchy
    net.set_params(net.init(3))
    net.set_state(net.init_state())
    x, _ = batch(4)
    first = net.forward(x)
    assert np.array_equal(first, net.forward(x)) and np.array_equal(first, net.forward(x, train=False))
    rm = net.state["bn"]["rm"].copy()
    trained = net.forward(x, train=True)  # batch statistics, a dropout mask; running statistics move
    assert not np.allclose(trained, first)
    assert not np.array_equal(net.state["bn"]["rm"], rm)
    assert not np.allclose(net.forward(x), first)  # eval reads the moved running statistics


def test_dropout_masks_come_from_the_network_generator(branchy):
    net = branchy
    x, _ = batch(5)
    state = {layer: {n: v.copy() for n, v in ns.items()} for layer, ns in net.state.items()}
    net.rng = np.random.default_rng(7)
    a = net.forward(x, train=True)
    b = net.forward(x, train=True)
    net.rng = np.random.default_rng(7)
    net.set_state(state)
    assert np.array_equal(net.forward(x, train=True), a)
    assert not np.array_equal(a, b)


def test_a_network_without_modes_compiles_once_for_training_and_evaluation():
    net = engine.load(SPEC, network="softmax-regression")
    assert net.compiled(8, "eval") is net.compiled(8, "train") and not net.modal


def test_nothing_is_planned_again_after_the_first_training_and_eval_steps(branchy, monkeypatch):
    net = branchy
    x, y = batch(6)
    net.loss_and_grads(x, y)
    net.forward(x)
    calls = []
    original = opt_einsum.contract_expression
    monkeypatch.setattr(opt_einsum, "contract_expression", lambda *a, **k: calls.append(1) or original(*a, **k))
    for _ in range(3):
        net.loss_and_grads(x, y)
        net.forward(x)
    assert calls == []


def test_the_residual_network_trains_from_the_spec():
    from conftest import train_steps
    net = engine.load(SPEC, network="resnet")
    rng = np.random.default_rng(0)
    x = rng.random((16, 28, 28, 1)).astype(np.float32)
    y = (x[:, :14].mean(axis=(1, 2, 3)) > x[:, 14:].mean(axis=(1, 2, 3))).astype(int)  # top brighter than bottom
    losses = train_steps(net, np.concatenate([x] * 8), np.concatenate([y] * 8), 8, 16, 0.003)
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


# -- bad graphs: one line naming the layer and field -------------------------------------------
def load_bad(tmp_path, layers, network="bad"):
    data = spec_with(**{network: {"cites": "test", "input": [6, 6, 1], "loss": "softmax_cross_entropy",
                                  "layers": layers}})
    return spec_error(tmp_path, data, network)


HEAD = [{"name": "conv", "kind": "conv2d", "filters": 2, "kernel": 3, "padding": "same"}]
TAIL = [{"name": "gap", "kind": "global_avgpool"},
        {"name": "out", "kind": "dense", "units": 3, "activation": "softmax"}]


def test_an_input_that_names_nothing(tmp_path):
    msg = load_bad(tmp_path, HEAD + [{"name": "sum", "kind": "add", "inputs": ["conv", "nope"]}] + TAIL)
    assert "layer 'sum', field 'inputs'" in msg and "'nope' names no layer" in msg


def test_a_cycle(tmp_path):
    msg = load_bad(tmp_path, HEAD + [
        {"name": "a", "kind": "add", "inputs": ["conv", "b"]},
        {"name": "b", "kind": "batchnorm", "inputs": ["a"]}] + TAIL)
    assert "field 'inputs'" in msg and "cycle" in msg and "(a reads b reads a)" in msg


def test_inputs_whose_shapes_do_not_agree(tmp_path):
    msg = load_bad(tmp_path, HEAD + [
        {"name": "wide", "kind": "conv2d", "filters": 3, "kernel": 3, "padding": "same"},
        {"name": "sum", "kind": "add", "inputs": ["conv", "wide"]}] + TAIL)
    assert "layer 'sum' (add), input 'x2'" in msg and "channels = 3" in msg and "channels = 2" in msg


def test_the_wrong_number_of_inputs(tmp_path):
    msg = load_bad(tmp_path, HEAD + [{"name": "sum", "kind": "add"}] + TAIL)
    assert "layer 'sum', field 'inputs'" in msg and "takes 2 inputs" in msg


def test_a_layer_whose_output_feeds_nothing(tmp_path):
    msg = load_bad(tmp_path, HEAD + [{"name": "side", "kind": "batchnorm"},
                                     {"name": "gap", "kind": "global_avgpool", "inputs": ["conv"]}] + TAIL[1:])
    assert "layer 'side'" in msg and "feeds no layer" in msg


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5, "half"])
def test_a_dropout_rate_outside_zero_to_one(tmp_path, rate):
    msg = load_bad(tmp_path, HEAD + TAIL[:1] + [{"name": "drop", "kind": "dropout", "rate": rate}] + TAIL[1:])
    assert "layer 'drop', field 'rate'" in msg and "outside [0, 1)" in msg


def test_a_normalisation_over_an_axis_the_input_lacks(tmp_path):
    msg = load_bad(tmp_path, HEAD + TAIL[:1] + [{"name": "bn", "kind": "batchnorm"}] + TAIL[1:])
    assert "layer 'bn' (batchnorm), input" in msg and "[b, height, width, channels]" in msg
    assert "layer 'gap' gives shape (" in msg and "2 axes, not 4" in msg


def test_a_dropout_rate_of_zero_is_the_identity():
    net = engine.load(spec_with(nodrop={
        "cites": "test", "input": [4], "loss": "softmax_cross_entropy",
        "layers": [{"name": "drop", "kind": "dropout", "rate": 0},
                   {"name": "out", "kind": "dense", "units": 3, "activation": "softmax"}]}), network="nodrop")
    x = np.random.default_rng(0).random((5, 4)).astype(np.float32)
    assert np.array_equal(net.forward(x, train=True), net.forward(x))


def test_the_zoo_network_uses_every_kind_and_trains_from_the_spec_alone():
    from conftest import train_steps
    spec = engine.read(SPEC)
    used = {layer.kind for layer in spec.networks["zoo"].layers}
    used |= {layer.activation for layer in spec.networks["zoo"].layers}
    assert set(spec.kinds) - {"conv2d", "dense", "maxpool", "flatten"} - TOKEN_KINDS <= used
    assert {"tanh", "sigmoid"} <= used
    net = engine.load(SPEC, network="zoo")
    rng = np.random.default_rng(0)
    x = rng.random((32, 28, 28, 1)).astype(np.float32)
    y = (x[:, :, :14].mean(axis=(1, 2, 3)) > x[:, :, 14:].mean(axis=(1, 2, 3))).astype(int)  # left brighter
    losses = train_steps(net, np.concatenate([x] * 10), np.concatenate([y] * 10), 10, 32, 0.01)
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


def test_the_plans_show_the_graph_the_state_the_masks_and_both_modes():
    from engine.compiler import plans
    doc = plans.collect(engine.load(SPEC, network="zoo", check=False), 4)
    blocks = {b["name"]: b for b in doc["blocks"]}
    assert blocks["sum"]["inputs"] == ["up", "depthwise"] and not blocks["sum"]["chained"]
    assert blocks["bn"]["chained"] and [t["name"] for t in blocks["bn"]["state"]] == ["rm", "rv"]
    assert blocks["drop"]["random"] == [{"name": "m", "shape": [4, 16], "bernoulli": 0.8}]
    passes = {(c["pass"], c["writes"]) for c in blocks["bn"]["contractions"]}
    assert {("update", "rm"), ("update", "rv"), ("eval", "z"), ("backward", "dx")} <= passes
    assert all(not c["in_training_step"] for c in blocks["bn"]["contractions"] if c["pass"] == "eval")
    text = plans.render_text(doc)
    assert "reads   up, depthwise (their gradients summed back into each)" in text
    assert "random  m 4x16: 1 with probability 0.8" in text and "state   rm 8, rv 8" in text


@pytest.mark.parametrize("dx2,ok", [("dx2[b,i,j,k] = dz[b,i,j,k]", True), ("dx2[b,i,j,k] = 2 * dz[b,i,j,k]", False)])
def test_declared_jacobians_of_a_kind_with_two_inputs_are_checked_at_load(tmp_path, dx2, ok):
    data = spec_with(res={"cites": "test", "input": [4, 4, 2], "loss": "softmax_cross_entropy", "layers": [
        {"name": "first", "kind": "conv2d", "filters": 2, "kernel": 3, "padding": "same"},
        {"name": "conv", "kind": "conv2d", "filters": 2, "kernel": 3, "padding": "same"},
        {"name": "sum", "kind": "add", "inputs": ["conv", "first"]},
        {"name": "flat", "kind": "flatten"},
        {"name": "out", "kind": "dense", "units": 3, "activation": "softmax"}]})
    data["kinds"]["add"]["backward"] = {"x1": "dx1[b,i,j,k] = dz[b,i,j,k]", "x2": dx2}
    if ok:
        engine.load(data, network="res")
        return
    with pytest.raises(engine.SpecError, match=r"layer 'sum'.*backward 'x2'.*disagrees with the derived one by"):
        engine.load(data, network="res")


TOKEN_KINDS = {"patch_embedding", "positional_embedding", "attention", "token_mixing", "mean_pool"}


@pytest.mark.parametrize("network", ["vit", "mixer"])
def test_the_token_networks_use_every_token_kind_and_train_from_the_spec_alone(network):
    from conftest import train_steps
    spec = engine.read(SPEC)
    used = {layer.kind for name in ("vit", "mixer") for layer in spec.networks[name].layers}
    assert TOKEN_KINDS <= used and "gelu" in {layer.activation for layer in spec.networks[network].layers}
    net = engine.load(SPEC, network=network)
    rng = np.random.default_rng(0)
    x = rng.random((32, 28, 28, 1)).astype(np.float32)
    y = (x[:, :, :14].mean(axis=(1, 2, 3)) > x[:, :, 14:].mean(axis=(1, 2, 3))).astype(int)  # left brighter
    losses = train_steps(net, np.concatenate([x] * 6), np.concatenate([y] * 6), 6, 32, 0.003)
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2])
