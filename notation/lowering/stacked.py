"""GEMMs over stacked blocks: one pairwise product as np.matmul over strided views, with no copy.

A product such as `xs[b,u,v,g,r] = xh[b,u,f,c,r] * fc[f,c,v,g]` is no single GEMM without
moving `r` (a transposing copy in, another out), but for each (b, u) it is the product of the
block xh[b,u][(f,c), r] with fc[(f,c), (v,g)], written straight into xs[b,u].  np.matmul runs
such a stack of blocks on BLAS when each block has a unit stride, with the constant broadcast
(stride 0) over the stack.  `plan()` looks for the grouping with the fewest blocks: the summed
indices K and the free indices of each side (L, R) each a run of consecutive axes, so every
group is one stride, in the operands and the result alike; the rest is the stack.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import product as cartesian

import numpy as np

from ..runtime import parallel

MIN_BLOCK_FLOPS = 8192  # smaller blocks cost more in calls than a transposing copy saves
TURN_BLOCK = 32 ** 3  # blocks of at most this many multiply-adds read column by column are copied first
# ... if each entry copied serves this many multiply-adds at least: a kernel's spectrum (128 x 128 a
# frequency) copied for a batch of 2 rows cost 0.5 ms a product, five times the product itself
TURN_REUSE = 16


def _runs(idx: str, allowed) -> list:
    """Every run of consecutive letters of idx drawn from `allowed`, longest first."""
    out = []
    for i in range(len(idx)):
        for j in range(len(idx), i, -1):
            if all(c in allowed for c in idx[i:j]):
                out.append(idx[i:j])
    return sorted(set(out), key=lambda r: -len(r))


def _unit(idx: str, groups) -> bool:
    """Whether idx's last axis (its unit stride in C order) ends one of the block's two groups."""
    return any(g and g[-1] == idx[-1] for g in groups)


def plan(einsum: str, sizes: dict):
    """The StackedGemm for a pairwise `x,y->out` with the fewest blocks, or None."""
    inputs, out = einsum.split("->")
    parts = inputs.split(",")
    if len(parts) != 2 or not out:
        return None
    x, y = parts
    con = "".join(i for i in x if i in y and i not in out)
    if not con or any(i not in out for i in x + y if i not in con):
        return None
    if con not in _runs(x, con) or con not in _runs(y, con):
        return None  # the summed indices are not consecutive, or not in the same order, on both sides
    xfree = [i for i in x if i not in y]
    yfree = [i for i in y if i not in x]
    size = lambda s: math.prod(sizes[i] for i in s)  # noqa: E731
    best = None
    for left, right in cartesian(_runs(x, xfree), _runs(y, yfree)):
        if left not in _runs(out, left) or right not in _runs(out, right):
            continue
        if not (_unit(x, (left, con)) and _unit(y, (con, right)) and _unit(out, (left, right))):
            continue
        stack = "".join(i for i in out if i not in left + right)
        block = 2 * size(left) * size(con) * size(right)
        key = (size(stack), -block)
        if block >= MIN_BLOCK_FLOPS and (best is None or key < best[0]):
            best = (key, StackedGemm(einsum, x, y, out, stack, left, con, right,
                                     size(stack), (size(left), size(con), size(right))))
    return best[1] if best else None


def _view(a, idx: str, groups):
    """a (indexed by idx) as one axis per group, each group's axes merged (a view, never a copy);
    a group with none of a's indices is a broadcast axis of size 1.  None if a group is not one
    stride in a's memory."""
    shape, strides = [], []
    for g in groups:
        axes = [idx.index(i) for i in g if i in idx]
        if not axes:
            shape.append(1)
            strides.append(0)
            continue
        live = [k for k in axes if a.shape[k] != 1]  # a size-1 axis may carry any stride
        for p, q in zip(live, live[1:]):
            if a.strides[p] != a.strides[q] * a.shape[q]:
                return None
        shape.append(math.prod(a.shape[k] for k in axes))
        strides.append(a.strides[live[-1]] if live else 0)
    return np.lib.stride_tricks.as_strided(a, tuple(shape), tuple(strides), writeable=True)


@dataclass(frozen=True)
class StackedGemm:
    """A pairwise step as np.matmul over a stack of strided blocks, written into the result."""

    einsum: str
    x: str
    y: str
    out: str
    stack: str  # indices of the stack, in the result's order
    left: str  # x's free indices in a block (its rows)
    con: str  # summed
    right: str  # y's free indices in a block (its columns)
    blocks: int
    block: tuple  # (rows, summed, columns) of one block
    last: list = field(default_factory=list, compare=False, repr=False)  # [x, y, out, layout, views]
    rows: dict = field(default_factory=dict, compare=False, repr=False)  # dtype -> the turned blocks' buffer
    kind = "stacked GEMM"
    direct = True

    def views(self, x, y, out):
        """The three operands as stacks of blocks; the same arrays as last time (a run's own buffers,
        its constants) give back the same views, made once instead of every step."""
        layout = (x.shape, x.strides, y.shape, y.strides, out.shape, out.strides)
        last = self.last
        if last and last[0] is x and last[1] is y and last[2] is out and last[3] == layout:
            return last[4]
        s = list(self.stack)
        views = (_view(x, self.x, s + [self.left, self.con]), _view(y, self.y, s + [self.con, self.right]),
                 _view(out, self.out, s + [self.left, self.right]))
        last[:] = [x, y, out, layout, views]
        return views

    @property
    def groups(self) -> tuple:
        """The result's letters of each axis of the product as np.matmul sees it: the stack's, L, R."""
        return tuple(self.stack) + (self.left, self.right)

    @property
    def turned(self) -> bool:
        """Whether, on C-ordered operands, BLAS would read the right operand of its small blocks column by
        column (its unit stride on a summed index, as k in s = q k^T; np.matmul multiplies a result of
        F-ordered blocks as out^T = b^T a^T, so there a^T is that right operand): OpenBLAS multiplies
        16x16 blocks read so at half speed, and copying them the other way first costs less (attention's
        scores at batch 64: 70 against 30 + 25 us)."""
        m, _, n = self.block
        if math.prod(self.block) > TURN_BLOCK:
            return False
        if self.out[-1] in self.right:  # y copied: each of its entries serves the m rows of x
            return self.y[-1] in self.con and m >= TURN_REUSE
        return self.x[-1] in self.con and n >= TURN_REUSE  # x copied, serving the n columns of y

    def _turn(self, a, b, c):
        """a and b, the one BLAS would read column by column copied the other way, into a buffer kept."""
        swapped = c.strides[-1] != c.itemsize  # numpy runs out^T = b^T a^T
        right = a.swapaxes(-1, -2) if swapped else b
        if right.strides[-2] != right.itemsize or right.shape[-1] == 1:
            return a, b
        kept = self.rows.get(right.dtype)
        if kept is None or kept.shape != right.shape:
            kept = self.rows[right.dtype] = np.empty(right.shape, right.dtype)
        np.copyto(kept, right)
        return (kept.swapaxes(-1, -2), b) if swapped else (a, kept)

    def __call__(self, x, y, out, add=None):
        """Runs into `out` when every view is one stride per group (the layouts planned for), else
        returns None so the caller takes its other road.  `add` (notation.lowering.steps.addend on `groups`) is
        added to each block as it is made."""
        a, b, c = self.views(x, y, out)
        if a is None or b is None or c is None:
            return None
        if self.turned:
            a, b = self._turn(a, b, c)
        parallel.matmul(a, b, out=c, add=add)
        return out

    def describe(self) -> dict:
        m, k, n = self.block
        copy = "the right one's blocks copied row by row first" if self.turned else "no copy"
        return {"kind": self.kind, "runs": f"np.matmul over {self.blocks:,} blocks ({','.join(self.stack)}) "
                                           f"of {m}x{k} @ {k}x{n}, {copy}"}

