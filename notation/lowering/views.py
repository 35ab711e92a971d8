"""How an operand is viewed: an index term such as `x[b, s1*i+p, s2*j+q, r]` becomes a zero-copy
strided view of x with one axis per index (stride s1 for i, 1 for p, ...), a flip `P - p` a negative
stride, an offset a slice (notation/lowering/lowering.py plans the products over these views)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..language.ast import Ref
from .steps import c_strides


@dataclass(frozen=True)
class View:
    """How one operand is viewed: per index, a coefficient on each axis; per axis, an offset."""

    name: str
    indices: tuple  # the view's axes, one per distinct index
    coefs: tuple  # per index: tuple of integer coefficients, one per array axis
    offsets: tuple  # per array axis: the term's constant
    shape: tuple  # the view's shape
    identity: bool  # the view is the array itself
    # per layout of the array viewed (its strides): the view's strides and its offset in bytes, worked
    # out once (a run passes the same buffers every step; some 25 views a training step)
    layouts: dict = field(default_factory=dict, compare=False, repr=False)
    # the last view made, with the array and the writeability it was made for: a step passes the same
    # buffers, and a view of the same array object stays valid (its data cannot move while viewed)
    last: list = field(default_factory=lambda: [None], compare=False, repr=False)

    @classmethod
    def of(cls, ref: Ref, extents, symbols, array_shape) -> View:
        ndim = len(array_shape)
        linear = [axis.linear(symbols) for axis in ref.axes]
        indices = []
        for coefs, _ in linear:
            for idx in coefs:
                if idx not in indices:
                    indices.append(idx)
        table = tuple(tuple(coefs.get(idx, 0) for coefs, _ in linear) for idx in indices)
        offsets = tuple(const for _, const in linear)
        identity = (len(indices) == ndim and not any(offsets)
                    and all(table[k][a] == (1 if k == a else 0) for k in range(ndim) for a in range(ndim)))
        shape = tuple(extents[i] for i in indices)
        identity = identity and shape == tuple(array_shape)  # a window of the first entries is not the array
        return cls(ref.name, tuple(indices), table, offsets, shape, identity)

    def __call__(self, array: np.ndarray, writeable=False) -> np.ndarray:
        if self.identity:
            return array
        last = self.last[0]
        if last is not None and last[0] is array and last[1] is writeable:
            return last[2]
        view = self._view(array, writeable)
        self.last[0] = (array, writeable, view)
        return view

    def _view(self, array: np.ndarray, writeable: bool) -> np.ndarray:
        st = array.strides
        layout = self.layouts.get(st)
        if layout is None:
            if len(self.layouts) > 16:  # a few per view; more only where shapes keep changing
                self.layouts.clear()
            layout = self.layouts[st] = (tuple(sum(c * s for c, s in zip(row, st)) for row in self.coefs),
                                         sum(o * s for o, s in zip(self.offsets, st)))
        strides, offset = layout
        if array.flags.c_contiguous and array.size and (array.flags.writeable or not writeable):
            # straight on the array's buffer: 0.8 us, against 5 for as_strided
            view = np.ndarray(self.shape, array.dtype, array, offset, strides)
            view.flags.writeable = writeable
            return view
        base = array[tuple(slice(o, None) if o else slice(None) for o in self.offsets)] if any(
            self.offsets) else array
        return as_strided(base, self.shape, strides, writeable=writeable)

    def summary(self) -> dict:
        """What kind of view this is (whole array, window, flip, reshape) and its shape."""
        kinds = []
        if any(c < 0 for row in self.coefs for c in row):
            kinds.append("flip")
        mixed = any(sum(1 for row in self.coefs if row[a]) > 1 for a in range(len(self.offsets)))
        if mixed:
            kinds.append("window" if not _injective_table(self.coefs, self.shape) else "reshape")
        if any(self.offsets):
            kinds.append("offset")
        if not kinds and not self.identity:
            kinds.append("transpose" if len(self.indices) == len(self.offsets) else "diagonal")
        return {"tensor": self.name, "indices": list(self.indices), "shape": list(self.shape),
                "kind": "+".join(kinds) or "whole array"}


def _injective_table(coefs, shape) -> bool:
    """Whether a view's index tuples name distinct entries, judged on unit-spaced axes of its own size."""
    ndim = len(coefs[0]) if coefs else 0
    extent = [1] * ndim
    for row, n in zip(coefs, shape):
        for a, c in enumerate(row):
            extent[a] += abs(c) * (n - 1)
    elem = c_strides(extent)
    return injective([sum(c * s for c, s in zip(row, elem)) for row in coefs], shape)


def injective(strides, shape) -> bool:
    """A sufficient test that distinct index tuples never land on the same element."""
    pairs = sorted((abs(s), n) for s, n in zip(strides, shape) if n > 1)
    reach = 0
    for s, n in pairs:
        if s <= reach:
            return False
        reach += s * (n - 1)
    return True

