"""A folder of images sorted by class: class names from its subfolders, the shape from its images,
decoded once into the user's cache (never beside the data), and every fault one line."""
import os
import re
import sys

import numpy as np
import pytest

from engine.data.arrays import own_data
from engine.errors import DataError

from conftest import load_train_script, refused_run

Image = pytest.importorskip("PIL.Image")
COLOURS = {"blue": 2, "green": 1, "red": 0}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """The decoded images' cache under tmp_path, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "einsum-engine" / "images"


def picture(path, channel=0, size=(8, 8), mode="RGB"):
    """A plain image: colour `channel` at full strength (grey: a level), saved in `mode`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros((size[1], size[0], 3), np.uint8)
    a[..., channel] = 255
    image = Image.fromarray(a)
    image = image.convert(mode) if mode != "RGB" else image
    image.save(path)
    return path


def colour_folder(root, n=10, **kw):
    """root/<colour>/<i>.png: n plain images of each colour."""
    for name, channel in COLOURS.items():
        for i in range(n):
            picture(root / name / f"{i}.png", channel, **kw)
    return root


def listing(root):
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
                  for p in root.rglob("*"))


def test_the_classes_are_the_subfolders_and_the_shape_the_images(tmp_path):
    data = own_data(colour_folder(tmp_path / "pics", size=(12, 8)), log=lambda line: None)
    assert data.classes == ["blue", "green", "red"] and data.shape == (8, 12, 3)
    blue = data.train_x[data.train_y == 0]
    assert (blue[..., 2] == 255).all() and (blue[..., :2] == 0).all()


def test_grey_images_give_one_channel(tmp_path):
    data = own_data(colour_folder(tmp_path / "pics", mode="L"), log=lambda line: None)
    assert data.shape == (8, 8, 1)


def test_alpha_is_dropped_and_palettes_give_colours(tmp_path):
    root = colour_folder(tmp_path / "pics", n=3, mode="RGBA")
    picture(root / "red" / "p.png", 0, mode="P")
    data = own_data(root, log=lambda line: None)
    assert data.shape == (8, 8, 3)
    red = np.concatenate([data.train_x[data.train_y == 2], data.test_x[data.test_y == 2]])
    assert len(red) == 4 and (red[..., 0] == 255).all() and (red[..., 1:] == 0).all()


def test_grey_among_colour_images_is_repeated_into_three_channels(tmp_path):
    root = colour_folder(tmp_path / "pics", n=3)
    picture(root / "red" / "grey.png", 0, mode="L")
    assert own_data(root, log=lambda line: None).shape == (8, 8, 3)


def test_a_folder_without_train_and_test_is_split_a_fifth_of_each_class(tmp_path):
    data = own_data(colour_folder(tmp_path / "pics"), log=lambda line: None)
    assert np.bincount(data.test_y).tolist() == [2, 2, 2] and np.bincount(data.train_y).tolist() == [8, 8, 8]
    assert "a fixed split: 20% of each class tests (seed 0)" in data.about


def test_train_and_test_folders_are_used_where_present(tmp_path):
    colour_folder(tmp_path / "pics" / "train", n=4)
    colour_folder(tmp_path / "pics" / "test", n=1)
    data = own_data(tmp_path / "pics", log=lambda line: None)
    assert len(data.train_y) == 12 and len(data.test_y) == 3 and "its train/ and test/ folders" in data.about


def test_the_run_says_what_it_trains_on(tmp_path):
    data = own_data(colour_folder(tmp_path / "pics"), log=lambda line: None)
    assert data.about.endswith("train on 24 images of 8x8x3, test on 6; 3 classes")


def test_images_are_decoded_once_into_the_cache_and_nothing_beside_the_data(tmp_path, cache):
    root = colour_folder(tmp_path / "pics")
    before = listing(root)
    said = []
    first = own_data(root, log=said.append)
    second = own_data(root, log=said.append)
    assert sum("decoding 30 images" in line for line in said) == 1
    assert len(list(cache.glob("*.npz"))) == 1 and listing(root) == before
    assert first.fingerprint == second.fingerprint


def test_a_changed_image_is_decoded_again(tmp_path):
    root = colour_folder(tmp_path / "pics")
    own_data(root, log=lambda line: None)
    picture(root / "red" / "0.png", 1)
    os.utime(root / "red" / "0.png", ns=(1, 1))
    said = []
    data = own_data(root, log=said.append)
    assert any("decoding" in line for line in said) and (data.train_x[..., 1] == 255).sum() > 0


@pytest.mark.parametrize("fault,message", [
    (lambda root: (root / "green").mkdir(), "green: an empty class folder (no image files in it)"),
    (lambda root: (root / "red" / "bad.png").write_bytes(b"not a png"), "bad.png: not an image that can be read"),
    (lambda root: picture(root / "red" / "big.png", size=(9, 8)), "9x8 pixels, but"),
], ids=["an empty class folder", "an unreadable image", "mixed image sizes"])
def test_a_bad_folder_is_one_line_and_left_untouched(tmp_path, fault, message):
    root = tmp_path / "pics"
    colour_folder(root, n=2)
    (root / "green").rename(tmp_path / "away")
    fault(root)
    before = listing(root)
    with pytest.raises(DataError, match=re.escape(message)) as info:
        own_data(root, log=lambda line: None)
    assert "\n" not in info.value.one_line() and listing(root) == before


def test_a_folder_without_class_subfolders_is_one_line(tmp_path):
    picture(tmp_path / "pics" / "a.png")
    with pytest.raises(DataError, match="no class folders in it; put each class's images in a subfolder"):
        own_data(tmp_path / "pics", log=lambda line: None)


def test_without_pillow_the_message_names_the_extra(tmp_path, monkeypatch):
    root = colour_folder(tmp_path / "pics", n=1)
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(DataError, match=r"needs Pillow, which is not installed: pip install '\.\[images\]'"):
        own_data(root, log=lambda line: None)


# -- the command line -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli():
    return load_train_script("train_script_folders")


RUN = ["--network", "softmax-regression", "--epochs", "2", "--lr", "0.05", "--no-progress"]


def test_train_py_trains_on_a_folder_and_says_so(cli, tmp_path, capsys):
    root = colour_folder(tmp_path / "pics", size=(10, 10))
    assert cli.main([*RUN, "--data", str(root), "--checkpoint", str(tmp_path / "run.npz")]) == 0
    out = capsys.readouterr().out
    assert "train on 24 images of 10x10x3, test on 6; 3 classes" in out and "done: test accuracy 100.00%" in out


def test_train_py_refuses_a_resume_on_other_data(cli, tmp_path, capsys):
    args = [*RUN, "--data", str(colour_folder(tmp_path / "pics")), "--checkpoint", str(tmp_path / "run.npz")]
    assert cli.main([*args[:3], "1", *args[4:]]) == 0
    picture(tmp_path / "pics" / "red" / "new.png")
    _, err = refused_run(cli, capsys, [*args, "--resume"])
    assert "trained on other data" in err


@pytest.mark.parametrize("extra,message", [
    (["--dataset", "mnist"], "--data is the run's own data, and --dataset belongs to a named data set"),
    (["--holdout", "5"], "--holdout belongs to a named data set"),
], ids=["--dataset", "--holdout"])
def test_train_py_refuses_a_named_data_set_beside_data(cli, tmp_path, capsys, extra, message):
    root = colour_folder(tmp_path / "pics", n=2)
    _, err = refused_run(cli, capsys, [*RUN, "--data", str(root), *extra, "--no-checkpoint"])
    assert message in err


def test_train_py_names_a_missing_data_path(cli, tmp_path, capsys):
    _, err = refused_run(cli, capsys, [*RUN, "--data", str(tmp_path / "nothing"), "--no-checkpoint"])
    assert "--data" in err and "no such file or folder" in err


def test_eval_only_evaluates_a_run_of_its_own_data_on_data_given(cli, tmp_path, capsys):
    root = colour_folder(tmp_path / "pics")
    assert cli.main([*RUN, "--data", str(root), "--checkpoint", str(tmp_path / "run.npz")]) == 0
    capsys.readouterr()
    assert cli.main(["--checkpoint", str(tmp_path / "run.npz"), "--eval-only", "--data", str(root)]) == 0
    out = capsys.readouterr().out
    assert "trained on pics" in out and "test accuracy 100.00% (6 of 6)" in out
    _, err = refused_run(cli, capsys, ["--checkpoint", str(tmp_path / "run.npz"), "--eval-only"])
    assert "trained on its own data (pics); give --data PATH to evaluate it on" in err
