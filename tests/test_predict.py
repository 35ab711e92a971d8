"""scripts/predict.py: the top classes of new inputs with their probabilities, named as the run named
them, from a seven-layer checkpoint trained here on plain colours; bad input one line and exit 2."""
import importlib.util
import json

import numpy as np
import pytest

from engine import training
from engine.training import Data

from conftest import ROOT, rewrite_checkpoint

Image = pytest.importorskip("PIL.Image")
NAMES = ["red", "green", "blue"]


def colours(n, seed, size=12):
    y = np.random.default_rng(seed).integers(0, 3, n)
    x = np.zeros((n, size, size, 3), np.uint8)
    x[np.arange(n), :, :, y] = 255
    return x, y


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A seven-layer checkpoint trained briefly on 12x12 plain colours (input: auto, units: classes)."""
    path = tmp_path_factory.mktemp("predict") / "seven.npz"
    (x, y), (tx, ty) = colours(64, 0), colours(16, 1)
    o = training.Options(settings={"network": "seven-layer", "epochs": 1, "batch_size": 16}, checkpoint=path,
                         progress=False)
    done = training.train(o, log=lambda line: None, data=Data(x, y, tx, ty, classes=NAMES))
    assert done.outcome.evaluation.accuracy == 1.0
    return path


@pytest.fixture(scope="module")
def predict():
    spec = importlib.util.spec_from_file_location("predict_script", ROOT / "scripts" / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def image(path, channel, size=12, mode="RGB"):
    a = np.zeros((size, size, 3), np.uint8)
    a[..., channel] = 255
    Image.fromarray(a).convert(mode).save(path)
    return str(path)


def test_an_image_gets_its_class_first(run, predict, tmp_path, capsys):
    assert predict(["--checkpoint", str(run), image(tmp_path / "b.png", 2)]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"{tmp_path / 'b.png'}: blue ") and line.count("%") == 3


def test_json_gives_the_top_classes_as_data(run, predict, tmp_path, capsys):
    assert predict(["--checkpoint", str(run), image(tmp_path / "g.png", 1), "--json", "--top", "2"]) == 0
    found = json.loads(capsys.readouterr().out)
    top = found[0]["top"]
    assert found[0]["input"] == str(tmp_path / "g.png") and [t["class"] for t in top][0] == "green"
    assert len(top) == 2 and top[0]["probability"] >= top[1]["probability"]


def test_a_folder_predicts_every_image_under_it(run, predict, tmp_path, capsys):
    for name, channel in zip(NAMES, range(3)):
        image(tmp_path / f"{name}.png", channel)
    assert predict(["--checkpoint", str(run), str(tmp_path), "--top", "1", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert {f["input"].rsplit("/", 1)[1][:-4]: f["top"][0]["class"] for f in found} == dict(zip(NAMES, NAMES))


def test_an_npz_predicts_each_row_of_x(run, predict, tmp_path, capsys):
    x, y = colours(5, 3)
    np.savez(tmp_path / "new.npz", x=x)
    assert predict(["--checkpoint", str(run), str(tmp_path / "new.npz"), "--top", "1", "--json"]) == 0
    assert [f["top"][0]["class"] for f in json.loads(capsys.readouterr().out)] == [NAMES[c] for c in y]


def test_a_checkpoint_without_recorded_names_uses_its_data_set_s(run, predict, tmp_path, capsys):
    old = tmp_path / "old.npz"
    old.write_bytes(run.read_bytes())
    rewrite_checkpoint(old, meta=lambda m: m.pop("classes"))
    assert predict(["--checkpoint", str(old), image(tmp_path / "r.png", 0), "--top", "1"]) == 0
    assert capsys.readouterr().out.split(": ")[1].split()[0] in ("0", "1", "2")


@pytest.mark.parametrize("make,message", [
    (lambda d: image(d / "big.png", 0, size=14), "14x14 pixels of 3 channels, but the network takes 12x12 pixels "
                                                 "of 3 channels; images are not resized"),
    (lambda d: (d / "bad.png").write_bytes(b"nope") and str(d / "bad.png"), "not an image that can be read"),
    (lambda d: str(d / "none.png"), "no such file or folder"),
], ids=["another size", "an unreadable image", "a missing file"])
def test_a_bad_input_is_one_line_and_exit_2(run, predict, tmp_path, capsys, make, message):
    assert predict(["--checkpoint", str(run), make(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("predict.py: ") and message in err and err.count("\n") == 1


def test_a_file_that_is_no_checkpoint_is_one_line_and_exit_2(predict, tmp_path, capsys):
    (tmp_path / "run.npz").write_text("not a checkpoint")
    assert predict(["--checkpoint", str(tmp_path / "run.npz"), image(tmp_path / "r.png", 0)]) == 2
    err = capsys.readouterr().err
    assert "not a checkpoint" in err and err.count("\n") == 1


def test_grey_images_are_made_the_network_s_three_channels(run, predict, tmp_path, capsys):
    assert predict(["--checkpoint", str(run), image(tmp_path / "grey.png", 0, mode="L")]) == 0
    assert capsys.readouterr().out.count("%") == 3


def test_a_run_that_saw_its_test_images_mirrored_predicts_so_too(run, predict, tmp_path, capsys):
    half = np.zeros((12, 12, 3), np.uint8)
    half[:, :6, 0], half[:, 6:, 2] = 255, 160  # red on the left, dimmer blue on the right
    Image.fromarray(half).save(tmp_path / "half.png")
    Image.fromarray(half[:, ::-1].copy()).save(tmp_path / "mirror.png")

    def probabilities(checkpoint, name):
        assert predict(["--checkpoint", str(checkpoint), str(tmp_path / name), "--json", "--top", "3"]) == 0
        return {t["class"]: t["probability"] for t in json.loads(capsys.readouterr().out)[0]["top"]}

    plain, mirror = probabilities(run, "half.png"), probabilities(run, "mirror.png")
    assert plain != mirror
    flipped = tmp_path / "flipped.npz"
    flipped.write_bytes(run.read_bytes())
    rewrite_checkpoint(flipped, meta=lambda record: record["config"].update(test_augment="flip"))
    seen = probabilities(flipped, "half.png")
    assert seen == pytest.approx({c: (plain[c] + mirror[c]) / 2 for c in NAMES}, rel=1e-6)
