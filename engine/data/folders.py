"""A folder of images sorted by class (PyTorch's ImageFolder): one subfolder per class, named for it;
`train/` and `test/` folders of class folders where present, else a fixed split of each class.

Images are read with Pillow (the `images` extra), once: the decoded arrays are kept in the user's
cache folder (${XDG_CACHE_HOME:-~/.cache}/einsum-engine/images/), keyed by a fingerprint of the
folder's listing (paths, sizes, modification times), never beside the data. Grey images (L, 1-bit)
give one channel; colour ones (RGB, palette, CMYK) three; an alpha channel (RGBA, LA, a palette's
transparency) is dropped, keeping the colours as stored. A folder mixing grey and colour images
gives three channels, the grey repeated. Images of two sizes are refused: nothing is resized.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from .datasets import default_cache_root
from .examples import HOLDOUT_SEED, Data

TEST_SHARE = 0.2  # the split of a folder without train/ and test/: a fifth of each class tests
CACHE_FORMAT = 1  # bumped when the decoding changes, so older cached arrays are not read
MODES = {"1": "L", "L": "L", "LA": "L", "P": "RGB", "PA": "RGB", "RGB": "RGB", "RGBA": "RGB", "CMYK": "RGB",
         "YCbCr": "RGB", "RGBX": "RGB", "La": "L", "RGBa": "RGB"}


def cache_folder() -> Path:
    """Where decoded folders are kept: the engine's cache (honours XDG_CACHE_HOME), images/."""
    return default_cache_root() / "images"


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading a folder of images needs Pillow, which is not installed: pip install "
                        "'.[images]' (or pip install Pillow)") from None
    return Image


def _visible(entries):
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def class_folders(root: Path) -> dict:
    """{split: {class: [image files]}} of a folder: its train/ and test/ when both are there, else
    {"all": ...}. Files whose suffix Pillow does not know as an image's are left out."""
    roots = {"train": root / "train", "test": root / "test"}
    if not all(p.is_dir() for p in roots.values()):
        roots = {"all": root}
    known = set(_pillow().registered_extensions())
    out = {}
    for split, where in roots.items():
        try:
            folders = [e for e in _visible(os.scandir(where)) if e.is_dir()]
        except OSError as exc:
            raise DataError(f"{where}: cannot read it ({exc.strerror or exc}); check its permissions") from None
        if not folders:
            raise DataError(f"{where}: no class folders in it; put each class's images in a subfolder named for "
                            "the class (cat/, dog/, ...)")
        out[split] = {f.name: _images(Path(f.path), known) for f in folders}
    if "train" in out:
        extra = sorted(set(out["test"]) - set(out["train"]))
        if extra:
            raise DataError(f"{roots['test']}: class {extra[0]!r} has no folder in {roots['train']}; every test "
                            "class must be trained on (add its train folder, or remove it from test/)")
    return out


def _images(folder: Path, known: set) -> list:
    """The image files under a class folder (its subfolders too), in a fixed order; none is an error."""
    found = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(top) / f for f in sorted(files) if not f.startswith(".") and Path(f).suffix.lower() in known]
    if not found:
        raise DataError(f"{folder}: an empty class folder (no image files in it); add its images or remove it")
    return found


def fingerprint(root: Path, splits: dict) -> str:
    """sha256 of the folder's listing: each image's path (below root), size and modification time."""
    h = hashlib.sha256(f"format {CACHE_FORMAT}\0".encode())
    for split, classes in splits.items():
        for name, files in classes.items():
            for f in files:
                st = f.stat()
                h.update(f"{split}\0{name}\0{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def load_folder(root: Path, log=print) -> Data:
    """The Data of a folder of class folders, decoded once into the cache (see the module's docstring)."""
    splits = class_folders(root)
    key = fingerprint(root, splits)
    cached = cache_folder() / f"{key}.npz"
    arrays = _read_cache(cached)
    if arrays is None:
        count = sum(len(f) for classes in splits.values() for f in classes.values())
        log(f"decoding {count} images of {root} once (kept in {cached.parent})")
        arrays = _decode(splits)
        _write_cache(cached, arrays, log)
    classes = [str(c) for c in arrays["classes"]]
    if "all" in splits:
        note = f"a fixed split: {TEST_SHARE:.0%} of each class tests (seed {HOLDOUT_SEED})"
    else:
        note = "its train/ and test/ folders"
    return Data(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], root.name,
                f"{root} (images in {len(classes)} class folders; {note})", classes)


def _decode(splits: dict) -> dict:
    """Every image as one uint8 array per split, labelled by class folder, in the fixed order."""
    classes = sorted(set().union(*(c.keys() for c in splits.values())))
    index = {name: i for i, name in enumerate(classes)}
    images, labels, first = {}, {}, {}
    for split, folders in splits.items():
        images[split], labels[split] = [], []
        for name, files in folders.items():
            for f in files:
                images[split].append(_read(f, first))
                labels[split].append(index[name])
    channels = max(a.shape[-1] for split in images.values() for a in split)
    stacked = {s: np.stack([np.repeat(a, channels // a.shape[-1], axis=-1) for a in imgs])
               for s, imgs in images.items()}
    y = {s: np.asarray(v, np.int64) for s, v in labels.items()}
    if "all" in stacked:
        train, test = _split(y["all"])
        out = {"x_train": stacked["all"][train], "y_train": y["all"][train], "x_test": stacked["all"][test],
               "y_test": y["all"][test]}
    else:
        out = {"x_train": stacked["train"], "y_train": y["train"], "x_test": stacked["test"], "y_test": y["test"]}
    out["classes"] = np.array(classes, dtype=str)
    return out


def read_image(path, channels: int | None = None) -> np.ndarray:
    """One image as uint8 [h, w, c]: c = 1 for grey, 3 for colour (see the module's docstring), or as
    `channels` says (1: made grey, 3: made RGB); one DataError line if it cannot be read."""
    image_module = _pillow()
    try:
        with image_module.open(path) as im:
            im.load()
            mode = MODES.get(im.mode)
            if mode is None:
                raise DataError(f"{path}: a {im.mode} image (16- or 32-bit values), which is not read; save it as "
                                "8-bit grey or colour")
            if im.mode == "P" and "transparency" in im.info:
                im = im.convert("RGBA")
            a = np.asarray(im.convert({1: "L", 3: "RGB"}.get(channels, mode)), dtype=np.uint8)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 -- Pillow's UnidentifiedImageError, OSError, truncated data...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: not an image that can be read ({reason}); replace it or remove it") from None
    return a[..., None] if a.ndim == 2 else a


def _read(path: Path, first: dict) -> np.ndarray:
    """One image of a folder; one DataError line if its size differs from the folder's first image's."""
    a = read_image(path)
    if "shape" not in first:
        first.update(shape=a.shape[:2], path=path)
    elif a.shape[:2] != first["shape"]:
        (h, w), (h0, w0) = a.shape[:2], first["shape"]
        raise DataError(f"{path}: {w}x{h} pixels, but {first['path']} is {w0}x{h0}; images are not resized, so "
                        "give every image the same size")
    return a


def image_files(folder: Path) -> list:
    """Every image file under a folder (its subfolders too), in a fixed order."""
    return _images(Path(folder), set(_pillow().registered_extensions()))


def _split(y: np.ndarray):
    """(train indices, test indices): TEST_SHARE of each class, drawn by a fixed shuffle, both sorted."""
    train, test = [], []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        order = members[np.random.default_rng([HOLDOUT_SEED, int(c)]).permutation(len(members))]
        k = max(1, round(len(members) * TEST_SHARE)) if len(members) > 1 else 0
        test.append(order[:k])
        train.append(order[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _read_cache(path: Path) -> dict | None:
    """The cached arrays, or None when absent or unreadable (then the folder is decoded again)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def _write_cache(path: Path, arrays: dict, log) -> None:
    """Keep the decoded arrays (a temporary file renamed into place); a cache that cannot be written is
    a note, not a failure: the next run decodes again."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        log(f"note: cannot keep the decoded images in {path.parent} ({exc.strerror or exc}); the next run decodes "
            "them again")
