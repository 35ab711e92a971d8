"""A product summed over indices both operands lead with, run as one GEMM per value of them on strided
views, then those results summed in order: token mixing's weight gradient dw[m,n] = dz[b,n,k] x[b,m,k]
is no single GEMM over (b, k) without copying both operands transposed first (0.22 ms modelled at
mixer's batch 64, 13% of its bound), but for each b it is x[b] (m x k) times dz[b]^T (k x n)."""
from __future__ import annotations

import math

import numpy as np

from . import cost, stacked
from .strategies import Path

MOST = 1 << 20  # entries of the stack of results at most (4 MiB in float32): beyond, the sum's pass costs more


def _leading(x: str, y: str, out: str) -> str:
    """The summed indices both operands begin with, in the same order."""
    n = 0
    while n < min(len(x), len(y)) and x[n] == y[n] and x[n] not in out:
        n += 1
    return x[:n]


class SummedStack(Path):
    """One GEMM per value of the summed leading indices S (a stacked GEMM on strided views, written into a
    buffer kept between runs), then the buffer summed over S with np.add.reduce, value after value."""

    name = "stacked GEMM, summed"

    @classmethod
    def make(cls, product, writes, steps):
        """The road for this product, or None where it is not one pairwise product of two views led by a
        summed index, or the stack of its results would be large."""
        p = product
        info = p.path_info
        if len(info.contraction_list) != 1 or len(p.operands) != 2 or any(op.kind != "view" for op in p.operands):
            return None
        inputs, out = info.contraction_list[0][2].split("->")
        x, y = inputs.split(",")
        lead = _leading(x, y, out)
        if not lead or len(lead) == len(set(x) & set(y) - set(out)):
            return None  # nothing summed leads, or nothing else is summed: no GEMM per value
        block = stacked.plan(f"{x},{y}->{lead}{out}", info.size_dict)
        values = math.prod(info.size_dict[i] for i in lead)
        if block is None or values * math.prod(info.size_dict[i] for i in out) > MOST:
            return None
        return cls(p, writes, steps, block, values)

    def __init__(self, product, writes, steps, block, values):
        super().__init__(product, writes, steps)
        self.block, self.values = block, values
        self.into = "summed into the result" if writes else "summed, then folded"
        sizes = product.path_info.size_dict
        self.shape = (values,) + tuple(sizes[i] for i in product.path_info.contraction_list[0][2].split("->")[1])
        self.laid = tuple(sizes[i] for i in block.out)  # the buffer as the blocks' einsum indexes it
        self.stacks = {}  # dtype -> (the buffer of results, one per value of the summed leading indices, laid)

    @property
    def runs(self):
        return self.block.describe()["runs"] + f", then the {self.values:,} results {self.into}"

    def describe(self) -> dict:
        return {"name": self.name, "runs": self.runs + self.note, "steps": [self.block.describe()]}

    def modelled(self, itemsize, r, copies=False) -> float:
        m, k, n = self.block.block
        stack = self.block.blocks
        out = stack // self.values * m * n
        total = cost.matmul_seconds((stack, m, k), (stack, k, n), itemsize, r) + \
            cost.pass_seconds(stack * m * n + out, itemsize, r)
        return total if self.writes else total + self._fold_seconds(itemsize, r)

    def run(self, arrays, out, positions):
        p = self.product
        values = [p.operands[k].evaluate(arrays, out.dtype, positions) for k in p.order]
        left = list(values)
        parts = [left.pop(k) for k in p.path_info.contraction_list[0][0]]
        kept = self.stacks.get(out.dtype)
        if kept is None:  # made once: the same views every step, so the blocks' views are made once too
            stack = np.empty(self.shape, out.dtype)
            kept = self.stacks[out.dtype] = (stack, stack.reshape(self.laid))
        stack, laid = kept
        if self.block(*parts, laid) is None:
            super().run(arrays, out, positions)  # a layout not planned for: opt_einsum's path
            return
        if self.writes:
            np.add.reduce(stack, axis=0, out=out)
            if p.scale != 1.0:
                out *= np.asarray(p.scale, dtype=out.dtype)
            return
        self._finish(out, np.add.reduce(stack, axis=0))

