"""A run's own data from Python (training.train with Data): the network's input and classes come from it
where the spec says `input: auto` and `classes`, and its checkpoint records the class names, the input
shape and the data's fingerprint, so a resume on other data is refused."""
import numpy as np
import pytest

import engine
from engine import training
from engine.compiler.spec import fitted
from engine.training import Data, checkpoint

from conftest import SPEC

COLOURS = ["red", "green", "blue"]


def colours(n, seed=0, size=6):
    """n images of size x size x 3, each one plain colour: its class (easily separable)."""
    y = np.random.default_rng(seed).integers(0, 3, n)
    x = np.zeros((n, size, size, 3), np.uint8)
    x[np.arange(n), :, :, y] = 255
    return x, y


def colour_data(seed=0, size=6):
    (x, y), (tx, ty) = colours(96, seed, size), colours(30, seed + 1, size)
    return Data(x, y, tx, ty, classes=COLOURS)


def run(tmp_path, data, name="run.npz", resume=False, **settings):
    o = training.Options(settings={"network": "softmax-regression", "epochs": 2, "lr": 0.05, **settings},
                         checkpoint=tmp_path / name, resume=resume, progress=False)
    return training.train(o, log=lambda line: None, data=data)


def test_an_auto_network_takes_the_data_s_shape_and_classes(tmp_path):
    done = run(tmp_path, colour_data())
    assert done.trainer.net.input_shape == (6, 6, 3) and done.trainer.net.classes == 3
    assert done.outcome.evaluation.accuracy == 1.0


def test_the_checkpoint_records_the_class_names_and_the_input_shape(tmp_path):
    run(tmp_path, colour_data())
    assert checkpoint.class_names(tmp_path / "run.npz") == COLOURS
    assert checkpoint.input_shape(tmp_path / "run.npz") == (6, 6, 3)


def test_the_checkpoint_records_the_data_s_fingerprint(tmp_path):
    data = colour_data()
    run(tmp_path, data)
    assert checkpoint.load(tmp_path / "run.npz").meta["data_fingerprint"] == data.fingerprint


def test_a_resume_on_other_data_is_refused(tmp_path):
    run(tmp_path, colour_data(), epochs=1)
    with pytest.raises(training.CheckpointError, match="trained on other data"):
        run(tmp_path, colour_data(seed=5), resume=True, epochs=2)


def test_a_resume_on_data_of_another_shape_says_the_data_differs(tmp_path):
    run(tmp_path, colour_data(), epochs=1)
    with pytest.raises(training.CheckpointError, match="trained on other data"):
        run(tmp_path, colour_data(size=8), resume=True, epochs=2)


def test_a_resume_on_the_same_data_goes_on(tmp_path):
    run(tmp_path, colour_data(), epochs=1)
    assert run(tmp_path, colour_data(), resume=True, epochs=2).trainer.epoch == 2


def test_a_resume_of_own_data_without_it_is_refused(tmp_path):
    run(tmp_path, colour_data(), epochs=1)
    o = training.Options(settings={"epochs": 2}, checkpoint=tmp_path / "run.npz", resume=True, progress=False)
    with pytest.raises(training.TrainingError, match="trained on its own data"):
        training.train(o, log=lambda line: None)


def test_class_names_of_a_checkpoint_without_them_are_its_data_set_s(tmp_path):
    from conftest import rewrite_checkpoint
    run(tmp_path, colour_data())
    rewrite_checkpoint(tmp_path / "run.npz", meta=lambda m: (m.pop("classes"), m["config"].update(
        dataset="fashion-mnist")))
    assert checkpoint.class_names(tmp_path / "run.npz")[:2] == ["T-shirt/top", "Trouser"]


def test_classes_default_to_the_labels_numbers():
    x, y = colours(10)
    assert Data(x, y, x, y).classes == ["0", "1", "2"]


@pytest.mark.parametrize("mistake,message", [
    (lambda d: Data(d.train_x, d.train_y + 3, d.test_x, d.test_y, classes=COLOURS), "outside the 3 classes"),
    (lambda d: Data(d.train_x.astype(np.int32), d.train_y, d.test_x, d.test_y), "x_train is int32"),
    (lambda d: Data(d.train_x, d.train_y, d.test_x[:, :4], d.test_y), "give both splits the same shape"),
    (lambda d: Data(d.train_x, d.train_y[:5], d.test_x, d.test_y), "holds 96 examples but y_train 5 labels"),
], ids=["a label outside the classes", "integer pixels", "splits of two shapes", "labels missing"])
def test_bad_arrays_are_one_line_before_training(tmp_path, mistake, message):
    with pytest.raises(engine.UserError, match=message) as info:
        run(tmp_path, mistake(colour_data()))
    assert "\n" not in info.value.one_line()
    assert not (tmp_path / "run.npz").exists()


def test_the_shipped_networks_take_28_by_28_by_1_unless_fitted():
    spec = engine.read(SPEC)
    assert spec.networks["seven-layer"].input == (28, 28, 1)
    net = engine.load(fitted(spec, "seven-layer", (32, 32, 3), 5), network="seven-layer")
    assert net.input_shape == (32, 32, 3) and net.classes == 5


def test_a_fixed_input_stays_as_written():
    spec = engine.read(SPEC.read_text().replace("input: auto", "input: [28, 28, 1]"))
    assert fitted(spec, "seven-layer", (32, 32, 3), 5).networks["seven-layer"].input == (28, 28, 1)


def test_a_network_of_a_fixed_input_refuses_data_of_another_shape(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.read_text().replace("input: auto", "input: [28, 28, 1]"))
    o = training.Options(spec=spec, settings={"network": "softmax-regression"}, checkpoint=tmp_path / "run.npz",
                         progress=False)
    with pytest.raises(training.TrainingError, match=r"takes inputs of shape \(28, 28, 1\).*\(6, 6, 3\)"):
        training.train(o, log=lambda line: None, data=colour_data())


@pytest.mark.parametrize("network", ["seven-layer", "seven-layer-bn", "resnet", "zoo", "softmax-regression"])
def test_every_shipped_network_takes_32_by_32_colour_images(network):
    net = engine.load(fitted(engine.read(SPEC), network, (32, 32, 3), 7), network=network)
    assert net.forward(np.zeros((2, 32, 32, 3))).shape == (2, 7)


def test_auto_without_data_is_the_named_data_sets_shape():
    from engine.data.datasets import DATASETS
    from engine.settings import NAMED_DATA_CLASSES, NAMED_DATA_INPUT
    assert {(d.image_shape + (1,), d.num_classes) for d in DATASETS.values()} == {(NAMED_DATA_INPUT,
                                                                                    NAMED_DATA_CLASSES)}
