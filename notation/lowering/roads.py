"""The road each product takes, chosen once when it is compiled: by rule where only one applies, and
by modelled cost (notation/lowering/cost.py, this machine's rates) where several do."""
from __future__ import annotations

from . import cost, stacked
from .reductions import ChunkedSum, SumGemv
from .steps import MatmulStep, make_step
from .strategies import (
    AddView,
    BatchedGemm,
    Constant,
    Elementwise,
    GatherCopy,
    GemmIntoResult,
    NestedIntoResult,
    Path,
    SliceScatter,
    Stacked,
    Strategy,
    TurnedGemm,
)
from .summed import SummedStack
from .taps import Taps

ITEMSIZE = 4  # the model's bytes per entry: float32, the engine's default (only ratios between roads matter)
MARGIN = 1.25  # another road replaces the rule's only where modelled this many times faster: a choice
               # that is close on one machine should not flip on the next


def choose(product, first: bool) -> Strategy:
    """The road one product takes, decided once: the first rule that matches; where a sum is no
    matrix product (every operand carries every index), the cheaper of that and a chunked pass."""
    p = product
    ops = p.operands
    if not ops:
        return Constant(p)
    if (first and p.direct and len(ops) == 1 and ops[0].kind in ("call", "max") and p.scale == 1.0
            and ops[0].indices == p.out_indices):
        return NestedIntoResult(p)
    if p.chunks:
        return SliceScatter(p, p.chunks)
    if first and p.direct and p.perm is not None:
        return GatherCopy(p)
    if len(ops) >= 2 and not p.summed and all(op.distinct for op in ops):
        road = Elementwise(p, first)
        return cheapest(road, [Taps(p, first)]) if p.fold.loop and Taps.fits(p) else road
    if len(ops) == 1 and ops[0].kind == "view" and not p.summed and ops[0].distinct:
        return AddView(p, first)
    writes = first and p.direct
    sums = SumGemv.fits(p)
    if sums:
        return SumGemv(p, writes, sums == "leading")
    road = _path(p, writes)
    summed = SummedStack.make(p, writes, road.steps) if type(road) in (GemmIntoResult, TurnedGemm, BatchedGemm, Path) \
        else None
    if summed is not None:  # one GEMM per value of a summed leading index, then their sum: no transposing copy
        road = cheapest(road, [summed])
    chunked = ChunkedSum.fits(p)
    if chunked:  # a per-channel sum of a product (batch norm's dg): chunks on both cores
        return cheapest(road, [ChunkedSum(p, writes, chunked == "leading")])
    return cheapest(road, [Taps(p, first)]) if Taps.fits(p) else road


def cheapest(default: Strategy, others) -> Strategy:
    """`default`, unless another road is modelled MARGIN times faster on this machine's rates; every
    road's figure is kept on the winner (`alternatives`) for the plans."""
    r = cost.rates()
    figures = {s.name: s.modelled(ITEMSIZE, r) for s in [default, *others]}
    best = min(others, key=lambda s: figures[s.name], default=None)
    chosen = best if best is not None and figures[best.name] * MARGIN < figures[default.name] else default
    chosen.alternatives = figures
    return chosen


def _path(p, writes) -> Path:
    """opt_einsum's path, each step on np.matmul where it is a (batched) GEMM, in the form that
    copies least: turned, stacked on strided views, or written straight into the result."""
    info = p.path_info
    last = len(info.contraction_list) - 1
    steps = [make_step(c[2], info.size_dict, prefer_out=writes and n == last)
             for n, c in enumerate(info.contraction_list)]
    single = writes and len(steps) == 1 and isinstance(steps[0], MatmulStep)
    turned = steps[0].turned(info.size_dict) if single else None
    if turned is not None:
        return TurnedGemm(p, writes, [turned])
    if single and all(op.kind == "view" for op in p.operands):
        einsum = info.contraction_list[0][2]
        shapes = [tuple(info.size_dict[i] for i in part) for part in einsum.split("->")[0].split(",")]
        block = stacked.plan(einsum, info.size_dict)
        if block is not None and steps[0].copies(*shapes):
            return Stacked(p, writes, steps, block)
    if any(isinstance(s, MatmulStep) and s.batch for s in steps):
        return BatchedGemm(p, writes, steps)
    if single and steps[0].direct:
        return GemmIntoResult(p, writes, steps)
    return Path(p, writes, steps)
