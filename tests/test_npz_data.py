"""Own data as an .npz of arrays: read without pickles, checked like arrays from Python, each fault one
line that leaves the file as it was."""
import numpy as np
import pytest

from engine import training
from engine.data.arrays import own_data
from engine.errors import DataError

from conftest import SPEC, load_train_script, refused_run

COLOURS = np.array(["red", "green", "blue"])


def colours(n, seed):
    y = np.random.default_rng(seed).integers(0, 3, n)
    x = np.zeros((n, 5, 7, 3), np.uint8)
    x[np.arange(n), :, :, y] = 255
    return x, y


def arrays(**changes):
    (x, y), (tx, ty) = colours(60, 0), colours(20, 1)
    out = {"x_train": x, "y_train": y, "x_test": tx, "y_test": ty, "classes": COLOURS}
    out.update(changes)
    return {k: v for k, v in out.items() if v is not None}


def saved(tmp_path, **changes):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays(**changes))
    return path


SPEC_MLP = SPEC.read_text().split("\nnetworks:")[0] + """
networks:
  mlp:
    input: auto
    loss: softmax_cross_entropy
    layers:
      - {name: hidden, kind: dense, units: 8, activation: relu}
      - {name: out, kind: dense, units: classes, activation: softmax}
training: {dataset: mnist}
"""


def test_an_npz_gives_its_shape_and_its_class_names(tmp_path):
    data = own_data(saved(tmp_path))
    assert data.shape == (5, 7, 3) and data.classes == ["red", "green", "blue"]
    assert data.about.endswith("train on 60 images of 5x7x3, test on 20; 3 classes")


def test_grey_images_without_a_channel_axis_take_one(tmp_path):
    data = own_data(saved(tmp_path, x_train=np.zeros((60, 6, 6), np.uint8), x_test=np.zeros((20, 6, 6), np.uint8)))
    assert data.shape == (6, 6, 1)


def test_feature_vectors_train_a_network_of_dense_layers(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    x = rng.normal(size=(80, 4)) + 3 * y[:, None]
    path = tmp_path / "f.npz"
    np.savez(path, x_train=x[:60], y_train=y[:60], x_test=x[60:], y_test=y[60:])
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_MLP)
    o = training.Options(spec=spec, settings={"epochs": 5, "lr": 0.05, "batch_size": 16},
                         checkpoint=tmp_path / "r.npz", data=path, progress=False)
    done = training.train(o, log=lambda line: None)
    assert done.trainer.net.input_shape == (4,) and done.outcome.evaluation.accuracy > 0.9


@pytest.mark.parametrize("changes,message", [
    ({"y_test": None}, "missing the array y_test (it holds x_train, y_train, x_test, classes)"),
    ({"x_train": np.zeros((60, 5, 7, 3), np.int64)}, "x_train is int64; give images as uint8"),
    ({"classes": np.array([1, 2, 3])}, "its classes array is int64"),
], ids=["an array missing", "integer pixels", "numbers for class names"])
def test_a_bad_npz_is_one_line_and_left_untouched(tmp_path, changes, message):
    path = saved(tmp_path, **changes)
    before = path.read_bytes()
    with pytest.raises(DataError) as info:
        own_data(path)
    assert message in info.value.one_line() and "\n" not in info.value.one_line()
    assert path.read_bytes() == before


def test_a_label_outside_the_classes_names_it(tmp_path):
    y = colours(60, 0)[1]
    y[7] = 3
    with pytest.raises(DataError, match=r"y_train\[7\] is 3, outside the 3 classes \(0\.\.2\)"):
        own_data(saved(tmp_path, y_train=y))


def test_an_npz_holding_objects_is_refused_without_unpickling(tmp_path):
    path = saved(tmp_path, classes=np.array([{"a": 1}, "b", "c"], dtype=object))
    with pytest.raises(DataError, match="its array classes holds Python objects, which are not read"):
        own_data(path)


def test_a_file_that_is_no_npz_is_one_line(tmp_path):
    path = tmp_path / "data.npz"
    path.write_text("hello")
    with pytest.raises(DataError, match=r"not an .npz of arrays \(a file of another kind\)") as refused:
        own_data(path)
    assert "pickle" not in str(refused.value)  # numpy's guess that any other file is a pickle is not passed on


def test_train_py_refuses_a_bad_npz_with_exit_2(tmp_path, capsys):
    cli = load_train_script("train_script_npz")
    _, err = refused_run(cli, capsys, ["--data", str(saved(tmp_path, x_test=None)), "--no-checkpoint"])
    assert err.startswith("train.py: ") and "missing the array x_test" in err
