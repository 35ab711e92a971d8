"""Parameter initialisers by name, seeded: He for ReLU layers, Glorot for the rest;
zeros and ones for biases, scales and running statistics; small normal entries for embeddings."""
from __future__ import annotations

import numpy as np

from ..errors import UserError


def _fans(shape):
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    fan_in = receptive * shape[-2] if len(shape) >= 2 else shape[0]
    fan_out = receptive * shape[-1]
    return fan_in, fan_out


def he(rng, shape):
    fan_in, _ = _fans(shape)
    return rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)


def glorot(rng, shape):
    fan_in, fan_out = _fans(shape)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape)


def normal(rng, shape):
    """N(0, 0.02^2), as BERT and the Vision Transformer start their embeddings."""
    return rng.standard_normal(shape) * 0.02


def zeros(rng, shape):
    return np.zeros(shape)


def ones(rng, shape):
    return np.ones(shape)


INITIALISERS = {"he": he, "glorot": glorot, "normal": normal, "zeros": zeros, "ones": ones}


def register_initialiser(name: str, init) -> None:
    """Make `init: name` usable in layers.yaml: init(rng, shape) returns an array of that shape."""
    if not (isinstance(name, str) and name.isidentifier()) or name in INITIALISERS:
        raise UserError(f"initialiser name {name!r} must be a new identifier (taken: {sorted(INITIALISERS)})")
    INITIALISERS[name] = init
