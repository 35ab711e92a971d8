"""Test-time augmentation (`test_augment: flip`): a test image's class probabilities are the mean of its
own and its mirror image's, in the trainer's evaluation, `--eval-only` and predictions."""
import copy

import numpy as np
import pytest
import yaml

import engine
from engine.errors import TrainingError
from engine.training.evaluation import evaluate, probabilities

from conftest import SPEC, TINY_RUN, load_train_script, needs_mnist, refused_run

BASE = yaml.safe_load(SPEC.read_text())


def network(input_shape):
    data = copy.deepcopy(BASE)
    data["networks"]["small"] = {
        "cites": "test", "input": input_shape, "loss": "softmax_cross_entropy",
        "layers": [{"name": "flat", "kind": "flatten"} if len(input_shape) == 3 else
                   {"name": "hidden", "kind": "dense", "units": 8, "activation": "relu"},
                   {"name": "dense", "kind": "dense", "units": 3, "activation": "softmax", "init": "glorot"}]}
    return engine.load(data, network="small", dtype="float64", check=False)


def test_flip_averages_each_images_probabilities_with_its_mirror_images():
    net = network([4, 5, 1])
    x = np.random.default_rng(0).random((6, 4, 5, 1))
    expected = (net.forward(x) + net.forward(x[:, :, ::-1].copy())) / 2
    assert np.array_equal(probabilities(net, x, "flip"), expected)
    assert np.array_equal(probabilities(net, x, "none"), net.forward(x))
    assert not np.allclose(expected, net.forward(x))  # the mirror images are seen otherwise


def test_evaluation_scores_the_averaged_probabilities():
    net = network([4, 5, 1])
    rng = np.random.default_rng(1)
    images, labels = rng.integers(0, 256, (10, 4, 5, 1), dtype=np.uint8), rng.integers(0, 3, 10)
    x = images / np.float64(255)
    p = probabilities(net, x, "flip")
    ev = evaluate(net, images, labels, batch_size=4, test_augment="flip")
    assert ev.accuracy == np.mean(p.argmax(axis=1) == labels)
    assert ev.loss == pytest.approx(-np.mean(np.log(p[np.arange(10), labels])), rel=1e-12)


def test_a_network_of_vectors_is_told_it_has_no_images_to_mirror():
    net = network([7])
    with pytest.raises(TrainingError, match=r"`test_augment` flip mirrors images, but network 'small' takes inputs "
                                            r"of shape \(7,\)"):
        probabilities(net, np.zeros((2, 7)), "flip")


def test_an_unknown_test_augmentation_lists_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as stop:
        load_train_script().main(TINY_RUN + ["--test-augment", "rotate"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert "--test-augment" in err and "'rotate'" in err and "'flip', 'none'" in err


def test_an_unknown_test_augmentation_in_the_spec_is_named_there(tmp_path, capsys):
    data = copy.deepcopy(BASE)
    data["networks"]["softmax-regression"]["training"]["test_augment"] = "rotate"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    _, err = refused_run(load_train_script(), capsys, TINY_RUN + ["--spec", str(spec)])
    assert "training: test_augment in the spec" in err
    assert "'rotate' not found, valid options are ['flip', 'none']" in err


@needs_mnist
def test_eval_only_may_see_a_checkpoint_with_or_without_mirror_images(tmp_path, capsys):
    cli = load_train_script()
    path = tmp_path / "c.npz"
    assert cli.main(TINY_RUN + ["--epochs", "1", "--checkpoint", str(path), "--test-augment", "flip"]) == 0
    out = capsys.readouterr().out
    assert "test images also seen flipped" in out
    assert cli.main([*TINY_RUN[2:8], "--checkpoint", str(path), "--eval-only"]) == 0
    assert "each image also seen flipped" in capsys.readouterr().out
    assert cli.main([*TINY_RUN[2:8], "--checkpoint", str(path), "--eval-only", "--test-augment", "none"]) == 0
    assert "seen flipped" not in capsys.readouterr().out
