"""scripts/twins.py: the PyTorch twin of every shipped network is the engine's network in torch
modules (PyTorch is optional: these tests are skipped without it)."""
import importlib.util

import numpy as np
import pytest

from conftest import ROOT, SPEC, run_script

torch = pytest.importorskip("torch")

spec = importlib.util.spec_from_file_location("twins", ROOT / "scripts" / "twins.py")
twins = importlib.util.module_from_spec(spec)
spec.loader.exec_module(twins)

NETWORKS = ["seven-layer", "softmax-regression", "seven-layer-bn", "resnet", "zoo", "vit", "mixer"]


def test_these_are_all_the_shipped_networks():
    import engine
    assert list(engine.read(SPEC).networks) == NETWORKS


@pytest.mark.parametrize("name", NETWORKS)
def test_the_twin_has_the_engines_parameter_count_and_takes_a_step(name):
    import engine
    net = engine.load(SPEC, network=name, check=False)
    rng = np.random.default_rng(0)
    x, y = rng.random((4, *net.input_shape), dtype=np.float32), rng.integers(0, net.classes, 4)
    side = twins.Torch(net, 4, x, y, threads=1)  # built, checked layer by layer, and one step taken
    assert twins.parameter_count(side.model) == sum(v.size for ps in net.params.values() for v in ps.values())
    before = [p.detach().clone() for p in side.model.parameters()]
    side.train_step()
    assert all(torch.isfinite(p).all() for p in side.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, side.model.parameters()))


def test_the_twin_flattens_in_the_engines_order():
    import yaml

    import engine
    data = yaml.safe_load(SPEC.read_text())
    data["networks"]["flat"] = {"cites": "a test's", "input": [4, 5, 3], "loss": "softmax_cross_entropy",
                                "layers": [{"name": "flatten", "kind": "flatten"},
                                           {"name": "dense", "kind": "dense", "units": 10, "activation": "softmax"}]}
    net = engine.load(data, network="flat", check=False)
    rng = np.random.default_rng(1)
    x = rng.random((2, 4, 5, 3), dtype=np.float32)
    model = twins.build(net, 2)
    with torch.no_grad():
        model.layers["dense"].weight.copy_(torch.from_numpy(net.params["dense"]["w"].T))
        model.layers["dense"].bias.copy_(torch.from_numpy(net.params["dense"]["b"]))
        got = torch.softmax(model(twins.to_torch(torch, x, torch.float32)), 1).numpy()
    np.testing.assert_allclose(got, net.forward(x), rtol=1e-4, atol=1e-6)


def width_concat():
    """layers.yaml with its concat redefined to put two images side by side along the width, in a network."""
    import yaml
    data = yaml.safe_load(SPEC.read_text())
    data["kinds"]["concat"] = {  # side by side along the width, not the channels
        "cites": "a test's",
        "input": {"x1": ["b", "height", "w1", "channels"], "x2": ["b", "height", "w2", "channels"]},
        "symbols": {"n1": "w1"},
        "shapes": {"p1": ["b", "height", "w1 + w2", "channels"], "p2": ["b", "height", "w1 + w2", "channels"]},
        "forward": ["p1[b,i,j+0,k] = x1[b,i,j,k]", "p2[b,i,j+n1,k] = x2[b,i,j,k]",
                    "z[b,i,j,k] = p1[b,i,j,k] + p2[b,i,j,k]"],
        "backward": "derive"}
    data["networks"] = {"wide": {"cites": "a test's", "input": [6, 6, 1], "loss": "softmax_cross_entropy", "layers": [
        {"name": "a", "kind": "conv2d", "filters": 2, "kernel": 3, "padding": "same", "inputs": ["input"]},
        {"name": "b", "kind": "conv2d", "filters": 2, "kernel": 3, "padding": "same", "inputs": ["input"]},
        {"name": "cat", "kind": "concat", "inputs": ["a", "b"]},
        {"name": "flatten", "kind": "flatten"},
        {"name": "out", "kind": "dense", "units": 10, "activation": "softmax"}]}}
    data["network"] = "wide"
    return data


def test_a_kind_of_the_users_own_under_a_shipped_name_is_found_out_by_its_shapes():
    import engine
    net = engine.load(width_concat(), check=False)
    with pytest.raises(twins.ShapeMismatch, match=r"layer 'cat' \(concat\): its twin gives \(2, 4, 6, 6\), the "
                                                  r"engine \(2, 2, 6, 12\)") as info:
        twins.build(net, 2)
    assert info.value.kind == "concat"


def test_bench_times_a_network_whose_twin_does_not_match_on_the_engine_alone(tmp_path):
    import json

    import yaml
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(width_concat(), sort_keys=False))
    out = run_script("bench.py", "--spec", path, "--batch", "2", "--rounds", "1", "--repeats", "1", "--json")
    section = json.loads(out.stdout)["networks"]["wide"]
    assert section["no_twin"] == ["kind 'concat'"] and "pytorch" not in section["batches"][0]
    assert "network wide: PyTorch side skipped: its twin does not match: layer 'cat' (concat)" in out.stderr


# the networks without dropout: the twin's masks could not be the engine's
SAME_LOSS = ["seven-layer", "softmax-regression", "resnet", "vit", "mixer"]


@pytest.mark.parametrize("name", SAME_LOSS)
def test_the_twin_given_the_engines_parameters_has_its_loss_and_gradients_in_float64(name):
    import engine
    same_loss_and_gradients(engine.load(SPEC, network=name, dtype="float64", check=False))


def test_the_twin_of_a_smoothed_loss_is_torchs_label_smoothing_to_the_same_loss_and_gradients():
    import yaml

    import engine
    data = yaml.safe_load(SPEC.read_text())
    data["networks"]["softmax-regression"]["loss"] = {"kind": "smoothed_softmax_cross_entropy", "smoothing": 0.2}
    same_loss_and_gradients(engine.load(data, network="softmax-regression", dtype="float64", check=False))


def same_loss_and_gradients(net):
    """The twin, given the engine's parameters, has the engine's loss and gradients (float64)."""
    rng = np.random.default_rng(0)
    x, y = rng.random((4, *net.input_shape)), rng.integers(0, net.classes, 4)
    model = twins.build(net, 4)
    twins.load_params(model, net)
    loss, grads = net.loss_and_grads(x, y)
    twin_loss = model.loss(model(twins.to_torch(torch, x, torch.float64)), torch.from_numpy(y))
    twin_loss.backward()
    assert twin_loss.item() == pytest.approx(loss, rel=1e-12)
    twin_grads = twins.grads(model, net)
    grads = {layer: ps for layer, ps in grads.items() if ps}
    assert twin_grads.keys() == grads.keys()
    for layer, ps in grads.items():
        for p, g in ps.items():
            np.testing.assert_allclose(twin_grads[layer][p], g, rtol=1e-9, atol=1e-12, err_msg=f"{layer}.{p}")
