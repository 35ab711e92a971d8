"""What a trainer is given and what a checkpoint hands it, checked before a step is spent: every field
of a checkpoint within its bounds and every array finite (naming the field, not "try a smaller lr"),
and batch statistics that have more than one value per channel to work from."""
from __future__ import annotations

import math

import numpy as np

from ..errors import CheckpointError, TrainingError, named
from .checkpoint import FIX


def _altered(path, what) -> CheckpointError:
    return CheckpointError(f"{path}: {what}: the file was damaged or altered; {FIX}")


def position(path, meta, epoch, batch, step, steps_per_epoch, epochs) -> None:
    """The position a checkpoint resumes at is one a run can reach: batch within the epoch, epoch within
    the run's epochs (a finished run may hold all of them), step the count of the updates before it."""
    if batch > steps_per_epoch:
        raise _altered(path, f"its batch {batch} lies beyond the epoch's {steps_per_epoch} batches")
    if epoch > epochs:
        raise _altered(path, f"its epoch {epoch} lies beyond the {epochs} epochs it was trained for")
    if step != epoch * steps_per_epoch + batch:
        raise _altered(path, f"its step {step} is not the {epoch * steps_per_epoch + batch} updates of {epoch} "
                             f"epochs of {steps_per_epoch} batches and {batch} more")
    history = meta.get("history")
    if not isinstance(history, list) or len(history) != epoch or \
            not all(isinstance(h, dict) and isinstance(h.get("epoch"), int) for h in history):
        raise _altered(path, f"its history is not a list of {epoch} epoch records")
    sums = meta.get("sums")
    if not isinstance(sums, dict) or not all(isinstance(sums.get(k), (int, float)) and not isinstance(sums.get(k),
                                                                                                       bool)
                                             and math.isfinite(sums[k]) and sums[k] >= 0
                                             for k in ("loss", "seen", "seconds")):
        raise _altered(path, "its running sums (loss, seen, seconds) are not finite numbers >= 0")


def arrays(path, ckpt) -> None:
    """Every array of a checkpoint finite, and the running variances >= 0: NaN weights, moments or
    statistics would read as a divergence (or a test loss of nan) instead of a damaged file."""
    for section, label in ((ckpt.params, "weights"), (ckpt.state, "running statistics")):
        for layer, values in section.items():
            for name, v in values.items():
                _finite(path, f"its {label} are not finite (NaN or infinite) in {layer}.{name}", v)
                if section is ckpt.state and name in VARIANCES and np.issubdtype(np.asarray(v).dtype, np.number) \
                        and (np.asarray(v) < 0).any():
                    raise _altered(path, f"its running variance {layer}.{name} is negative")
    for key, v in ckpt.optim.items():
        _finite(path, f"its optimizer state is not finite (NaN or infinite) in {key}", v)


VARIANCES = ("rv",)  # running variances (batchnorm's state in layers.yaml): never negative


def _finite(path, what, v) -> None:
    v = np.asarray(v)
    if v.dtype.kind in "fc" and not np.isfinite(v).all():
        raise _altered(path, what)


def same_data(path, meta, data) -> None:
    """A checkpoint resumes on the data it was trained on (when it recorded which: its fingerprint)."""
    seen = meta.get("data_fingerprint")
    if seen is not None and seen != data.fingerprint:
        raise CheckpointError(f"{path}: trained on other data (fingerprint {str(seen)[:12]}), not on this {data.name} "
                              f"(fingerprint {data.fingerprint[:12]}); resume on the data it was trained on, or start "
                              f"a new {named('checkpoint')}")


def fits(net, x, y, name="the data") -> None:
    """The examples `x` fit the network's input (feature vectors of its size are reshaped) and every label
    `y` is one of its outputs; one TrainingError line naming both shapes otherwise."""
    if int(np.prod(net.input_shape)) != int(np.prod(np.shape(x)[1:])):
        raise TrainingError(f"network {net.name!r} takes inputs of shape {net.input_shape}, the examples of {name} "
                            f"are {np.shape(x)[1:]}; give data of its shape, or say input: auto in its spec")
    top = int(np.max(y, initial=0))
    if top >= net.classes:
        raise TrainingError(f"network {net.name!r} has {net.classes} outputs, {name} has label {top}")


def statistics(net, batch_size: int, n_train: int) -> None:
    """Refuse a layer with running statistics (batch norm) that sees one value per channel in a training
    batch (PyTorch: "Expected more than 1 value per channel when training"): its variance is 0."""
    if not net.state_shapes:
        return
    last = n_train % batch_size or batch_size  # the smallest batch of an epoch: its last
    smallest = min(batch_size, n_train, last)
    for stage in net.compiled(max(1, min(batch_size, n_train)))[:-1]:
        shapes = stage.layer.state_shapes
        x = stage.layer.shapes.get("x")
        if not shapes or x is None:
            continue
        channels = max(math.prod(s) for s in shapes.values())
        per = math.prod(x[1:]) // max(channels, 1) * smallest
        if per <= 1:
            where = (f"{named('batch_size')} {batch_size}" if smallest == batch_size else
                     f"the last batch of each epoch ({n_train} training examples in batches of {batch_size} leave "
                     f"{smallest})")
            raise TrainingError(f"layer {stage.name!r} takes statistics over the batch, and {where} gives it 1 "
                                f"value per channel (expected more than 1 when training: its variance would be 0); "
                                f"use a larger {named('batch_size')}, or a {named('limit')} that leaves at least 2 "
                                "in the last batch")
