"""The steps a compiled block runs: one forward equation, one state update, one Jacobian equation,
each with its compiled run and the tensors it reads."""
from __future__ import annotations

from typing import NamedTuple

from notation import Run


class ForwardStep(NamedTuple):
    """One forward equation, compiled: the tensor it writes, where its max keeps its positions
    (or None), the run, and the tensors it reads."""

    result: str
    mask: str | None
    run: Run
    reads: tuple


class UpdateStep(NamedTuple):
    """One state update of the training forward (a running mean): the state it writes, run, reads."""

    state: str
    run: Run
    reads: tuple


class BackwardStep(NamedTuple):
    """One Jacobian equation, compiled: the tensor whose gradient it serves (`target`, e.g. "x"),
    the tensor it writes (`dx`, or an intermediate), the run, and the tensors it reads."""

    target: str
    result: str
    run: Run
    reads: tuple
