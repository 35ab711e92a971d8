"""Data augmentation by name: random mirror images and shifts of a training batch.

Each step's draws come from a generator seeded by (seed, epoch, batch) alone, so a resumed run
sees exactly the images an uninterrupted one would; test images are never augmented.
"""
from __future__ import annotations

import numpy as np

from ..errors import TrainingError

SHIFT = 2  # pixels: at most this far in each direction, the edge filled with zeros (black)


def flip(x: np.ndarray, rng) -> np.ndarray:
    """Mirror about half of the images left to right (a shirt is a shirt either way round)."""
    mirrored = rng.random(len(x)) < 0.5
    x[mirrored] = x[mirrored, :, ::-1]
    return x


def shift(x: np.ndarray, rng) -> np.ndarray:
    """Move each image by up to SHIFT pixels down/up and right/left, filling the edge with zeros."""
    b, h, w = x.shape[:3]
    padded = np.zeros((b, h + 2 * SHIFT, w + 2 * SHIFT) + x.shape[3:], x.dtype)
    padded[:, SHIFT:SHIFT + h, SHIFT:SHIFT + w] = x
    dy, dx = rng.integers(0, 2 * SHIFT + 1, size=(2, b))
    rows = (dy[:, None] + np.arange(h))[:, :, None]
    cols = (dx[:, None] + np.arange(w))[:, None, :]
    x[...] = padded[np.arange(b)[:, None, None], rows, cols]
    return x


AUGMENTATIONS = {"flip": flip, "shift": shift}


def parse(text) -> tuple:
    """'flip,shift' (or a list of names) as a tuple of names; 'none' or '' as no augmentation."""
    names = text if isinstance(text, (list, tuple)) else str(text).replace("+", ",").split(",")
    names = tuple(n.strip() for n in names if str(n).strip() not in ("", "none"))
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise TrainingError(f"augmentation {unknown[0]!r} not found, valid options are "
                            f"{sorted(AUGMENTATIONS)} (joined by commas), or none")
    return names


def batch_generator(seed: int, epoch: int, batch: int):
    """The generator of one step's augmentation: a function of where the run is, nothing else."""
    return np.random.default_rng([seed, epoch, batch, 2])


def apply(names: tuple, x: np.ndarray, rng) -> np.ndarray:
    """The batch x (B, height, width, channels), changed in place by each augmentation in turn."""
    for name in names:
        x = AUGMENTATIONS[name](x, rng)
    return x
