"""The road of a window's taps: a product summed over a few offsets (a depthwise or dilated convolution's
(15), a pool's mean), scattered to a few (a transposed convolution, (16)), or summed over the batch
for each tap (17), run as one C loop over strided views (notation/runtime/taps.py): each tap's
products added in registers, with no window gathered into a copy (im2col) and no result made
whole before a slice-add.  Chosen where it is modelled cheaper than the road the rules give."""
from __future__ import annotations

import math

import numpy as np

from ..runtime import fused, parallel
from ..runtime import taps as loop
from . import cost
from .strategies import Strategy

MOST = 1 << 16  # offsets (groups and taps) a loop may take: its index array stays small and in cache


class Taps(Strategy):
    """Sum over the product's summed indices (its taps), one group of the fold's looped indices after
    another, written (or added) through the fold's view: fused.c's TAPS."""

    name = "taps in one C loop"

    def __init__(self, product, first):
        super().__init__(product)
        p = product
        f = p.fold
        self.labels = tuple(f.view.indices)
        self.groups, self.taps = tuple(f.loop), tuple(p.summed)
        self.writes = first and not self.groups and (f.plain or f.covers)
        self.shape = self._layout()
        where = "written into the result" if self.writes else "added to the result"
        self.runs = (f"{self._count(self.taps)} taps ({','.join(self.taps) or 'none'}) summed in registers"
                     + (f", {self._count(self.groups)} groups ({','.join(self.groups)}) one after another"
                        if self.groups else "") + f", {where} (notation/runtime/fused.c), where built")

    def _count(self, indices) -> int:
        return math.prod(self.product.extents[i] for i in indices)

    @staticmethod
    def fits(product) -> bool:
        """One or two viewed operands without a diagonal, something summed or scattered, a window in it
        (an operand read through a window, a flip or an offset, a result scattered, or the taps of one
        operand alone: two whole arrays into a whole result are BLAS's), and not too many offsets for
        the loop's index array."""
        p = product
        if not 1 <= len(p.operands) <= 2 or any(op.kind != "view" or not op.distinct for op in p.operands):
            return False
        if not (p.summed or p.fold.loop or not p.fold.plain):
            return False
        windowed = any(k in op.view.summary()["kind"] for op in p.operands for k in ("window", "flip", "offset"))
        if len(p.operands) == 2 and p.fold.plain and not windowed:
            return False
        count = math.prod(p.extents[i] for i in p.summed) + math.prod(p.extents[i] for i in p.fold.loop)
        return count <= MOST

    def _layout(self):
        """The loop's figures on C-ordered arrays of the compiled shapes: (rows, vector, split), from the
        plan notation/runtime/taps.py makes (entries are never touched: empty arrays are not written)."""
        p = self.product
        ops = [op.view(np.empty(op.array_shape, np.float32)) for op in p.operands]
        out = p.fold.view(np.empty(p.fold.result_shape, np.float32), writeable=True)
        a, b = ops[0], ops[1] if len(ops) > 1 else None
        la, lb = p.operands[0].indices, p.operands[1].indices if b is not None else None
        return loop.shape(a, la, b, lb, out, self.labels, self.groups, self.taps)

    def modelled(self, itemsize, r) -> float:
        p = self.product
        entries = sum(op.entries for op in p.operands) + 2 * math.prod(p.fold.view.shape)
        macs = self._count(self.groups + self.taps) * math.prod(
            p.extents[i] for i in self.labels if i not in self.groups)
        if not fused.available():  # numpy's passes: two calls and a pass over the result per tap
            calls = 2 * self._count(self.groups) * max(self._count(self.taps), 1)
            return cost.pass_seconds(3 * macs, itemsize, r, calls=calls)
        rows, vector, split = self.shape if self.shape else (macs, False, False)
        parts = parallel.PARTS if split else 1
        return cost.taps_seconds(macs, rows * self._count(self.groups), entries, vector, itemsize, r) / parts \
            + 3 * r.call

    def run(self, arrays, out, positions):
        p = self.product
        ops = [op.view(arrays[op.view.name]) for op in p.operands]
        a, b = ops[0], ops[1] if len(ops) > 1 else None
        lb = p.operands[1].indices if b is not None else None
        target = p.fold.view(out, writeable=True)
        loop.run(a, p.operands[0].indices, b, lb, target, self.labels, self.groups, self.taps,
                 add=not self.writes, scale=p.scale)
