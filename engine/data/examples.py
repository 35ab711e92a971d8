"""The examples a run trains and tests on: a data set's splits, cut as the settings say, and a batch
as the network takes it."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json

import numpy as np

from ..errors import DataError, TrainingError, named
from . import datasets

HOLDOUT_SEED = 0  # the holdout split is the same for every seed
LIMIT, TEST_LIMIT = f" ({named('limit')})", f" ({named('test_limit')})"


@dataclasses.dataclass(eq=False)
class Data:
    """Train and test examples -- images [n, h, w, c] or [n, h, w] as uint8 in 0..255 (scaled on the fly)
    or floats in [0, 1], or feature vectors [n, f] -- their class names (default: "0", "1", ... up to the
    largest label) and a sentence saying what they are and where they came from."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    name: str = "arrays"
    about: str = ""
    classes: list | None = None

    def __post_init__(self):
        self.train_y = _labels("train", self.train_y)
        self.test_y = _labels("test", self.test_y)
        if self.classes is None:
            top = max(int(self.train_y.max(initial=0)), int(self.test_y.max(initial=0)))
            self.classes = [str(d) for d in range(max(top + 1, 2))]
        if not self.about:
            self.about = f"{self.name}: train {len(self.train_y)} examples, test {len(self.test_y)} (arrays given)"
        for split in ("train_x", "test_x"):
            _finite(split, getattr(self, split))

    @property
    def shape(self) -> tuple:
        """One example's shape as a network takes it: (h, w, c), grey [n, h, w] as (h, w, 1), or (f,)."""
        shape = tuple(int(n) for n in np.shape(self.train_x)[1:])
        return shape + (1,) if len(shape) == 2 else shape

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 of the examples, their labels and the class names: which data a checkpoint saw (worked
        out once)."""
        h = hashlib.sha256(json.dumps(list(self.classes)).encode())
        for a in (self.train_x, self.train_y, self.test_x, self.test_y):
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(memoryview(a).cast("B") if a.size else b"")
        return h.hexdigest()


def _labels(split, y) -> np.ndarray:
    """Labels as int64; integers only (floats that are whole numbers pass), one line otherwise."""
    y = np.asarray(y)
    if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise DataError(f"the {split} labels are {y.dtype} of shape {y.shape}; give one whole number per example "
                        "(a vector of class indices 0, 1, ...)")
    return y.astype(np.int64)


def _finite(split, images) -> None:
    """Refuse NaN or infinite pixels: they would train to a NaN loss, misread as a learning rate too large."""
    images = np.asarray(images)
    if images.dtype.kind not in "fc" or np.isfinite(images).all():
        return
    bad = np.flatnonzero(~np.isfinite(images.reshape(len(images), -1)).all(axis=1))
    raise DataError(f"the {split} images hold NaN or infinite values ({len(bad)} example"
                    f"{'' if len(bad) == 1 else 's'}, the first at index {bad[0]}); give finite pixels "
                    "(uint8 0..255 or floats in [0, 1])")


def holdout_split(images, labels, holdout: int):
    """(train indices, test indices) of one split: `holdout` examples drawn by a fixed shuffle, both sorted."""
    n = len(labels)
    if not 0 < holdout < n:
        raise TrainingError(f"{named('holdout')} {holdout} must leave examples to train on: the split has {n}")
    perm = np.random.default_rng(HOLDOUT_SEED).permutation(n)
    return np.sort(perm[holdout:]), np.sort(perm[:holdout])


def load_data(config, data_dir=None, download=True, log=print, train=True) -> Data:
    """The data set of `config` (a training Config: dataset, holdout, limit, test_limit), limited as it
    says, with a sentence on its sizes and sources.

    train=False loads the test examples alone (for evaluating a checkpoint)."""
    name = config.dataset
    spec = datasets.DATASETS[name]
    classes = list(spec.classes)
    if config.holdout is not None:
        test = datasets.load(name, "test", data_dir=data_dir, download=download)
        train_idx, test_idx = holdout_split(test.images, test.labels, config.holdout)
        train_idx, test_idx = train_idx[:config.limit if train else 0], test_idx[:config.test_limit]
        about = (f"{spec.title} ({name}), its test split alone ({len(test)} examples, from {test.source}) cut by "
                 f"{named('holdout')} {config.holdout} (a fixed shuffle): "
                 + (f"train on {len(train_idx)}{LIMIT if len(train_idx) < len(test) - config.holdout else ''}, "
                    if train else "")
                 + f"test on {len(test_idx)}{TEST_LIMIT if len(test_idx) < config.holdout else ''}")
        return Data(test.images[train_idx], test.labels[train_idx], test.images[test_idx], test.labels[test_idx],
                    name, about, classes)
    if not train:
        test = datasets.load(name, "test", data_dir=data_dir, download=download)
        n_test = min(config.test_limit or len(test), len(test))
        about = (f"{spec.title} ({name}): test on {n_test} of {len(test)}"
                 f"{TEST_LIMIT if n_test < len(test) else ''}, from {test.source}")
        return Data(test.images[:0], test.labels[:0], test.images[:n_test], test.labels[:n_test], name, about, classes)
    only_test = datasets.locate(name, "test", data_dir) if datasets.locate(name, "train", data_dir) is None else None
    if only_test is None:
        train_split = datasets.load(name, "train", data_dir=data_dir, download=download)
    else:
        note = f"{name}: only the test split is here ({only_test}), not the train split"
        holdout = f"{named('holdout')} N trains on the test split, holding N of its examples out for testing"
        if not download:
            raise TrainingError(f"{note}; {holdout}; or get the train files: {spec.how_to_get}")
        log(f"{note}; trying to download it ({holdout})")
        try:
            train_split = datasets.load(name, "train", data_dir=data_dir, download=True)
        except DataError as exc:
            raise DataError(f"{note}, and downloading it failed; {holdout}. In detail: {exc.one_line()}") from None
    test_split = datasets.load(name, "test", data_dir=data_dir, download=download)
    n_train = min(config.limit or len(train_split), len(train_split))
    n_test = min(config.test_limit or len(test_split), len(test_split))
    where = (f"both from {train_split.source}" if train_split.source == test_split.source
             else f"from {train_split.source} and {test_split.source}")
    about = (f"{spec.title} ({name}): train on {n_train} of {len(train_split)}"
             f"{LIMIT if n_train < len(train_split) else ''}, test on {n_test} of {len(test_split)}"
             f"{TEST_LIMIT if n_test < len(test_split) else ''}; {where}")
    return Data(train_split.images[:n_train], train_split.labels[:n_train], test_split.images[:n_test],
                test_split.labels[:n_test], name, about, classes)


def inputs(images: np.ndarray, shape: tuple, dtype) -> np.ndarray:
    """A batch as the network takes it: (B, *shape) in dtype, uint8 pixels scaled to [0, 1]."""
    dtype = np.dtype(dtype)
    x = images.astype(dtype) / dtype.type(255) if images.dtype == np.uint8 else images.astype(dtype, copy=False)
    return x.reshape((len(images),) + tuple(shape))
