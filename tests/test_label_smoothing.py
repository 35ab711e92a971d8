"""The smoothed softmax cross-entropy of layers.yaml: (24)-(26) against the target q = (1 - eps) y + eps/K
(Szegedy et al. 2016), chosen by a network as `loss: {kind: smoothed_softmax_cross_entropy, smoothing: eps}`."""
import copy

import numpy as np
import pytest
import yaml

import engine
from engine.compiler.layer import Block
from engine.training import checkpoint
from engine.training.checkpoint import CheckpointError

from conftest import SPEC as SPEC_PATH

SPEC = engine.read(SPEC_PATH)
BASE = yaml.safe_load(SPEC_PATH.read_text())
SMOOTHED = "smoothed_softmax_cross_entropy"


def loss_block(name, dtype=np.float64, rows=3, classes=5, **hyper):
    """The softmax and the loss `name`, compiled for [rows, classes] at the loss's hyperparameters."""
    act = SPEC.activations["softmax"]
    act = Block(SPEC, act, {}, {"z": (rows, classes)}, "test softmax", dtype=dtype)
    kind = SPEC.losses[name]
    loss = Block(SPEC, kind, {**kind.hyper, **hyper}, {**act.shapes, "y": (rows, classes), "dJ": ()},
                 "test loss", needs={"z"}, dtype=dtype)
    return act, loss


def run(act, loss, z, y):
    """(J, dz) of the chain softmax -> loss at logits z and one-hot labels y."""
    env = {k: v.copy() for k, v in act.forward({"z": z}).items()}
    env["y"] = y
    loss.forward(env)
    value = float(env["J"])
    env["dJ"] = np.ones((), z.dtype)
    return value, loss.backward(env)["dz"].copy()


Z = np.random.default_rng(1).standard_normal((3, 5))
Y = np.eye(5)[[0, 3, 4]]


@pytest.mark.parametrize("eps", [0.1, 0.5, 0.9])
def test_the_smoothed_loss_is_the_cross_entropy_against_q(eps):
    value, _ = run(*loss_block(SMOOTHED, smoothing=eps), Z, Y)
    q = (1 - eps) * Y + eps / 5
    log_s = Z - Z.max(1, keepdims=True) - np.log(np.exp(Z - Z.max(1, keepdims=True)).sum(1, keepdims=True))
    assert value == pytest.approx(-np.mean(np.sum(q * log_s, 1)), rel=1e-12)


@pytest.mark.parametrize("eps", [0.1, 0.5])
def test_the_smoothed_gradient_is_eq_26_with_q_and_matches_finite_differences(eps):
    act, loss = loss_block(SMOOTHED, smoothing=eps)
    _, dz = run(act, loss, Z, Y)
    s = np.exp(Z) / np.exp(Z).sum(1, keepdims=True)
    np.testing.assert_allclose(dz, (s - ((1 - eps) * Y + eps / 5)) / 3, rtol=1e-12, atol=1e-15)
    numeric = np.zeros_like(Z)
    for idx in np.ndindex(Z.shape):
        e = np.zeros_like(Z)
        e[idx] = 1e-6
        numeric[idx] = (run(act, loss, Z + e, Y)[0] - run(act, loss, Z - e, Y)[0]) / 2e-6
    assert np.max(np.abs(numeric - dz)) / np.max(np.abs(dz)) < 1e-6


def test_smoothing_zero_gives_the_plain_loss_and_gradient_bit_for_bit():
    z, y = Z.astype(np.float32), Y.astype(np.float32)
    plain = run(*loss_block("softmax_cross_entropy", np.float32), z, y)
    smoothed = run(*loss_block(SMOOTHED, np.float32, smoothing=0.0), z, y)
    assert plain[0] == smoothed[0] and np.array_equal(plain[1], smoothed[1])


def test_the_smoothed_loss_in_float32_agrees_with_float64():
    wide = run(*loss_block(SMOOTHED, smoothing=0.1), Z, Y)
    narrow = run(*loss_block(SMOOTHED, np.float32, smoothing=0.1), Z.astype(np.float32), Y.astype(np.float32))
    assert narrow[0] == pytest.approx(wide[0], rel=1e-6)
    np.testing.assert_allclose(narrow[1], wide[1], rtol=1e-5, atol=1e-7)


def test_its_default_is_szegedys_0_1():
    assert SPEC.losses[SMOOTHED].hyper == {"smoothing": 0.1}


def with_loss(tmp_path, loss, network="softmax-regression"):
    data = copy.deepcopy(BASE)
    data["networks"][network]["loss"] = loss
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_network_sets_the_smoothing_beside_the_losss_name_and_passes_the_load_checks(tmp_path):
    net = engine.load(with_loss(tmp_path, {"kind": SMOOTHED, "smoothing": 0.2}), network="softmax-regression")
    assert net.net.loss == SMOOTHED and net.net.loss_hyper == {"smoothing": 0.2}


def test_a_loss_named_alone_takes_its_defaults(tmp_path):
    net = engine.load(with_loss(tmp_path, SMOOTHED), network="softmax-regression", check=False)
    assert net.net.loss_hyper == {"smoothing": 0.1}


@pytest.mark.parametrize("loss, fragments", [
    ({"kind": SMOOTHED, "smoothing": 1.0}, ["field 'loss', field 'smoothing'", "smoothing = 1.0 is outside [0, 1)"]),
    ({"kind": SMOOTHED, "smoothing": -0.1}, ["field 'smoothing'", "smoothing = -0.1 is outside [0, 1)"]),
    ({"kind": SMOOTHED, "smoothing": "a lot"}, ["field 'smoothing'", "'a lot' is outside [0, 1)"]),
    ({"kind": SMOOTHED, "smothing": 0.1}, ["field 'smothing'", "takes no such field", "['smoothing']"]),
    ({"kind": "softmax_cross_entropy", "smoothing": 0.1}, ["loss 'softmax_cross_entropy' takes no such field"]),
    ({"smoothing": 0.1}, ["field 'loss'", "must be the name of a loss", "{kind: loss, field: value}"]),
    ({"kind": "hinge"}, ["field 'loss'", "loss 'hinge' not found, valid options are"]),
], ids=["one", "negative", "text", "misspelt", "plain loss", "no kind", "unknown"])
def test_a_bad_loss_field_is_one_line_naming_it(tmp_path, loss, fragments):
    with pytest.raises(engine.SpecError) as info:
        engine.load(with_loss(tmp_path, loss), network="softmax-regression")
    message = str(info.value)
    assert "\n" not in message and "network 'softmax-regression'" in message
    for fragment in fragments:
        assert fragment in message, message


def test_a_checkpoint_trained_with_one_smoothing_does_not_resume_with_another(tmp_path):
    then = checkpoint.meaning(engine.read(with_loss(tmp_path, {"kind": SMOOTHED, "smoothing": 0.1})),
                              "softmax-regression")
    now = checkpoint.meaning(engine.read(with_loss(tmp_path, {"kind": SMOOTHED, "smoothing": 0.2})),
                             "softmax-regression")
    ckpt = checkpoint.Checkpoint({}, {}, {}, {"meaning": then, "network": "softmax-regression"})
    with pytest.raises(CheckpointError, match=r"loss_hyper smoothing 0\.1 -> 0\.2"):
        checkpoint.check_spec(ckpt, "old.npz", checkpoint.fingerprint(now), "spec.yaml", "softmax-regression", now)


def test_the_plain_losss_meaning_is_as_before_so_its_checkpoints_still_load():
    assert "loss_hyper" not in checkpoint.meaning(SPEC, "seven-layer")


def test_the_test_loss_stays_the_plain_cross_entropy_of_the_true_class(tmp_path):
    from engine.training.evaluation import evaluate
    net = engine.load(with_loss(tmp_path, {"kind": SMOOTHED, "smoothing": 0.3}), network="softmax-regression",
                      dtype="float64", check=False)
    rng = np.random.default_rng(0)
    for layer in net.params.values():
        for p in layer.values():
            p[...] = rng.standard_normal(p.shape) * 0.1
    images, labels = rng.random((8, 28, 28, 1)), rng.integers(0, 10, 8)
    probs = net.forward(images)
    assert evaluate(net, images, labels, 8).loss == pytest.approx(-np.mean(np.log(probs[np.arange(8), labels])))
