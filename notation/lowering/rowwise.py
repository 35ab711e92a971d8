"""Consecutive equations over the same rows, run row by row in one C loop (fused.c's ROWS).

A layer norm's forward (mu, xc, v, r, xh, z) and its input's gradient (dxh, m, p, dx), or attention's
softmax (ex, den, r, p) and its gradient, each read and write rows of n features of one `[..., n]` tensor,
with sums over a row (a mean, a variance, a denominator) between them.  One by one, each equation is a
pass over memory and a Python call: 20-80 us each at 1,024 rows of 64, against 5-14 us for the bytes it
moves.  Row by row, a block of rows stays in L1 from the first equation to the last, and the whole is one
call, its rows shared between the threads.

An equation fits where its result is a row (`[..., n]`) or one value a row (`[...]`), and each term of
its right side is a scale times factors, each factor a tensor read as a row, as the row's one value, or
as one row shared by all (a parameter `g[i]`), or id, square, sqrt, rsqrt, recip, drecip or exp of one
(of a sum, exp(s - sm): made into scratch first); a term of a one-value result may sum over the row,
and a max over the row whose positions are not kept (softmax's shift) is its largest entry.
Every result is written to its buffer, as the equations one by one write it.  The bits: each row's sum is
added in double, in fused.c's lanes, then in a fixed tree, so it may differ from a GEMV's in the last
bits; they never depend on the number of threads, and numpy's passes (_numpy) give the same where the
library is not built.
"""
from __future__ import annotations

import math

import numpy as np

from ..runtime import counters, fused, parallel

FUNCTIONS = ("id", "square", "sqrt", "rsqrt", "recip", "drecip", "exp")  # fused.c's ROWS_ID ... ROWS_EXP
ROW, VALUE, SHARED = 0, 1, 2  # how a factor is read: fused.c's ROWS_ROW, ROWS_VALUE, ROWS_SHARED
MOST = 4096  # fused.c's ROWS_MAX: the longest row
LANES = 8  # fused.c's ROWS_LANES: the partial sums of a row's sum
SUM, LARGEST = 1, 2  # a term that sums over the row, or takes its largest entry (fused.c's "sums")
name = "row program"


def _factor(op, lead, feature, n, scratch):
    """(tensor, how it is read, function) of one operand of a product, or None where it does not fit.  A
    function of a sum (exp(s - sm)) reads a row (or value) of scratch that an equation made first."""
    func = "id"
    if op.kind == "call":
        if op.func.name not in FUNCTIONS:
            return None
        func, products = op.func.name, op.argument.products
        q = products[0] if len(products) == 1 else None
        if q is None or q.scale != 1.0 or len(q.operands) != 1 or q.summed or q.operands[0].indices != op.indices \
                or q.operands[0].kind != "view":
            row = op.indices == lead + (feature,)
            terms = _terms(op.argument, len(op.indices), row, n, scratch) if row or op.indices == lead else None
            if terms is None:
                return None
            scratch.append((f"({len(scratch)})", row, terms))  # its argument, made into scratch first
            return scratch[-1][0], ROW if row else VALUE, FUNCTIONS.index(func)
        op = q.operands[0]
    if op.kind != "view" or not op.view.identity or not op.distinct:
        return None
    how = {lead + (feature,): ROW, lead: VALUE, (feature,): SHARED}.get(op.indices)
    return None if how is None else (op.view.name, how, FUNCTIONS.index(func))


def describe(run, rows: tuple, n: int):
    """(whether the result is a row, its terms [(sums, scale, factors)], the scratch its functions' arguments
    are made in first [(name, whether a row, terms)]) of one compiled equation over rows of this shape and n
    features each, or None where it does not fit."""
    rhs = run._rhs
    if run.copies or rhs.is_view or not rhs.products:
        return None
    shape = run.result_shape
    row = shape == rows + (n,)
    if not row and shape != rows:
        return None
    scratch = []
    terms = (None if row else _largest(rhs, n)) if run.has_max else _terms(rhs, len(shape), row, n, scratch)
    return None if terms is None else (row, terms, scratch)


def _largest(rhs, n):
    """The one term of `m[...] = max[i] x[..., i]` (a row's largest entry; no positions kept), or None."""
    p = rhs.products[0] if len(rhs.products) == 1 else None
    op = p.operands[0] if p is not None and len(p.operands) == 1 else None
    if op is None or op.kind != "max" or len(op.max) != 1 or p.scale != 1.0 or p.summed or not p.fold.plain:
        return None
    q = op.argument.products
    x = q[0].operands[0] if len(q) == 1 and len(q[0].operands) == 1 and q[0].scale == 1.0 else None
    lead = p.fold.view.indices
    if x is None or x.kind != "view" or not x.view.identity or tuple(op.indices) != lead or \
            x.indices != lead + tuple(op.max) or q[0].extents[op.max[0]] != n:
        return None
    return [(LARGEST, 1.0, [(x.view.name, ROW, 0)])]


def _terms(rhs, ndim, row, n, scratch):
    """[(sums, scale, factors)] of a right side over ndim indices, its result a row or one value a row."""
    terms = []
    for p in rhs.products:
        idx = p.fold.view.indices
        if not p.fold.plain or p.fold.loop or p.reshape is not None or len(idx) != ndim:
            return None
        sums = SUM if p.summed else 0
        if (row and sums) or len(p.summed) > 1 or (sums and p.extents[p.summed[0]] != n):
            return None
        lead, feature = (idx[:-1], idx[-1]) if row else (idx, p.summed[0] if sums else None)
        factors = [_factor(op, lead, feature, n, scratch) for op in p.operands]
        if None in factors or (not row and not sums and any(f[1] != VALUE for f in factors)):
            return None
        terms.append((sums, p.scale, factors))
    return terms


def _shapes(run):
    """The (rows, n) an equation could run over: its result as rows of its last axis, or as one value a
    row of an operand whose shape is the result's and one more axis."""
    shape = run.result_shape
    found = [(shape[:-1], shape[-1])] if len(shape) >= 2 else []
    found += [(shape, s[-1]) for s in run.shapes.values() if len(s) == len(shape) + 1 and s[:-1] == shape]
    return [f for f in dict.fromkeys(found) if 0 < f[1] <= MOST]


def find(steps) -> dict:
    """{index of a program's first equation: (the program, the index after its last)} for a list of
    (result, run) pairs in the order they run (run None: not to be taken into one): each program the
    longest run of consecutive equations that fit, at least two, one of them a sum over the row."""
    found, i = {}, 0
    while i < len(steps):
        best = None
        for rows, n in (_shapes(steps[i][1]) if steps[i][1] is not None else []):
            j, described = i, []
            while j < len(steps) and steps[j][1] is not None:
                d = describe(steps[j][1], rows, n)
                if d is None:
                    break
                described.append(d)
                j += 1
            while described and not _sound(steps[i:i + len(described)]):
                described.pop()
            if len(described) >= 2 and any(s for _, terms, _ in described for s, _, _ in terms) and (
                    best is None or len(described) > len(best[2])):
                best = (rows, n, described)
        if best is None:
            i += 1
            continue
        rows, n, described = best
        stop = i + len(described)
        found[i] = (RowProgram(steps[i:stop], rows, n, described), stop)
        i = stop
    return found


def _sound(steps) -> bool:
    """Whether every result is written once and read by no equation before it or by its own (row by
    row, such a read would see the new row)."""
    if len({r for r, _ in steps}) < len(steps):
        return False
    later = {r for r, _ in steps}
    for result, run in steps:
        if later & set(run.shapes):  # its own result among them: a row result is summed in place
            return False
        later.discard(result)
    return True


class RowProgram:
    """Consecutive equations run row by row in one C loop: their terms as fused.c's ROWS code."""

    name = name

    def __init__(self, steps, rows, n, described):
        self.results = [r for r, _ in steps]
        self.runs = [run for _, run in steps]
        self.rows, self.n = rows, n
        self.shapes = {}  # each tensor's shape, by slot
        self.scratch = set()  # the tensors the program makes for itself: functions' arguments
        self.program = []  # per equation (result, whether a row, [(sums, its scale's place or -1, factors)])
        slots, code, scales = {}, [0], []
        row_shape = rows + (n,)

        def slot(tensor, shape):
            if tensor not in slots:
                slots[tensor] = len(slots)
                self.shapes[tensor] = shape
            return slots[tensor]

        for (result, _), (row, terms, scratch) in zip(steps, described):
            named = {made: f"{result}{made}" for made, _, _ in scratch}  # "(0)": the first argument made for it
            for made, made_row, made_terms in scratch + [(result, row, terms)]:
                made = named.get(made, made)
                self.scratch.update([made] if made in named.values() else [])
                placed = []
                for sums, scale, factors in made_terms:
                    factors = [(named.get(t, t), how, func) for t, how, func in factors]
                    for tensor, how, _ in factors:
                        slot(tensor, row_shape if how == ROW else rows if how == VALUE else (n,))
                    place = -1
                    if scale != 1.0 or not factors:
                        place = len(scales)
                        scales.append(scale)
                    placed.append((sums, place, factors))
                code += [int(made_row), slot(made, row_shape if made_row else rows), len(placed)]
                for sums, place, factors in placed:
                    code += [int(sums), place, len(factors)] + [v for t, how, func in factors
                                                                for v in (slots[t], how, func)]
                self.program.append((made, made_row, placed))
        code[0] = len(self.program)
        self.tensors = list(slots)
        self.code = np.array(code, np.int64)
        self.scales = {np.dtype(t): np.array(scales or [0.0], t) for t in fused.FLOATS}
        self.functions = {FUNCTIONS[f] for _, _, terms in self.program for _, _, fs in terms for _, _, f in fs}
        self.made = {}  # dtype -> {scratch tensor: its buffer}
        self.last = None  # (the arrays of the last call, the call made for them)

    def describe(self) -> str:
        """A line for plans: what runs, and over which rows."""
        return (f"{len(self.results)} equations ({', '.join(self.results)}) row by row in one loop "
                f"(fused.c's ROWS), {math.prod(self.rows)} rows of {self.n}")

    def run(self, env, buffer) -> bool:
        """Every equation's result into its buffer (buffer(result, shape)) and env, row by row: in fused.c's
        loop, or where it is not built (or an array is laid out otherwise) in numpy's passes, to the same
        bits.  False for a dtype neither takes: then nothing is written, and the equations run one by one."""
        outs = {r: buffer(r, run.result_shape) for r, run in zip(self.results, self.runs)}
        dtype = outs[self.results[0]].dtype
        if dtype not in fused.FLOATS:
            return False
        made = self.made.get(dtype)
        if made is None:
            made = self.made[dtype] = {t: np.empty(self.shapes[t], dtype) for t in self.scratch}
        arrays = [outs[t] if t in outs else made[t] if t in made else env[t] for t in self.tensors]
        if any(a.dtype != dtype for a in arrays):
            return False
        lib = fused.library()
        last = self.last
        if last is None or last[2] is not lib or not all(a is b for a, b in zip(last[0], arrays)):
            last = self.last = (arrays, lib and self._call(lib, arrays, outs), lib)
        with counters.in_run(self.runs[0]), counters.timing(self.name):
            if last[1] is not None:
                rows = math.prod(self.rows)
                parallel.rows(last[1], rows, rows * self.n * len(self.runs))
            else:
                self._numpy(arrays, dtype)
        env.update(outs)
        return True

    def _call(self, lib, arrays, outs):
        """fused.Rows for these arrays, or None where one is not C-ordered or overlaps a result it is not."""
        dtype = arrays[0].dtype
        if any(not a.flags.c_contiguous for a in arrays) or not fused.chain_runs(self.functions, dtype):
            return None  # numpy's passes: an array laid out otherwise, or numpy's exp loop not found
        spans = [(fused.address(a) + lo, fused.address(a) + hi) for a in arrays for lo, hi in [fused.extent(a)]]
        for k, (t, (lo, hi)) in enumerate(zip(self.tensors, spans)):
            if t in outs and any(lo < b and a < hi for j, (a, b) in enumerate(spans) if j != k):
                return None
        bases = np.array([fused.address(a) for a in arrays], np.int64)
        scales = self.scales[dtype]
        args = (self.n, fused.address(self.code), fused.address(scales), fused.address(bases))
        return fused.Rows(lib, "rows", dtype, args, keep=(bases, arrays))

    def _numpy(self, arrays, dtype):
        """The program in numpy's passes, every operation of fused.c's ROWS in its order: each equation
        over all the rows at once (an entry's operations do not depend on the rows beside it)."""
        rows, n = math.prod(self.rows), self.n
        shaped = {ROW: (rows, n), VALUE: (rows, 1), SHARED: (1, n)}
        scales = self.scales[dtype]
        for result, row, terms in self.program:
            total = None
            for sums, place, factors in terms:
                value = None
                for tensor, how, func in factors:
                    x = FUNCTION_PASSES[func](arrays[self.tensors.index(tensor)].reshape(shaped[how]))
                    value = x if value is None else value * x
                if value is None:
                    value = np.full((rows, 1), scales[place] if place >= 0 else 1, dtype)
                elif place >= 0:
                    value = value * scales[place]
                if row or sums:
                    value = np.broadcast_to(value, (rows, n))
                if sums == LARGEST:
                    value = _largest_of(value).astype(np.float64)
                elif sums:
                    value = _lanes(value)
                elif not row:  # a one-value result's terms are added in double
                    value = value.astype(np.float64)
                total = value if total is None else total + value
            out = arrays[self.tensors.index(result)]
            if total is None:
                out[...] = 0
            else:
                np.copyto(out, np.broadcast_to(total, (rows, n) if row else (rows, 1)).reshape(out.shape))


def _lanes(t):
    """Each row's sum as fused.c's ROWS adds it, in double: entry e into lane e % LANES (the first LANES
    entries their start), the lanes then in a fixed tree; (rows, 1)."""
    rows, n = t.shape
    t = t.astype(np.float64)
    full = n >= LANES
    lane = t[:, :LANES].copy() if full else np.zeros((rows, LANES))
    e = LANES if full else 0
    while e + LANES <= n:
        lane += t[:, e:e + LANES]
        e += LANES
    lane[:, :n - e] += t[:, e:]
    w = LANES // 2
    while w:
        lane = lane[:, :w] + lane[:, w:2 * w]
        w //= 2
    return lane


def _larger(x, y):
    """fused.c's ROWS_LARGER: x where x >= y or x is NaN, else y (numpy's maximum, its -0 and +0 in order)."""
    return np.where((x >= y) | np.isnan(x), x, y)


def _largest_of(t):
    """Each row's largest entry as fused.c's ROWS takes it: in LANES lanes, then a fixed tree, where the
    row has LANES entries or more, else one after the other; (rows, 1)."""
    rows, n = t.shape
    if n < LANES:
        v = t[:, :1]
        for e in range(1, n):
            v = _larger(v, t[:, e:e + 1])
        return v
    lane, e = t[:, :LANES], LANES
    while e + LANES <= n:
        lane, e = _larger(lane, t[:, e:e + LANES]), e + LANES
    lane = np.concatenate([_larger(lane[:, :n - e], t[:, e:]), lane[:, n - e:]], axis=1)
    w = LANES // 2
    while w:
        lane, w = _larger(lane[:, :w], lane[:, w:2 * w]), w // 2
    return lane


def _rsqrt(x):
    return np.reciprocal(np.sqrt(x))


def _drecip(x):
    return np.negative(np.reciprocal(x * x))


FUNCTION_PASSES = (lambda x: x, lambda x: x * x, np.sqrt, _rsqrt, np.reciprocal, _drecip, np.exp)  # as FUNCTIONS
