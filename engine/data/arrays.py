"""Data given by path: an .npz of arrays (x_train, y_train, x_test, y_test, optional classes), or a
folder of images sorted by class (engine/data/folders.py), checked the same way as arrays given
from Python.  Nothing here writes beside the data."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError, named
from .examples import Data

ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def own_data(source, limit=None, test_limit=None, log=print) -> Data:
    """A run's own data -- a path (load_path) or Data -- checked, cut to `limit` and `test_limit` examples,
    with a sentence saying what it is: where from, how many examples of which shape, how many classes."""
    data = checked(source) if isinstance(source, Data) else load_path(source, log)
    n, m = len(data.train_y), len(data.test_y)
    n_train, n_test = min(limit or n, n), min(test_limit or m, m)
    cut = Data(data.train_x[:n_train], data.train_y[:n_train], data.test_x[:n_test], data.test_y[:n_test], data.name,
               data.about, list(data.classes))
    what = "images of " + "x".join(map(str, data.shape)) if len(data.shape) == 3 else \
        f"examples of {data.shape[0]} features"
    base = data.about
    if isinstance(source, Data):
        base = "arrays given from Python" if data.name == "arrays" else f"{data.name} (arrays given from Python)"
    cut.about = (f"{base}: train on {n_train}{f' of {n} (`limit`)' if n_train < n else ''} {what}, test on "
                 f"{n_test}{f' of {m} (`test_limit`)' if n_test < m else ''}; {len(data.classes)} classes")
    return cut


def load_path(path, log=print) -> Data:
    """The Data at `path`: an .npz file or a folder of class folders; one DataError line for anything else."""
    p = Path(path).expanduser()
    if p.is_dir():
        from .folders import load_folder

        return load_folder(p, log)
    if not p.exists():
        raise DataError(f"{named('data')} {path}: no such file or folder; give an .npz of arrays or a folder with "
                        "one subfolder of images per class")
    return load_npz(p)


def load_npz(path) -> Data:
    """x_train, y_train, x_test, y_test (and optionally classes, the names) from an .npz, without pickles."""
    with open(path, "rb") as f:
        magic = f.read(6)
    if not magic.startswith(b"PK") and magic != b"\x93NUMPY":  # neither a zip (.npz) nor an .npy
        raise DataError(f"{path}: not an .npz of arrays (a file of another kind); give an .npz with "
                        f"{', '.join(ARRAYS)}, or a folder of class folders")
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: not an .npz of arrays ({reason}); give an .npz with {', '.join(ARRAYS)}, or a "
                        "folder of class folders") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: a single array (.npy), not an .npz; save x_train, y_train, x_test and y_test "
                        "together with numpy.savez")
    with z:
        missing = [k for k in ARRAYS if k not in z.files]
        if missing:
            raise DataError(f"{path}: missing the array{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                            f"(it holds {', '.join(z.files) or 'none'}); save all of {', '.join(ARRAYS)}")
        arrays = {}
        for k in (*ARRAYS, "classes"):
            if k not in z.files:
                continue
            try:
                arrays[k] = z[k]
            except ValueError:  # an object array: reading it would unpickle
                raise DataError(f"{path}: its array {k} holds Python objects, which are not read (they could run "
                                "code: allow_pickle=False); save numbers, and the class names as strings") from None
            except (OSError, EOFError, zipfile.BadZipFile) as exc:
                raise DataError(f"{path}: its array {k} cannot be read ({exc}); the file is damaged") from None
    classes = arrays.get("classes")
    if classes is not None:
        if classes.ndim != 1 or classes.dtype.kind not in "US":
            raise DataError(f"{path}: its classes array is {classes.dtype} of shape {classes.shape}; give the class "
                            "names as a vector of strings, one per label")
        classes = [str(c) for c in classes.astype(str)]
    about = f"{path} (arrays)"
    return checked(Data(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], Path(path).name,
                        about, classes), str(path))


def checked(data: Data, where: str = "the data") -> Data:
    """`data` if a network can train on it: examples [n, f], [n, h, w] or [n, h, w, c] as uint8 or floats,
    train and test alike, one label each, every label a class; else one DataError line naming what is wrong."""
    for split in ("train", "test"):
        x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
        x = np.asarray(x)
        if x.dtype != np.uint8 and x.dtype.kind != "f":
            raise DataError(f"{where}: x_{split} is {x.dtype}; give images as uint8 (0..255) or floats in [0, 1], "
                            "or feature vectors as floats")
        if x.ndim not in (2, 3, 4):
            raise DataError(f"{where}: x_{split} has shape {x.shape}; give [n, features], [n, height, width] or "
                            "[n, height, width, channels]")
        if len(x) != len(y):
            raise DataError(f"{where}: x_{split} holds {len(x)} examples but y_{split} {len(y)} labels; give one "
                            "label per example")
    if np.shape(data.train_x)[1:] != np.shape(data.test_x)[1:]:
        raise DataError(f"{where}: the train examples are {np.shape(data.train_x)[1:]}, the test examples "
                        f"{np.shape(data.test_x)[1:]}; give both splits the same shape")
    if len(data.train_y) == 0:
        raise DataError(f"{where}: no training examples; give at least one")
    if len(data.classes) < 2 or len(set(data.classes)) != len(data.classes):
        raise DataError(f"{where}: the class names {list(data.classes)[:5]} are not two or more distinct names; "
                        "give one name per class")
    for split in ("train", "test"):
        y = getattr(data, f"{split}_y")
        bad = np.flatnonzero((y < 0) | (y >= len(data.classes)))
        if bad.size:
            raise DataError(f"{where}: y_{split}[{bad[0]}] is {y[bad[0]]}, outside the {len(data.classes)} classes "
                            f"(0..{len(data.classes) - 1}); give labels 0..{len(data.classes) - 1}, or name every "
                            "class")
    return data
