"""A ReLU feeding a max pool runs after it (engine/compiler/reorder.py): the same output and the same
gradients as the definition's order, exact zeros included, and checked when the network loads."""
import numpy as np
import pytest

import engine
from engine import SpecError
from engine.compiler import reorder

from conftest import SPEC


def test_the_seven_layer_network_runs_each_relu_after_its_pool():
    net = engine.load(SPEC, dtype="float64")
    assert net.reordered == {"conv1": "pool1", "conv2": "pool2"}
    assert engine.load(SPEC, dtype="float64", reorder=False).reordered == {}
    plan = net.plans(batch=2)
    assert "pool1.relu" in plan and "conv1.relu" not in plan


@pytest.mark.parametrize("zero_bias", [True, False])
def test_loss_and_gradients_are_the_definitions_to_the_bit(zero_bias):
    rng = np.random.default_rng(3)
    x = rng.random((6, 28, 28, 1))
    x[x < 0.7] = 0  # flat background: exact zeros after a convolution without bias
    y = rng.integers(0, 10, 6)
    nets = [engine.load(SPEC, dtype="float64", reorder=r) for r in (True, False)]
    for net in nets:
        if not zero_bias:
            net.params["conv1"]["b"][:] = 0.01
    (ja, ga), (jb, gb) = (net.loss_and_grads(x, y) for net in nets)
    assert ja == jb
    for layer in gb:
        for p in gb[layer]:
            np.testing.assert_array_equal(ga[layer][p], gb[layer][p], err_msg=f"{layer}.{p}")
    np.testing.assert_array_equal(nets[0].forward(x), nets[1].forward(x))


def test_a_window_whose_maximum_is_exactly_zero_sends_the_gradient_as_the_definition_does():
    # the definition: relu(z) = [0, 0, 0, 0], so (19) picks the first entry, where (21) gives 0
    net = engine.load(SPEC, dtype="float64")
    pool = net.compiled(1)[1]
    z = np.full(pool.layer.shapes["x"], -1.0)
    z[0, 0, 1, 0] = 0.0  # window (0, 0) of channel 0: max exactly 0, its first entry -1
    pooled = z.reshape(1, 14, 2, 14, 2, 32).max(axis=(2, 4)).reshape(1, -1)
    dz = np.ones_like(pooled) * 0.5  # (21) at 0 and below, as the reordered ReLU gives it
    reorder.at_zero_maxima(pool.layer, z, pooled, dz)
    assert dz.reshape(1, 14, 14, 32)[0, 0, 0, 0] == 0  # mended
    assert dz.reshape(1, 14, 14, 32)[0, 0, 0, 1] == 0.5  # all -1: a maximum below 0, left as it is


def test_the_load_stops_if_the_reordered_pair_disagrees(monkeypatch):
    monkeypatch.setattr(reorder, "at_zero_maxima", lambda *args: None)  # the mend left out
    with pytest.raises(SpecError, match="layer 'pool1'.*activation 'relu' of layer 'conv1'.*disagrees with the "
                                        "definition's order.*reorder=False"):
        engine.load(SPEC)
