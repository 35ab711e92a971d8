"""Evaluation: mean cross-entropy, accuracy and the confusion matrix of a network on a whole set."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..data.examples import inputs
from ..errors import TrainingError, named


@dataclasses.dataclass
class Evaluation:
    """Mean cross-entropy, accuracy and the confusion matrix (rows: true class, columns: predicted)."""

    loss: float
    accuracy: float
    confusion: np.ndarray
    count: int


def probabilities(net, x, test_augment: str = "none") -> np.ndarray:
    """The network's class probabilities for a batch x (B, height, width, channels) in eval mode; with
    test_augment "flip", the mean of x's and its mirror images' (left and right swapped, as the
    training's flip does)."""
    needs_images(net, "test_augment", test_augment)
    probs = net.forward(x)
    if test_augment == "flip":
        probs = (probs + net.forward(np.ascontiguousarray(x[:, :, ::-1]))) / 2
    return probs


def needs_images(net, setting: str, value: str) -> None:
    """One line where a setting that changes images (`augment`, `test_augment`) is given to a network
    that takes none."""
    if value != "none" and len(net.input_shape) != 3:
        verb = "mirrors" if value == "flip" else "moves"
        raise TrainingError(f"{named(setting)} {value} {verb} images, but network {net.name!r} takes inputs of shape "
                            f"{net.input_shape}, not (height, width, channels); use {named(setting)} none")


def evaluate(net, images, labels, batch_size: int, test_augment: str = "none") -> Evaluation:
    """The network on a whole set, in batches of `batch_size` (no more than the set holds; the last
    padded: nothing is re-planned), each image seen as `test_augment` says."""
    labels = np.asarray(labels).astype(np.int64)
    n, classes = len(labels), net.classes
    batch_size = max(1, min(batch_size, n))
    confusion = np.zeros((classes, classes), dtype=np.int64)
    loss = 0.0
    for start in range(0, n, batch_size):
        x = inputs(images[start:start + batch_size], net.input_shape, net.dtype)
        m = len(x)
        if m < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - m,) + x.shape[1:], x.dtype)])
        probs = probabilities(net, x, test_augment)[:m]
        y = labels[start:start + m]
        p = probs[np.arange(m), y].astype(np.float64)
        loss -= float(np.log(np.maximum(p, np.finfo(np.float64).tiny)).sum())
        np.add.at(confusion, (y, probs.argmax(axis=1)), 1)
    return Evaluation(loss / max(n, 1), float(np.trace(confusion)) / max(n, 1), confusion, n)


def format_confusion(confusion: np.ndarray, classes) -> str:
    """The confusion matrix as text, rows true classes, columns predicted, with per-class recall."""
    k = len(confusion)
    names = [f"{i} {classes[i]}" if i < len(classes) and classes[i] != str(i) else str(i) for i in range(k)]
    left = max(len(s) for s in names)
    width = max(4, len(str(int(confusion.max()))) + 1)
    lines = ["confusion matrix (rows: true class, columns: predicted)",
             " " * left + "".join(f"{j:>{width}}" for j in range(k)) + "  recall"]
    for i in range(k):
        total = confusion[i].sum()
        recall = f"{confusion[i, i] / total:7.1%}" if total else "      -"
        lines.append(f"{names[i]:<{left}}" + "".join(f"{int(v):>{width}}" for v in confusion[i]) + " " + recall)
    return "\n".join(lines)

