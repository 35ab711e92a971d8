"""Optimizers by name: the report's batch-averaged SGD (eq. 6-9), momentum and Adam.

Each updates parameters in place from batch-mean gradients and keeps its state as flat
arrays, so a checkpoint can hold it and a resumed run continues exactly.
"""
from __future__ import annotations

import numpy as np


class SGD:
    """w += delta with delta = -eta * dJ/dw (eq. 6-9: the learning rate rides in delta)."""

    name = "sgd"

    def __init__(self, params, lr):
        self.lr = lr
        self.t = 0

    def step(self, params, grads):
        self.t += 1
        for layer, ps in params.items():
            for p, w in ps.items():
                w -= np.asarray(self.lr, w.dtype) * grads[layer][p]

    def state(self) -> dict:
        return {"t": np.asarray(self.t)}

    def load_state(self, state):
        self.t = int(state["t"])


class Momentum(SGD):
    """Heavy-ball momentum: v = mu v - eta g; w += v."""

    name = "momentum"

    def __init__(self, params, lr, mu=0.9):
        super().__init__(params, lr)
        self.mu = mu
        self.v = {f"{l}.{p}": np.zeros_like(w) for l, ps in params.items() for p, w in ps.items()}

    def step(self, params, grads):
        self.t += 1
        for layer, ps in params.items():
            for p, w in ps.items():
                v = self.v[f"{layer}.{p}"]
                v *= np.asarray(self.mu, w.dtype)
                v -= np.asarray(self.lr, w.dtype) * grads[layer][p]
                w += v

    def state(self) -> dict:
        return {"t": np.asarray(self.t), **{f"v/{k}": v for k, v in self.v.items()}}

    def load_state(self, state):
        super().load_state(state)
        for k in self.v:
            self.v[k][...] = state[f"v/{k}"]


class Adam(SGD):
    """Adam (Kingma & Ba), bias-corrected first and second moments."""

    name = "adam"

    def __init__(self, params, lr, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(params, lr)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m = {f"{l}.{p}": np.zeros_like(w) for l, ps in params.items() for p, w in ps.items()}
        self.v = {k: np.zeros_like(m) for k, m in self.m.items()}
        self.scratch = {k: np.empty_like(m) for k, m in self.m.items()}  # reused: no allocation per step

    def step(self, params, grads):
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        step = self.lr * np.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        for layer, ps in params.items():
            for p, w in ps.items():
                g = grads[layer][p]
                key = f"{layer}.{p}"
                m, v, s = self.m[key], self.v[key], self.scratch[key]
                one = lambda x: np.asarray(x, w.dtype)  # noqa: E731 - keep float32 float32
                # m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
                m -= g
                m *= one(b1)
                m += g
                np.multiply(g, g, out=s)
                v -= s
                v *= one(b2)
                v += s
                # w -= step * m / (sqrt(v) + eps)
                np.sqrt(v, out=s)
                s += one(self.eps)
                np.divide(m, s, out=s)
                s *= one(step)
                w -= s

    def state(self) -> dict:
        return {"t": np.asarray(self.t), **{f"m/{k}": a for k, a in self.m.items()},
                **{f"v/{k}": a for k, a in self.v.items()}}

    def load_state(self, state):
        super().load_state(state)
        for k in self.m:
            self.m[k][...] = state[f"m/{k}"]
            self.v[k][...] = state[f"v/{k}"]


OPTIMIZERS = {cls.name: cls for cls in (SGD, Momentum, Adam)}


def make(name, params, lr):
    """The optimizer called `name`, or a ValueError listing the valid names."""
    try:
        return OPTIMIZERS[name](params, lr)
    except KeyError:
        raise ValueError(f"optimizer {name!r} not found, valid options are {sorted(OPTIMIZERS)}") from None
