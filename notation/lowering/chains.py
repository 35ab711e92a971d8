"""A right side whose terms sum nothing, in one pass over memory: every term of it (a product of
views, of functions of views, and a scale) is made and added entry by entry in one C loop
(notation/runtime/fused.c's CHAIN), a block of the result at a time, in cache.  Batch norm's
`xc = x - mu`, `z = xh g + beta`, its `dx`, a layer norm's, a bias's, an
activation's derivative `dz = da drelu(z)`: numpy runs each term as a pass of its own, each
function as another, and adds each term in yet another; a broadcast row (a channel vector) costs it
a call per row.  The loop does the same float operations in the same order, so the bits are numpy's.
"""
from __future__ import annotations

import math

import numpy as np

from ..runtime import counters, fused, parallel
from . import cost

CALLS = 2  # the Python around one run of the loop (the arrays checked, the call), in numpy calls' worth
MARGIN = 1.25  # as roads.MARGIN: the chain replaces the terms' own roads where modelled this much faster
ROW_SECONDS = 1.5e-9  # a broadcast product's cost per row of a few channels, numpy's or fused.multiply's
# (batch norm's xh = xc r at resnet's stem, 50,176 rows of 32: 0.31 ms against 0.24 in the chain's blocks)


def _rows(product) -> int:
    """Rows of a broadcast product that numpy (or fused.multiply) runs one at a time: its result's rows,
    where an operand is broadcast and the last axis is as short as a channel axis; else 0."""
    p = product
    extents = [p.extents[i] for i in p.fold.view.indices]
    if len(p.operands) < 2 or not extents or extents[-1] > fused.ROW or all(
            set(op.indices) == set(p.fold.view.indices) for op in p.operands):
        return 0
    return math.prod(extents[:-1])


class Chain:
    """How one compiled right side runs when all of it is elementwise: its terms as fused.c's code."""

    name = "fused elementwise chain"
    alternatives = None  # {road: modelled seconds}: the chain's, and the terms' own roads summed

    def __init__(self, rhs, operands, code, scales, final=None):
        self.rhs = rhs
        self.final = final  # a function of the whole sum (exp), run on each block as it is made
        self.operands = operands  # (product, operand, how): how is "view", "argument" or "evaluate"
        self.code = np.array(code + [-1], np.intc)
        self.scales = scales
        self.zero_first = rhs.needs_zero
        self.shape = rhs.result_shape
        self.names = [op.view.name if how == "view" else op.argument.products[0].operands[0].view.name
                      if how == "argument" else None for _, op, how in operands]
        self.last = None  # (the arrays read, out, the library, the call made for them)
        self.functions = {op.func.name for _, op, how in operands if how == "argument"} | ({final} if final else set())

    @classmethod
    def fit(cls, rhs):
        """The chain for a compiled right side, or None where it does not apply or gains nothing: a term
        that sums an index, a scatter, a diagonal, a max, more than fused.CHAIN_OPS operands."""
        products = rhs.products
        if not rhs.result_shape or not products:
            return None
        operands, code, scales, passes, heavy = [], [], [], 0, False
        for p in products:
            if p.summed or not p.fold.plain or p.fold.loop or p.reshape is not None:
                return None
            code.append(len(p.operands))
            for op in p.operands:
                if not op.distinct or op.kind not in ("view", "call"):
                    return None
                if op.kind == "view":
                    how, func = "view", "id"
                elif op.func.name in fused.CHAIN_FUNCTIONS and op.argument.is_view:
                    how, func = "argument", op.func.name
                    passes += 1  # numpy writes the function's result and reads it back
                    heavy = heavy or op.func.name in fused.NUMPY_PASSES  # and makes it in several passes
                else:  # a function fused.c does not have: numpy makes it first, the loop reads it
                    how, func = "evaluate", "id"
                code += [len(operands), fused.CHAIN_FUNCTIONS.index(func)]
                operands.append((p, op, how))
            if p.scale != 1.0:
                code.append(len(scales))
                scales.append(p.scale)
            else:
                code.append(-1)
        single = len(products) < 2 and not heavy and not ((passes or _rows(products[0])) and len(operands) > 1)
        if len(operands) > fused.CHAIN_OPS or single:
            return None  # one product of plain views in long rows is one numpy pass already
        chain = cls(rhs, operands, code, scales)
        r = cost.rates()
        mine, theirs = chain.modelled(4, r), chain.term_by_term(4, r)
        if mine * MARGIN >= theirs:  # a small result (a running mean's [k]): numpy's few calls cost less
            return None
        chain.alternatives = {cls.name: mine, "term by term": theirs}
        for p in products:
            p.strategy.note = f"; run with the other terms in one pass ({cls.name}, fused.c), where built"
        return chain

    @classmethod
    def nested(cls, rhs):
        """`e = exp(z - m)`: a right side that is one function fused.c can apply to a sum (fused.FINAL) of a
        sum that runs as a chain, written whole: that chain with the function on each block, in one pass
        (the sum is not written and read back); None where that does not apply."""
        if len(rhs.products) != 1 or len(rhs.products[0].operands) != 1:
            return None
        p = rhs.products[0]
        op = p.operands[0]
        if not (op.kind == "call" and op.func.name in fused.FINAL and p.scale == 1.0 and p.direct
                and op.indices == p.out_indices and op.argument.chain is not None
                and op.argument.chain.final is None):
            return None
        inner = op.argument.chain
        chain = cls(inner.rhs, inner.operands, list(inner.code[:-1]), inner.scales, final=op.func.name)
        r = cost.rates()
        pass_ = cost.pass_seconds(2 * math.prod(chain.shape), 4, r)
        chain.alternatives = {cls.name: inner.modelled(4, r), "term by term": inner.modelled(4, r) + pass_}
        p.strategy.note = f"; {op.func.name} made in its argument's pass ({cls.name}, fused.c), where built"
        return chain

    def modelled(self, itemsize, r) -> float:
        """One pass: every operand read once and the result written, and the calls around the loop."""
        entries = sum(op.entries for _, op, _ in self.operands) + math.prod(self.shape)
        return cost.pass_seconds(entries, itemsize, r, calls=CALLS) + sum(
            cost.pass_seconds(2 * op.entries, itemsize, r) for _, op, how in self.operands if how == "evaluate")

    def term_by_term(self, itemsize, r) -> float:
        """Each product's road on its own, a pass per function it evaluates first, and for each term after
        the first its fold: the result read and written again, as `out += term` does (numpy's way)."""
        folds = (len(self.rhs.products) - 1) * cost.pass_seconds(2 * math.prod(self.shape), itemsize, r)
        folds += sum(_rows(p) for p in self.rhs.products) * ROW_SECONDS
        return folds + sum(p.strategy.modelled(itemsize, r) for p in self.rhs.products) + sum(
            cost.pass_seconds(2 * op.entries, itemsize, r) * fused.NUMPY_PASSES.get(op.func.name, 1)
            for _, op, how in self.operands if how != "view")

    def run(self, arrays, out, positions) -> bool:
        """out = the right side, in one pass; False where the loop does not apply here (no library,
        another dtype, an operand that overlaps out), and the products then run one by one."""
        lib = fused.library()
        if lib is None:
            return False
        sources = [op.evaluate(arrays, out.dtype, positions) if how == "evaluate" else arrays[name]
                   for (_, op, how), name in zip(self.operands, self.names)]
        last = self.last
        if last is None or not _same(last[1], out) or last[2] is not lib or not all(
                _same(a, b) for a, b in zip(last[0], sources)):
            # an array's data never moves while it lives: the same memory (a step's buffers, seen through
            # a view made afresh each step, as an activation's [b, i]), the same call
            last = self.last = (sources, out, lib, self._call(lib, arrays, sources, out))
        call = last[3]
        if call is None:
            return False
        loop, rows, n = call
        with counters.timing(self.name):
            parallel.rows(loop, rows, rows * n)
        return True

    def _call(self, lib, arrays, sources, out):
        """(kernel, rows, the loop's other arguments) for these arrays, or None where it does not apply."""
        if not out.flags.writeable or out.dtype not in fused.FLOATS or not fused.chain_runs(self.functions, out.dtype):
            return None
        values = []
        for (_, op, how), source in zip(self.operands, sources):
            v = op.view(source) if how == "view" else op.argument.as_view(arrays) if how == "argument" else source
            if v.dtype != out.dtype or np.may_share_memory(v, out):
                return None
            values.append(v)
        plan = _layout(self.operands, values, out, self.scales)
        if plan is None:
            return None
        rows, n, outer, strides, kinds, ostrides, okind, scales = plan
        bases = np.array([fused.address(v) for v in values], np.uintp)
        mode = int(self.zero_first) | fused.final_mode(self.final)
        args = fused.chain_arguments(n, outer, bases, strides, kinds, self.code, scales, mode, out,
                                     ostrides, okind)
        keep = (outer, strides, kinds, scales, bases, values, ostrides)  # what args point into: kept alive
        return fused.Rows(lib, "chain", out.dtype, args, keep=keep), rows, n


def _same(a, b) -> bool:
    """Whether b is a, or an array over the very memory of a, laid out alike (a's kept alive by the call
    made for it, so its address cannot have gone to another buffer)."""
    return a is b or (a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype
                      and fused.address(a) == fused.address(b))


AXES = 7  # fused.c's CHAIN_AXES outer axes and the row


def _entries(a, item):
    """a's strides in entries (0 along an axis of one entry), or None where one is not a whole entry."""
    if any(x % item for x in a.strides):
        return None
    return [0 if n == 1 else x // item for n, x in zip(a.shape, a.strides)]


def _layout(operands, values, out, scales):
    """(rows, n, outer sizes, strides, kinds, out's strides, okind, scales) for fused.c's CHAIN, or None
    where an operand's strides are not whole entries or the iteration has too many axes after merging."""
    item = out.itemsize
    table = [_entries(out, item)]  # out's, then each operand's stride in entries along out's axes
    for (p, op, _), v in zip(operands, values):
        st = _entries(v, item)
        if st is None or table[0] is None:
            return None
        table.append([st[op.indices.index(i)] if i in op.indices else 0 for i in p.fold.view.indices])
    plan = layout(list(out.shape), table)
    return plan and plan + (np.array(scales or [0], out.dtype),)


ROW = 4096  # entries of a row, about, where one long row is cut in rows (a multiple of fused.c's CHAIN_BLOCK)


def _cut_row(n, strides):
    """A row of n entries (each array's stride along it) as rows of about ROW entries, where n has such
    a divisor: each entry's operations are the same, only where a thread may take up the loop moves."""
    r = next((r for r in range(n // ROW, 1, -1) if n % r == 0 and n // r >= ROW // 4), 1) if n >= 2 * ROW else 1
    return [[r, [s * (n // r) for s in strides]], [n // r, strides]] if r > 1 else [[n, strides]]


def layout(shape, table):
    """The iteration over `shape` (its axes in loop order) merged where every array's strides allow, as
    fused.c's CHAIN reads it: (rows, n, outer sizes, operands' strides, kinds, out's strides, okind);
    table holds out's strides in entries, then each operand's.  None where out's row is not unit-strided
    or more than AXES axes are left."""
    axes = [d for d in range(len(shape)) if shape[d] != 1] or [len(shape) - 1]
    merged = [[shape[axes[0]], [t[axes[0]] for t in table]]]
    for d in axes[1:]:
        size, strides = merged[-1]
        if all(s == t[d] * shape[d] for s, t in zip(strides, table)):
            merged[-1] = [size * shape[d], [t[d] for t in table]]
        else:
            merged.append([shape[d], [t[d] for t in table]])
    if len(merged) > AXES or (merged[-1][1][0] != 1 and merged[-1][0] > 1):
        return None
    if len(merged) == 1:  # one long row (an activation of a contiguous tensor): cut in rows the pool can share
        merged = _cut_row(*merged[0])
    pad = AXES - len(merged)
    n = merged[-1][0]
    outer = [1] * pad + [m[0] for m in merged[:-1]]
    c = [math.prod(outer[d + 1:]) * n for d in range(AXES - 1)]  # C-ordered rows' strides
    every = []
    for k in range(len(table)):
        every.append([0] * pad + [m[1][k] for m in merged])
    contiguous = [st[-1] in (0, 1) if n == 1 else st[-1] == 1 for st in every]
    contiguous = [ok and all(s == cs for s, cs, o in zip(st[:-1], c, outer) if o != 1)
                  for ok, st in zip(contiguous, every)]
    kinds = [0 if ok else 1 if not any(s for s, o in zip(st[:-1], outer) if o != 1) else 2
             for ok, st in zip(contiguous[1:], every[1:])]
    return (math.prod(outer), n, np.array(outer, np.intp), np.array(every[1:], np.intp).reshape(-1),
            np.array(kinds, np.intc), np.array(every[0], np.intp), 0 if contiguous[0] else 2)
