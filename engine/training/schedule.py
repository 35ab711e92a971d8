"""Learning-rate schedules by name: the rate of each step as a pure function of the step.

A schedule reads nothing but (lr, step, total steps), so a resumed run takes exactly the rates an
uninterrupted one would, and a checkpoint needs to keep nothing for it.
"""
from __future__ import annotations

import math

from ..errors import TrainingError


def constant(lr: float, step: int, total: int) -> float:
    """The same rate at every step (the report's SGD, eq. 6-9)."""
    return lr


def cosine(lr: float, step: int, total: int) -> float:
    """Half a cosine from lr at the first step down to 0 after the last (Loshchilov & Hutter 2017)."""
    return 0.5 * lr * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


SCHEDULES = {"constant": constant, "cosine": cosine}
OVER_EPOCHS = {"cosine"}  # planned over the run's epochs: a resume may not change them


def get(name: str):
    """The schedule called `name`, or a TrainingError listing the valid names."""
    try:
        return SCHEDULES[name]
    except (KeyError, TypeError):
        raise TrainingError(f"schedule {name!r} not found, valid options are {sorted(SCHEDULES)}") from None
