"""Learning-rate schedules by name: the rate of each step as a pure function of the step.

A schedule reads nothing but (lr, step, total steps), and a warm-up nothing more than its own
length, so a resumed run takes exactly the rates an uninterrupted one would, and a checkpoint
needs to keep nothing for it.
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


def warmed(rate, warmup_steps: int):
    """`rate` after a linear warm-up (Goyal et al. 2017): step s < warmup_steps takes lr (s + 1) / warmup_steps,
    the steps after it take rate over the rest of the run, as if the run began there; still a pure function."""
    if not warmup_steps:
        return rate

    def warming(lr: float, step: int, total: int) -> float:
        if step < warmup_steps:
            return lr * (step + 1) / warmup_steps
        return rate(lr, step - warmup_steps, total - warmup_steps)
    return warming


def get(name: str):
    """The schedule called `name`, or a TrainingError listing the valid names."""
    try:
        return SCHEDULES[name]
    except (KeyError, TypeError):
        raise TrainingError(f"schedule {name!r} not found, valid options are {sorted(SCHEDULES)}") from None
