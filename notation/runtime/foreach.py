"""An optimizer's update of all its arrays in one C call per worker (fused.c's SGD, MOMENTUM, ADAM), as
PyTorch's foreach optimizers apply one kernel to a list of tensors ("multi-tensor apply").

The weights and the optimizer's state never move, so their addresses are tabled once, with each
worker's share of the entries; a step only looks up the gradients' addresses, and only those of
gradient arrays it has not seen before.  Per array and per step, numpy's passes cost some 50 us of
calls where the arithmetic of a small array costs a few.  Each entry's float operations are those of
numpy's passes in their order, so how the entries are shared changes no bit.
"""
from __future__ import annotations

import numpy as np

from . import fused, parallel

SPLIT = 1 << 19  # fewer entries in all run on the calling thread (vit's 138,634: 0.08 ms, 0.12 split)


def _segments(sizes, parts: int) -> list:
    """(array, first entry, entries) triples cutting the arrays' entries, end to end, into `parts` nearly
    equal shares: one intp table of triples per share."""
    total, start = sum(sizes), 0
    bounds = [total * i // parts for i in range(parts + 1)]
    shares = [[] for _ in range(parts)]
    for k, n in enumerate(sizes):
        for share, lo, hi in zip(shares, bounds, bounds[1:]):
            lo, hi = max(start, lo), min(start + n, hi)
            if lo < hi:
                share.append((k, lo - start, hi - lo))
        start += n
    return [np.array(share, np.intp).reshape(-1, 3) for share in shares]


class _Group:
    """The arrays of one dtype: their address tables, decay factors and shares of the work."""

    def __init__(self, dtype, members, arrays, decays):
        self.dtype, self.members = dtype, members
        self.sizes = [arrays[k][0].size for k in members]
        self.tables = [np.array([fused.address(arrays[k][j]) for k in members], np.intp) for j in range(len(arrays[0]))]
        self.g = np.zeros(len(members), np.intp)  # the gradients' addresses, 0 where numpy updates
        self.seen = [None] * len(members)  # the gradient arrays those addresses are of (held: never reused)
        self.shrink = np.ones(len(members), dtype)
        self.decays = np.array([decays[k] for k in members], bool)
        self.factor = None  # the decay factor now in self.shrink
        self.shares = {}  # workers -> their tables of segments
        self.left = set()  # members whose gradient the loop cannot take this step
        self.at = [fused.address(t) for t in (self.g, *self.tables, self.shrink)]  # the tables' own addresses

    def gradients(self, grads) -> None:
        """The gradients' addresses: a gradient of another dtype, size or layout is left to numpy."""
        for i, k in enumerate(self.members):
            g = grads[k]
            if g is self.seen[i]:
                continue
            self.seen[i] = g
            fits = isinstance(g, np.ndarray) and g.dtype == self.dtype and g.flags.c_contiguous and \
                g.size == self.sizes[i]
            self.g[i] = fused.address(g) if fits else 0
            (self.left.discard if fits else self.left.add)(k)

    def run(self, kernel, shrink, scalars) -> None:
        if shrink != self.factor:
            self.shrink[:] = 1
            if shrink is not None:
                self.shrink[self.decays] = shrink  # rounded to the dtype, as numpy's passes round it
            self.factor = shrink
        parts = parallel.WORKERS if parallel.enabled() and sum(self.sizes) >= SPLIT else 1
        shares = self.shares.get(parts)
        if shares is None:
            shares = self.shares[parts] = [(len(s), fused.address(s), s) for s in _segments(self.sizes, parts)]
        tables = self.at

        def apply(mine):
            for count, at, _ in mine:
                kernel(count, at, *tables, *scalars)
        parallel.each(apply, shares)


class Updates:
    """One update rule over arrays (w, *state) tabled once, gradients given each step."""

    def __init__(self, rule: str, arrays: list, decays: list):
        """arrays: (w, *state) tuples, updated in place; decays: whether decoupled weight decay shrinks each w."""
        self.rule, self.arrays = rule, arrays
        fit, self.unfit = {}, []
        for k, group in enumerate(arrays):
            w = group[0]
            if w.dtype in fused.FLOATS and all(a.dtype == w.dtype and a.flags.c_contiguous and a.flags.writeable and
                                               a.size == w.size for a in group):
                fit.setdefault(w.dtype, []).append(k)
            else:
                self.unfit.append(k)
        self.groups = [_Group(dtype, members, arrays, decays) for dtype, members in fit.items()]

    def holds(self, weights) -> bool:
        """Whether these are the weights tabled, the same arrays in the same order."""
        return len(weights) == len(self.arrays) and all(w is a[0] for w, a in zip(weights, self.arrays))

    def run(self, grads: list, shrink, *scalars) -> list:
        """The update from grads (one per array, in order), each decaying w first multiplied by shrink (None:
        no decay); the indices of the arrays left for numpy's passes (all where the library is not at hand)."""
        left = list(self.unfit)
        for group in self.groups:
            kernel = fused.update(self.rule, group.dtype)
            if kernel is None:
                left += group.members
                continue
            group.gradients(grads)
            group.run(kernel, shrink, tuple(map(float, scalars)) + (fused.tiny(group.dtype),) * (self.rule != "sgd"))
            left += sorted(group.left)
        return left
