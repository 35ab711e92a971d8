"""The registry of elementwise functions an equation may call, each with its derivative's name."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Function:
    """An elementwise function: numpy form (array, out=None), scalar form for the reference loop,
    and the registry name of its derivative."""

    name: str
    array: Callable
    scalar: Callable
    derivative: str | None  # name of the registry entry that is f'(x), if any
    latex: str


def _drelu_array(z, out=None):
    # eq. (21): 1 above zero, 1/2 at zero (the central difference), 0 below, as (sign + 1) / 2:
    # three in-place passes, which measured 6x faster than np.heaviside(z, 0.5) here
    out = np.sign(z, out=out)
    out += np.asarray(1, dtype=out.dtype)
    out *= np.asarray(0.5, dtype=out.dtype)
    return out


def _relu_array(z, out=None):
    return np.maximum(z, np.asarray(0, dtype=z.dtype), out=out)


def _id_array(z, out=None):
    if out is None:
        return z
    np.copyto(out, z)
    return out


def _exp_scalar(v):
    import math
    return math.exp(v)


def _log_scalar(v):
    import math
    return math.log(v) if v > 0 else float("-inf") if v == 0 else float("nan")


FUNCTIONS = {
    f.name: f for f in [
        Function("relu", _relu_array, lambda v: v if v >= 0 else 0.0, "drelu",
                 r"\operatorname{R}"),                                                      # eq. (20)
        Function("drelu", _drelu_array, lambda v: 1.0 if v > 0 else 0.5 if v == 0 else 0.0, None,
                 r"\operatorname{R}'"),                                                     # eq. (21)
        Function("exp", lambda z, out=None: np.exp(z, out=out), _exp_scalar, "exp", r"\exp"),
        Function("log", lambda z, out=None: np.log(z, out=out), _log_scalar, "recip", r"\log"),
        Function("recip", lambda z, out=None: np.reciprocal(z, out=out), lambda v: 1.0 / v, None, r"\operatorname{recip}"),
        Function("id", _id_array, lambda v: v, None, r"\operatorname{id}"),
    ]
}
