"""Optimizers by name: the report's batch-averaged SGD (eq. 6-9), momentum and Adam.

Each updates parameters in place from batch-mean gradients and keeps its state as flat
arrays, so a checkpoint can hold it and a resumed run continues exactly.  Where
notation/runtime/fused.c is built, all arrays are updated in one pass, one C call per worker over
tables made once (notation.runtime.foreach: vit's 67 arrays 3.4 ms a step become about 0.1).
Without it numpy's passes run, to the same bits, block by block so each block's temporaries
stay in cache (Adam: 20 ms a step at batch 64 becomes 11), the blocks shared between the
machine's cores (notation.runtime.parallel.each; 12 ms becomes 7).
"""
from __future__ import annotations

import threading

import numpy as np

from notation.runtime import foreach, parallel

from ..errors import TrainingError

BLOCK = 1 << 17  # entries per block: the block's five arrays (2.5 MiB in float32) stay in cache


def flush_subnormal(x: np.ndarray, scratch: np.ndarray, mask: np.ndarray) -> None:
    """x's entries of magnitude under its dtype's smallest normal number set to +0 in place (NaN kept), as
    notation/runtime/fused.c's FLUSH; scratch (x's dtype) and mask (bool) are workspaces of x's size.  An
    optimizer's state decaying toward 0 would otherwise stay subnormal (a slow path on many processors)."""
    np.abs(x, out=scratch)
    np.less(scratch, np.finfo(x.dtype).tiny, out=mask)
    np.copyto(x, 0, where=mask)


def _flat(a: np.ndarray) -> np.ndarray:
    """`a` as one flat view (never a copy: an update must land in the array itself)."""
    if not a.flags.c_contiguous:
        raise ValueError(f"optimizer needs C-contiguous arrays, got strides {a.strides}")
    return a.reshape(-1)


def _blocks(grad, *updated):
    """Matching flat slices of the gradient and the arrays updated in place, BLOCK at a time."""
    flat = [np.ravel(grad)] + [_flat(a) for a in updated]
    for s in range(0, flat[0].size, BLOCK):
        yield tuple(f[s:s + BLOCK] for f in flat)


def decays(w: np.ndarray) -> bool:
    """Whether weight decay shrinks w: weights (two or more axes) do; biases, gains and shifts do not."""
    return w.ndim >= 2


class SGD:
    """w += delta with delta = -eta * dJ/dw (eq. 6-9: the learning rate rides in delta)."""

    name = "sgd"
    weight_decay = 0.0  # decoupled (Loshchilov & Hutter 2019): w *= 1 - lr * weight_decay before each update

    def __init__(self, params, lr):
        self.lr = lr
        self.t = 0
        self.scratch = {}  # one block of workspace per thread, reused: no allocation per step
        self.table = None  # notation.runtime.foreach's tables of the arrays, made at the first step

    def _fused(self, params, grads, states, *scalars) -> list:
        """The update in fused.c over all arrays at once (self.name's rule, states: the optimizer's
        {key: array} beside w, in the rule's order); the (key, w, g) it left for numpy's passes: all
        where the library is not at hand, else those whose gradient it cannot take (another dtype)."""
        keys, ws, gs = [], [], []
        for layer, ps in params.items():
            gl = grads[layer]
            for p, w in ps.items():
                keys.append(f"{layer}.{p}")
                ws.append(w)
                gs.append(gl[p])
        if self.table is None or not self.table.holds(ws):
            self.table = foreach.Updates(self.name, [(w, *(s[k] for s in states)) for k, w in zip(keys, ws)],
                                         [decays(w) for w in ws])
        shrink = 1 - self.lr * self.weight_decay if self.weight_decay else None
        return [(keys[k], ws[k], gs[k]) for k in self.table.run(gs, shrink, *scalars)]

    def _scratch(self, like: np.ndarray, dtype=None) -> np.ndarray:
        """This thread's workspace for one block `like` (BLOCK entries at most, but for a parameter
        the fused update declined), in like's dtype or `dtype`, grown as needed and then reused."""
        need, dtype = like.size, np.dtype(dtype or like.dtype)
        key = (threading.get_ident(), dtype.kind)  # a float workspace and a bool one (masks)
        s = self.scratch.get(key)
        if s is None or s.dtype != dtype or s.size < need:
            s = self.scratch[key] = np.empty(need, dtype)
        return s

    def _shrink(self, w: np.ndarray):
        """1 - lr * weight_decay in w's dtype when weight decay shrinks w this step, else None."""
        if self.weight_decay and decays(w):
            return np.asarray(1 - self.lr * self.weight_decay, w.dtype)
        return None

    def _flush(self, x: np.ndarray, scratch: np.ndarray) -> None:
        """flush_subnormal(x) with this thread's workspace (scratch: a float block of x's size, free)."""
        flush_subnormal(x, scratch, self._scratch(x, bool)[:x.size])

    def step(self, params, grads):
        self.t += 1
        for _, w, g in self._fused(params, grads, (), self.lr):
            lr, s, shrink = np.asarray(self.lr, w.dtype), self._scratch(w), self._shrink(w)
            for gb, wb in _blocks(g, w):
                sb = s[:wb.size]
                if shrink is not None:
                    wb *= shrink
                np.multiply(gb, lr, out=sb)
                wb -= sb

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
        for key, w, g in self._fused(params, grads, (self.v,), self.mu, self.lr):
            mu, lr, s = np.asarray(self.mu, w.dtype), np.asarray(self.lr, w.dtype), self._scratch(w)
            shrink = self._shrink(w)
            for gb, wb, vb in _blocks(g, w, self.v[key]):
                sb = s[:wb.size]
                if shrink is not None:
                    wb *= shrink
                vb *= mu
                np.multiply(gb, lr, out=sb)
                vb -= sb
                self._flush(vb, sb)  # a dead unit's velocity decays by mu to subnormals: stored as 0
                wb += vb

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

    def step(self, params, grads):
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        step = self.lr * np.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        work = []
        for key, w, g in self._fused(params, grads, (self.m, self.v), b1, b2, self.eps, step):
            # scalars in the weights' own dtype, so float32 stays float32
            scalars = tuple(np.asarray(x, w.dtype) for x in (b1, b2, self.eps, step)) + (self._shrink(w),)
            work += [(block, scalars) for block in _blocks(g, w, self.m[key], self.v[key])]
        parallel.each(self._update, work)  # each block on its own: the same bits however they are shared

    def _update(self, work):
        for (g, w_, m, v), (b1_, b2_, eps, step_, shrink) in work:
            if shrink is not None:
                w_ *= shrink  # AdamW: the decay first, at the scheduled rate, apart from the moments
            sb = self._scratch(w_)[:w_.size]
            # m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
            m -= g
            m *= b1_
            m += g
            self._flush(m, sb)  # as fused.c's FLUSH: a moment under the smallest normal number is stored as 0
            np.multiply(g, g, out=sb)
            v -= sb
            v *= b2_
            v += sb
            self._flush(v, sb)
            # w -= step * m / (sqrt(v) + eps)
            np.sqrt(v, out=sb)
            sb += eps
            np.divide(m, sb, out=sb)
            sb *= step_
            w_ -= sb

    def state(self) -> dict:
        return {"t": np.asarray(self.t), **{f"m/{k}": a for k, a in self.m.items()},
                **{f"v/{k}": a for k, a in self.v.items()}}

    def load_state(self, state):
        super().load_state(state)
        for k in self.m:
            self.m[k][...] = state[f"m/{k}"]
            self.v[k][...] = state[f"v/{k}"]


OPTIMIZERS = {cls.name: cls for cls in (SGD, Momentum, Adam)}


def register_optimizer(cls) -> type:
    """Make the setting `optimizer` NAME (training: {optimizer: NAME} in a spec) use cls, NAME = cls.name:
    cls(params, lr) with step(params, grads), state() and load_state(state), as SGD, Momentum and Adam
    here; the trainer sets its `lr` before each step (the schedule's rate). Usable as a class decorator."""
    name = getattr(cls, "name", None)
    if not (isinstance(name, str) and name.isidentifier()) or name in OPTIMIZERS:
        raise TrainingError(f"optimizer name {name!r} must be a new identifier (taken: {sorted(OPTIMIZERS)})")
    OPTIMIZERS[name] = cls
    return cls


def decaying(opt, weight_decay: float):
    """opt with decoupled weight decay, or a TrainingError if its rule has none (a registered optimizer that
    does not derive from SGD nor declare `weight_decay`)."""
    if not hasattr(opt, "weight_decay"):
        raise TrainingError(f"optimizer {opt.name!r} has no weight decay; leave `weight_decay` at 0, or give "
                            f"it a `weight_decay` attribute its step applies")
    opt.weight_decay = weight_decay
    return opt


def make(name, params, lr):
    """The optimizer called `name`, or a TrainingError listing the valid names."""
    try:
        return OPTIMIZERS[name](params, lr)
    except KeyError:
        raise TrainingError(f"optimizer {name!r} not found, valid options are {sorted(OPTIMIZERS)}") from None
