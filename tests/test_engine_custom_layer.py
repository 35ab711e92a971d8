"""A layer kind defined in YAML alone (no Python) builds, differentiates itself and trains."""
import copy

import numpy as np
import yaml

import engine

from conftest import SPEC, train_steps

AVERAGE_POOL = yaml.safe_load("""
cites: "extension: (18) with the mean for the max"
input: [b, height, width, channels]
hyper: {size: 2, stride: 2}
symbols: {s1: stride, s2: stride, P: size - 1, Q: size - 1, area: size * size}
forward:
  - z[b,i,j,k] = x[b, s1*i+p, s2*j+q, k] / area
backward: derive
""")

POINTWISE_CONV = yaml.safe_load("""
cites: "(15) with a 1x1 kernel"
input: [b, height, width, channels]
hyper: {filters: required}
params:
  w: {shape: [channels, filters], init: he}
forward:
  - z[b,i,j,k] = x[b,i,j,r] * w[r,k]
backward: derive
""")


def spec_with_custom_layers():
    data = copy.deepcopy(yaml.safe_load(SPEC.read_text()))
    data["kinds"]["avgpool"] = AVERAGE_POOL
    data["kinds"]["conv1x1"] = POINTWISE_CONV
    data["networks"]["custom"] = {
        "cites": "test", "input": [28, 28, 1], "loss": "softmax_cross_entropy",
        "layers": [{"name": "mix", "kind": "conv1x1", "filters": 4, "activation": "relu"},
                   {"name": "pool", "kind": "avgpool", "size": 2, "stride": 2},
                   {"name": "flatten", "kind": "flatten"},
                   {"name": "out", "kind": "dense", "units": 10, "activation": "softmax", "init": "glorot"}]}
    data["network"] = "custom"
    return data


def test_derived_jacobians_of_a_yaml_only_layer_match_finite_differences():
    net = engine.load(spec_with_custom_layers(), dtype="float64")
    rng = np.random.default_rng(0)
    x, labels = rng.random((2, 28, 28, 1)), np.array([1, 2])
    _, grads = net.loss_and_grads(x, labels)
    w = net.params["mix"]["w"].copy()
    v = rng.standard_normal(w.shape)
    v /= np.linalg.norm(v)
    values = []
    for sign in (1, -1):
        net.set_params({**net.params, "mix": {"w": w + sign * 1e-6 * v}})
        values.append(net.loss_and_grads(x, labels)[0])
    numeric = (values[0] - values[1]) / 2e-6
    assert abs(numeric - np.sum(grads["mix"]["w"] * v)) < 1e-6 * abs(numeric)


def test_a_yaml_only_network_trains_on_real_digits(mnist_test):
    images, labels = mnist_test
    net = engine.load(spec_with_custom_layers(), seed=1)
    losses = train_steps(net, images, labels, steps=200, batch=32, lr=3e-3)
    assert np.mean(losses[-20:]) < 0.4 * np.mean(losses[:5])
    assert (net.forward(images[-1000:]).argmax(1) == labels[-1000:]).mean() > 0.8


def test_a_kind_may_be_written_with_numpy_einsum_strings():
    data = spec_with_custom_layers()
    data["kinds"]["dense_einsum"] = yaml.safe_load("""
cites: "(12)-(14), as numpy einsum strings"
input: [b, features]
hyper: {units: required}
params:
  w: {shape: [features, units], init: he}
forward:
  - {einsum: "bi,ij->bj", operands: [x, w], result: z, cites: "(12)"}
backward:
  x: {einsum: "cj,kj->ck", operands: [dz, w], result: dx, cites: "(13)"}
  w: {einsum: "bm,bk->km", operands: [dz, x], result: dw, cites: "(14)"}
""")
    data["networks"]["custom"]["layers"][-1]["kind"] = "dense_einsum"
    data["networks"]["custom"]["layers"][-1].pop("init")
    net = engine.load(data, dtype="float64")  # the load checks the declared Jacobians against derived ones
    spec = net.spec
    forward = spec.kinds["dense_einsum"].forward[0]
    assert str(forward) == "z[b,j] = x[b,i] * w[i,j]" and spec.cite(forward) == "(12)"
    loss, grads = net.loss_and_grads(np.random.default_rng(0).random((2, 28, 28, 1)), np.array([1, 2]))
    assert np.isfinite(loss) and grads["out"]["w"].shape == (14 * 14 * 4, 10)


SQUARED_WEIGHTS = yaml.safe_load("""
cites: "(12) with each weight squared, through a tensor of its own"
input: [b, features]
hyper: {units: required}
params:
  w: {shape: [features, units], init: he}
forward:
  - v[i,j] = 2 * w[i,j]
  - u[i,j] = square(v[i,j])
  - z[b,j] = x[b,i] * u[i,j]
backward: derive
""")


def test_a_result_of_the_weights_alone_is_kept_until_they_change_even_through_another(monkeypatch):
    """u reads v, which reads only w: a forward on the same weights keeps both; a changed w computes both again."""
    data = spec_with_custom_layers()
    data["kinds"]["squared"] = SQUARED_WEIGHTS
    data["networks"]["custom"]["layers"][3:3] = [{"name": "sq", "kind": "squared", "units": 6}]
    net = engine.load(data, dtype="float64")
    x = np.random.default_rng(0).random((3, 28, 28, 1))
    block = next(s.layer for s in net.compiled(3, "eval") if s.name == "sq")
    runs = {step.result: step.run for step in block.forward_runs}
    calls = []
    real = type(runs["u"]).evaluate
    monkeypatch.setattr(type(runs["u"]), "evaluate",
                        lambda self, *a, **k: (calls.append(next((r for r, run in runs.items() if run is self), None)),
                                               real(self, *a, **k))[1])
    first = net.forward(x)
    np.testing.assert_array_equal(net.forward(x), first)
    assert calls.count("u") == 1 and calls.count("v") == 1
    net.params["sq"]["w"][0, 0] += 0.5
    assert not np.array_equal(net.forward(x), first)
    assert calls.count("u") == 2 and calls.count("v") == 2
