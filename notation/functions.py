"""The registry of elementwise functions an equation may call, each with its derivative's name."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Function:
    """An elementwise function: numpy form, scalar form for the reference loop, its derivative."""

    name: str
    array: Callable
    scalar: Callable
    derivative: str | None  # name of the registry entry that is f'(x), if any
    latex: str


def _drelu_array(z):
    # eq. (21): 1 above zero, 1/2 at zero (the central difference), 0 below.
    return (np.sign(z) + 1) * np.asarray(0.5, dtype=z.dtype)


def _exp_scalar(v):
    import math
    return math.exp(v)


def _log_scalar(v):
    import math
    return math.log(v) if v > 0 else float("-inf") if v == 0 else float("nan")


FUNCTIONS = {
    f.name: f for f in [
        Function("relu", lambda z: np.maximum(z, 0), lambda v: v if v >= 0 else 0.0, "drelu",
                 r"\operatorname{R}"),                                                      # eq. (20)
        Function("drelu", _drelu_array, lambda v: 1.0 if v > 0 else 0.5 if v == 0 else 0.0, None,
                 r"\operatorname{R}'"),                                                     # eq. (21)
        Function("exp", np.exp, _exp_scalar, "exp", r"\exp"),
        Function("log", np.log, _log_scalar, "recip", r"\log"),
        Function("recip", np.reciprocal, lambda v: 1.0 / v, None, r"\operatorname{recip}"),
        Function("id", lambda z: z, lambda v: v, None, r"\operatorname{id}"),
    ]
}


def lookup(name: str) -> Function:
    """The registered function, or a KeyError listing the valid names (opt_einsum's style)."""
    try:
        return FUNCTIONS[name]
    except KeyError:
        raise KeyError(f"function {name!r} not found, valid options are {sorted(FUNCTIONS)}") from None
