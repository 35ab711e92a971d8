"""Data augmentation by name: random mirror images, shifts and erased rectangles of a training batch.

Each step's draws come from a generator seeded by (seed, epoch, batch) alone, so a resumed run
sees exactly the images an uninterrupted one would; test images are never augmented.
"""
from __future__ import annotations

import re

import numpy as np

from ..errors import TrainingError

SHIFT = 2  # pixels: `shift` moves at most this far in each direction, the edge filled with zeros (black)
LONGEST_SHIFT = 9  # `shift1` to `shift9` choose the distance
ERASE = 0.5, (0.02, 0.4), 0.3  # Zhong et al. 2020: probability, area as a fraction of the image, least aspect ratio


def flip(x: np.ndarray, rng) -> np.ndarray:
    """Mirror about half of the images left to right (a shirt is a shirt either way round)."""
    mirrored = rng.random(len(x)) < 0.5
    x[mirrored] = x[mirrored, :, ::-1]
    return x


def shift(x: np.ndarray, rng, distance: int = SHIFT) -> np.ndarray:
    """Move each image by up to `distance` pixels down/up and right/left, filling the edge with zeros."""
    b, h, w = x.shape[:3]
    padded = np.zeros((b, h + 2 * distance, w + 2 * distance) + x.shape[3:], x.dtype)
    padded[:, distance:distance + h, distance:distance + w] = x
    dy, dx = rng.integers(0, 2 * distance + 1, size=(2, b))
    rows = (dy[:, None] + np.arange(h))[:, :, None]
    cols = (dx[:, None] + np.arange(w))[:, None, :]
    x[...] = padded[np.arange(b)[:, None, None], rows, cols]
    return x


def erase(x: np.ndarray, rng) -> np.ndarray:
    """Random erasing (Zhong et al. 2020): in about half of the images, a rectangle of 2-40% of the
    image, of aspect ratio 0.3 to 1/0.3, filled with uniform noise in [0, 1) (cut at the image's edges)."""
    b, h, w = x.shape[:3]
    p, (least, most), ratio = ERASE
    chosen = rng.random(b) < p
    area = rng.uniform(least, most, b) * h * w
    aspect = np.exp(rng.uniform(np.log(ratio), -np.log(ratio), b))
    eh = np.clip(np.rint(np.sqrt(area * aspect)), 1, h).astype(int)
    ew = np.clip(np.rint(np.sqrt(area / aspect)), 1, w).astype(int)
    top = (rng.random(b) * (h - eh + 1)).astype(int)
    left = (rng.random(b) * (w - ew + 1)).astype(int)
    rows = np.arange(h)[None, :] - top[:, None]
    cols = np.arange(w)[None, :] - left[:, None]
    inside = ((rows >= 0) & (rows < eh[:, None]))[:, :, None] & ((cols >= 0) & (cols < ew[:, None]))[:, None, :]
    inside &= chosen[:, None, None]
    noise = rng.random(x.shape, dtype=np.float64).astype(x.dtype, copy=False)
    x[inside] = noise[inside]
    return x


AUGMENTATIONS = {"flip": flip, "shift": shift, "erase": erase}
SHIFT_N = re.compile(r"shift([1-9])")  # shift1 ... shift9: a shift by up to that many pixels


def known(name: str) -> bool:
    return name in AUGMENTATIONS or SHIFT_N.fullmatch(name) is not None


def parse(text) -> tuple:
    """'flip,shift1' (or a list of names) as a tuple of names; 'none' or '' as no augmentation."""
    names = text if isinstance(text, (list, tuple)) else str(text).replace("+", ",").split(",")
    names = tuple(str(n).strip() for n in names if str(n).strip() not in ("", "none"))
    unknown = [n for n in names if not known(n)]
    if unknown:
        raise TrainingError(f"augmentation {unknown[0]!r} not found, valid options are "
                            f"{sorted(AUGMENTATIONS)} or shift1 to shift{LONGEST_SHIFT} (by up to that many "
                            f"pixels; shift is shift{SHIFT}), joined by commas, or none")
    return names


def batch_generator(seed: int, epoch: int, batch: int):
    """The generator of one step's augmentation: a function of where the run is, nothing else."""
    return np.random.default_rng([seed, epoch, batch, 2])


def apply(names: tuple, x: np.ndarray, rng) -> np.ndarray:
    """The batch x (B, height, width, channels), changed in place by each augmentation in turn."""
    for name in names:
        distance = SHIFT_N.fullmatch(name)
        x = shift(x, rng, int(distance[1])) if distance else AUGMENTATIONS[name](x, rng)
    return x
