"""A product's result folded back through a strided view of the result array (eq. 16, 17, 19's
scatters): one in-place add where positions never collide, else one slice-add per kernel offset."""
from __future__ import annotations

import functools
import itertools
import math

import numpy as np

from ..language.ast import Ref
from ..runtime import taps
from .steps import c_strides
from .views import View, injective


class Fold:
    """Adds a product's result into the result buffer at the positions its index terms name."""

    def __init__(self, lhs_axes, result_indices, extents, symbols, result_shape):
        self.result_shape = tuple(result_shape)
        self.view = View.of(Ref("result", tuple(lhs_axes)), extents, symbols, self.result_shape)
        self.result_indices = tuple(result_indices)  # axes of the product's einsum result
        self.broadcast = tuple(i for i in self.view.indices if i not in result_indices)
        # probe with unit element strides: which indices can be sliced at once, which looped
        elem = c_strides(result_shape)
        strides = [sum(c * s for c, s in zip(row, elem)) for row in self.view.coefs]
        order = sorted(range(len(self.view.indices)), key=lambda k: -self.view.shape[k])
        keep = []
        for k in order:
            trial = keep + [k]
            if injective([strides[t] for t in trial], [self.view.shape[t] for t in trial]):
                keep = trial
        self.loop = tuple(self.view.indices[k] for k in range(len(self.view.indices)) if k not in keep)
        self.plain = self.view.identity
        # one strided view that reaches every entry once (2x2 windows at stride 2, as (19) scatters):
        # writing through it overwrites the whole result, so nothing needs zeroing first
        self.covers = not self.loop and not self.broadcast and math.prod(self.view.shape) == math.prod(result_shape)
        # the result's axes merely split (dw[i, E*h + e] over i,h,e; tokens n = i*J + j): the view is a
        # reshape of a C-ordered result, and a product can write it as one of that shape
        self.reshape = (not self.plain and not any(self.view.offsets) and tuple(strides) == c_strides(self.view.shape)
                        and math.prod(self.view.shape) == math.prod(result_shape))
        self.box = self._box()

    def _box(self):
        """Per result axis, the [start, stop) the view reaches, where it is a box of the result (each axis
        one index at coefficient 1: a padding's interior, a block of channels), else None."""
        v = self.view
        if self.plain or self.loop or self.broadcast or len(v.indices) != len(self.result_shape):
            return None
        box = [None] * len(self.result_shape)
        for row, n in zip(v.coefs, v.shape):
            axes = [a for a, c in enumerate(row) if c]
            if len(axes) != 1 or row[axes[0]] != 1 or box[axes[0]] is not None:
                return None
            box[axes[0]] = (v.offsets[axes[0]], v.offsets[axes[0]] + n)
        return tuple(box)

    def zero_outside(self, out: np.ndarray) -> None:
        """Every entry of out outside the box set to zero, each once: slabs below and above it along each
        axis, within the box along the axes before."""
        inside = []
        for (lo, hi), n in zip(self.box, out.shape):
            if lo > 0:
                out[tuple(inside) + (slice(0, lo),)] = 0
            if hi < n:
                out[tuple(inside) + (slice(hi, n),)] = 0
            inside.append(slice(lo, hi))

    def lined(self, result: np.ndarray) -> np.ndarray:
        """The product's result arranged on the target view's axes (size 1 where it is broadcast)."""
        present = self.result_indices
        src = result.transpose([present.index(i) for i in self.view.indices if i in present])
        if self.broadcast:
            src = src.reshape([n if i in present else 1 for i, n in zip(self.view.indices, self.view.shape)])
        return src

    def __call__(self, out: np.ndarray, result: np.ndarray):
        target = self.view(out, writeable=True)
        src = self.lined(result)
        if (self.loop or not self.plain) and taps.loop(src, self.view.indices, None, None, target,
                                                       self.view.indices, groups=self.loop, add=True):
            return  # one C loop: the same adds, slice after slice in the same order (the same bits)
        if not self.loop:
            if not (self.broadcast and _add_repeated(target, src)):
                target += src
            return
        for key, skey in self._keys(src.shape):
            target[key] += src[skey]

    def _keys(self, shape) -> list:
        """The slice-adds' (target key, source key) for a source of this shape, worked out once."""
        keys = self.__dict__.setdefault("keys", {})
        found = keys.get(shape)
        if found is None:
            pos = [self.view.indices.index(i) for i in self.loop]
            found = keys[shape] = []
            for values in itertools.product(*(range(self.view.shape[p]) for p in pos)):
                key = [slice(None)] * len(self.view.indices)
                for p, v in zip(pos, values):
                    key[p] = v
                found.append((tuple(key), tuple(0 if (k != slice(None) and shape[n] == 1) else k
                                                for n, k in enumerate(key))))
        return found

    def write(self, out: np.ndarray, result: np.ndarray) -> None:
        """Overwrite out with the product's result through this fold's view (where it `covers`: every
        entry once, nothing broadcast)."""
        np.copyto(self.view(out, writeable=True), self.lined(result))

    def summary(self, writes=False) -> dict:
        """How the product's result reaches the result array (`writes`: its strategy overwrites it)."""
        kind = "in place" if self.plain else ("slice-add" if self.loop else "strided add")
        if kind == "strided add" and writes and self.covers:
            kind = "strided write"
        return {"kind": kind, "indices": list(self.view.indices), "shape": list(self.view.shape),
                "loop": list(self.loop), "adds": int(np.prod([self.view.shape[self.view.indices.index(i)]
                                                               for i in self.loop])) if self.loop else 1}


ROW = 4096  # entries a repeated row is tiled to (_add_repeated)


@functools.lru_cache(maxsize=256)
def _tiling(row: int, lead: int) -> int:
    """The most rows, at most ROW entries together, that divide `lead` evenly; worked out once per
    shape (every step asks again)."""
    return next(r for r in range(max(1, min(ROW // max(row, 1), lead)), 0, -1) if lead % r == 0)


def _add_repeated(target, src) -> bool:
    """target += src where src repeats along target's leading axes with short rows (a bias b[k] over
    z[b,i,j,k]): added as a row tiled to about ROW entries, since numpy's loop over a 32-entry row
    is twice as slow (conv1's bias: 0.6 against 0.3 ms at batch 64).  False where that does not apply."""
    k = next((n for n in range(src.ndim) if src.shape[n] != 1), src.ndim)
    if not target.flags.c_contiguous or src.ndim != target.ndim or src.shape[k:] != target.shape[k:]:
        return False
    row = math.prod(target.shape[k:])
    reps = _tiling(row, math.prod(target.shape[:k]))
    if reps == 1:
        return False
    flat = target.reshape(-1, reps * row)
    np.add(flat, np.tile(src.reshape(row), reps), out=flat)
    return True
