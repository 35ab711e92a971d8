"""A layer's Jacobian steps in lanes (engine/compiler/layer.py): those both gradients need, those of the
weights alone and those of the inputs alone; the weights' run on a helper thread while the caller goes
on with the inputs' and the layers below, to the same bits."""
import copy

import numpy as np
import pytest
import yaml

import engine
from notation.runtime import parallel

from conftest import SPEC

BASE = yaml.safe_load(SPEC.read_text())
SMALL = {
    "cites": "test", "input": [8, 8, 2], "loss": "softmax_cross_entropy",
    "layers": [
        {"name": "conv", "kind": "conv2d", "filters": 4, "kernel": 3, "padding": "same", "algorithm": "im2col"},
        {"name": "bn", "kind": "batchnorm", "activation": "relu"},
        {"name": "freq", "kind": "conv2d", "filters": 4, "kernel": 3, "padding": "same", "algorithm": "fourier"},
        {"name": "flat", "kind": "flatten"},
        {"name": "drop", "kind": "dropout", "rate": 0.5},
        {"name": "dense", "kind": "dense", "units": 10, "activation": "softmax", "init": "glorot"},
    ]}


def load(**kw):
    data = copy.deepcopy(BASE)
    data["networks"]["small"] = SMALL
    return engine.load(data, network="small", check=False, **kw)


@pytest.fixture(scope="module")
def lanes():
    net = load()
    return {s.name: tuple([step.result for step in lane] for lane in s.layer.lanes()) for s in net.compiled(4)[:-1]}


@pytest.mark.parametrize("layer, shared, weights, inputs", [
    ("dense", [], ["dw", "db"], ["dx"]),
    ("bn", ["dbeta", "dg"], [], ["s", "dx"]),  # dx reads the sums that are the weights' gradients
    ("freq", ["dzj", "dzs"], ["dwb", "dwg", "dw", "db"], ["dxs", "dxh", "dx"]),  # dz's spectrum serves both
    ("conv", [], ["dw", "db"], []),  # the first layer: no gradient of its input is wanted
    ("drop", [], [], ["dx"]),
])
def test_each_jacobian_step_goes_to_the_lane_of_the_gradients_it_serves(lanes, layer, shared, weights, inputs):
    assert lanes[layer] == (shared, weights, inputs)


def test_no_lane_reads_a_result_of_the_other():
    for stage in load().compiled(4)[:-1]:
        shared, weights, inputs = stage.layer.lanes()
        for lane, other in ((weights, inputs), (inputs, weights)):
            written = {step.result for step in other}
            assert not any(written & set(step.reads) for step in lane), stage.name
        assert not any({step.result for step in weights + inputs} & set(step.reads) for step in shared)


def test_the_weights_lanes_on_a_helper_give_the_bits_of_one_thread(monkeypatch):
    x = np.random.default_rng(1).random((4, 8, 8, 2), dtype=np.float32)
    labels = np.arange(4)
    grads, started = [], []
    monkeypatch.setattr(parallel, "_ENABLED", parallel._AVAILABLE)
    monkeypatch.setattr(parallel, "start", lambda fn, *args, real=parallel.start: started.append(fn) or real(fn, *args))
    for workers, aside in ((1, 1.0), (2, 0.0)):  # one after the other; then every lane handed to a helper
        monkeypatch.setattr(parallel, "WORKERS", workers)
        monkeypatch.setattr(parallel, "ASIDE_SECONDS", aside)
        net = load(seed=0)
        net.threads.chosen[("training", 4)] = True
        grads.append(net.loss_and_grads(x, labels)[1])
    assert len(started) >= 3  # dense, freq, bn: their weights' lanes went to a helper
    for layer, ps in grads[0].items():
        for p, g in ps.items():
            assert np.array_equal(grads[1][layer][p], g), (layer, p)
