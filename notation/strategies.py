"""Execution strategies: how one product of an equation runs, chosen once at compile time.

Each road is a small named object (`GemmIntoResult`, `BatchedGemm`, `GatherCopy`, ...) made by
`choose()`; `describe()` says what runs, so a plan names the road that is taken.  Like
opt_einsum's `blas_flag`, the choice is made once and recorded.  A pairwise step of opt_einsum's
path that keeps an index of both operands (a batch index) runs on `np.matmul` over stacked
matrices, where opt_einsum itself would fall back to `np.einsum`, off BLAS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import counters, parallel, stacked


# -- pairwise steps of a path ----------------------------------------------------------------
@dataclass(frozen=True)
class MatmulStep:
    """One pairwise step on np.matmul: x[B,L,K] @ y[B,K,R] -> [B,L,R], batched over B.

    Axis groups are ordered so the result lands in the step's output order when it can
    (`direct`), else it is returned as a transposed view of the matmul's (B,L,R) result."""

    einsum: str
    x_perm: tuple  # transpose of the first operand to (B, L, K)
    y_perm: tuple  # transpose of the second operand to (B, K, R)
    x_shape: tuple  # (nB, nL, nK), or (nL, nK) with no batch index
    y_shape: tuple
    out_perm: tuple  # from the matmul's (B..., L..., R...) axes to the step's output order
    out_shape: tuple  # the matmul's result, unmerged: (B..., L..., R...)
    swap: bool  # operands exchanged so the result reads (B, R, L)
    direct: bool  # (B, L, R) is the output's own order: matmul can write a C-ordered result
    batch: tuple

    @property
    def kind(self) -> str:
        return "batched GEMM" if self.batch else "GEMM"

    def __call__(self, x, y, out=None):
        if self.swap:
            x, y = y, x
        a = _blasable(x.transpose(self.x_perm).reshape(self.x_shape))
        b = _blasable(y.transpose(self.y_perm).reshape(self.y_shape))
        if out is not None and self.direct and out.flags.c_contiguous:
            parallel.matmul(a, b, out=out.reshape(self.x_shape[:-2] + (self.x_shape[-2], self.y_shape[-1])))
            return out
        result = parallel.matmul(a, b).reshape(self.out_shape).transpose(self.out_perm)
        if out is not None:
            np.copyto(out, result)
            return out
        return result

    def describe(self) -> dict:
        runs = "np.matmul" + (f", batched over ({','.join(self.batch)})" if self.batch else "")
        return {"kind": self.kind, "runs": runs}

    def copies(self, x_shape, y_shape) -> bool:
        """Whether, on C-ordered operands of these shapes, it copies an operand (what _blasable does at
        run time) or its result (not `direct`): decided when compiling."""
        xs, ys = (y_shape, x_shape) if self.swap else (x_shape, y_shape)
        return not (self.direct and _free(xs, self.x_perm, self.x_shape) and _free(ys, self.y_perm, self.y_shape))


@dataclass(frozen=True)
class EinsumStep:
    """A pairwise (or single-operand) step that is no matrix product: np.einsum runs it."""

    einsum: str
    kind: str = "einsum"

    def __call__(self, *values, out=None):
        return np.einsum(self.einsum, *values, out=out)

    def describe(self) -> dict:
        return {"kind": self.kind, "runs": "np.einsum"}


def _blasable(a):
    """The array itself when BLAS can read its trailing matrices (one unit-stride axis), else a copy:
    np.matmul would otherwise take its slow loop without BLAS."""
    if a.ndim < 2 or a.size == 0:
        return a
    s, n, item = a.strides, a.shape, a.itemsize
    rows, cols = s[-2], s[-1]
    if (cols == item and (rows >= max(n[-1], 1) * item or n[-2] == 1)) or (
            rows == item and (cols >= max(n[-2], 1) * item or n[-1] == 1)):
        if rows % item == 0 and cols % item == 0 and all(x >= 0 for x in s):
            return a
    return np.ascontiguousarray(a)


def c_strides(shape) -> tuple:
    """Element strides of a C-ordered array of `shape`."""
    return tuple(math.prod(shape[k + 1:]) for k in range(len(shape)))


def _free(shape, perm, merged) -> bool:
    """Whether a C-ordered array of `shape`, transposed by perm and reshaped to `merged`, is a view that
    _blasable would pass as it is (one unit stride in its trailing matrix)."""
    c = c_strides(shape)
    shape, strides = [shape[p] for p in perm], [c[p] for p in perm]
    out, k = [], 0
    for n in merged:
        axes, size = [], 1
        while k < len(shape) and (size < n or (n == 1 and not axes and shape[k] == 1)):
            axes.append(k)
            size *= shape[k]
            k += 1
        if size != n:
            return False
        live = [a for a in axes if shape[a] != 1]
        if any(strides[p] != strides[q] * shape[q] for p, q in zip(live, live[1:])):
            return False
        out.append(strides[live[-1]] if live else 0)
    return len(out) < 2 or 1 in out[-2:] or merged[-1] == 1 or merged[-2] == 1


def make_step(einsum: str, sizes: dict, prefer_out: bool):
    """The step for one entry of opt_einsum's contraction list: a (batched) GEMM where the indices
    split into batch, free and contracted groups, else np.einsum.  With prefer_out the groups
    follow the output's order, so the result can be written in place."""
    inputs, out = einsum.split("->")
    parts = inputs.split(",")
    if len(parts) != 2 or any(len(set(p)) != len(p) for p in parts):
        return EinsumStep(einsum)
    x, y = parts
    con = [i for i in x if i in y and i not in out]
    if not con or any(i not in out and i not in con for i in x + y):
        return EinsumStep(einsum)  # an outer product, or an index summed within one operand
    batch = [i for i in out if i in x and i in y]
    left = [i for i in out if i in x and i not in y]
    right = [i for i in out if i in y and i not in x]
    if not prefer_out:  # follow the operands' own orders: fewer copies when the result is folded anyway
        batch = [i for i in x if i in batch]
        left = [i for i in x if i in left]
        right = [i for i in y if i in right]
    swap = prefer_out and "".join(batch + right + left) == out and "".join(batch + left + right) != out
    if swap:
        x, y, left, right = y, x, right, left
    con = [i for i in (y if swap else x) if i in con] if not prefer_out else [i for i in x if i in con]
    size = lambda idx: int(np.prod([sizes[i] for i in idx], dtype=np.int64))  # noqa: E731
    lead = (size(batch),) if batch else ()
    order = batch + left + right
    return MatmulStep(
        einsum=einsum,
        x_perm=tuple(x.index(i) for i in batch + left + con),
        y_perm=tuple(y.index(i) for i in batch + con + right),
        x_shape=lead + (size(left), size(con)), y_shape=lead + (size(con), size(right)),
        out_perm=tuple(order.index(i) for i in out), out_shape=tuple(sizes[i] for i in order),
        swap=swap, direct="".join(order) == out, batch=tuple(batch))


def contract(steps, contraction_list, values, out=None):
    """Run opt_einsum's path over the operands: each step pops its operands, appends its result."""
    values = list(values)
    last = len(steps) - 1
    for n, (step, c) in enumerate(zip(steps, contraction_list)):
        parts = [values.pop(k) for k in c[0]]
        values.append(step(*parts, out=out if n == last else None))
    return values[0]


# -- strategies: one per road ------------------------------------------------------------------
class Strategy:
    """How one product runs.  `run` writes or adds the product into `out`; `describe` says how."""

    name = "?"
    writes = False  # overwrites the whole result (no zeroing needed before it)

    def __init__(self, product):
        self.product = product

    def run(self, arrays, out, positions):
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name, "runs": self.runs, "steps": None}

    def _finish(self, out, result):
        """Scale the product's result and fold it into out (a scatter or a plain add)."""
        p = self.product
        if p.scale != 1.0:
            result = result * np.asarray(p.scale, dtype=out.dtype)
        with counters.timing("scatter-add (fold)"):
            p.fold(out, np.asarray(result, dtype=out.dtype))


class Constant(Strategy):
    name, runs = "constant", "the term's scale, added"

    def run(self, arrays, out, positions):
        self._finish(out, np.ones((), out.dtype))


class NestedIntoResult(Strategy):
    """A function or max whose result is the equation's: evaluated with out=result."""

    name, writes = "nested into the result", True

    @property
    def runs(self):
        op = self.product.operands[0]
        return f"{op.func.name}(..., out=result)" if op.kind == "call" else "window max, out=result"

    def run(self, arrays, out, positions):
        self.product.operands[0].evaluate(arrays, out.dtype, positions, out=out)


class GatherCopy(Strategy):
    """One view copied into the result (im2col windows, flatten): np.copyto, 2x faster than einsum."""

    name, runs, writes = "gather copy", "np.copyto(result, view)", True

    def run(self, arrays, out, positions):
        op = self.product.operands[0]
        np.copyto(out, op.view(arrays[op.view.name]).transpose(self.product.perm))


class AddView(Strategy):
    """One viewed operand, nothing summed (a bias, a padding): its view is added straight into the
    result by the fold, with no einsum copy in between."""

    name, runs = "add of a view", "the view folded into the result"

    def __init__(self, product):
        super().__init__(product)
        op = product.operands[0]
        self.perm = tuple(op.indices.index(i) for i in product.out_indices)

    def run(self, arrays, out, positions):
        op = self.product.operands[0]
        self._finish(out, op.view(arrays[op.view.name]).transpose(self.perm))


class Elementwise(Strategy):
    """Nothing summed: a broadcast product on np.multiply, written in place where it covers the result."""

    name, runs = "elementwise ufunc", "np.multiply"

    def __init__(self, product, first):
        super().__init__(product)
        p = product
        self.lineup = [_broadcast_to(op.indices, p.out_indices, p.extents) for op in p.operands]
        self.out_shape = tuple(p.extents[i] for i in p.out_indices)
        overwrite = (not p.fold.loop and not p.fold.broadcast
                     and set(p.fold.view.indices) == set(p.out_indices))
        self.in_place = first and (p.direct or overwrite)
        self.writes = first and (p.direct or (overwrite and p.fold.covers))
        self.runs = "np.multiply" + (", out=result" if self.in_place else ", then folded")

    def run(self, arrays, out, positions):
        p = self.product
        dtype = out.dtype
        values = [op.evaluate(arrays, dtype, positions) for op in p.operands]
        values = [v.transpose(perm).reshape(shape) for v, (perm, shape) in zip(values, self.lineup)]
        if self.in_place:
            # the result is zero where this product does not reach, so write instead of add
            dest = out if p.direct else p.fold.view(out, writeable=True).transpose(
                [p.fold.view.indices.index(i) for i in p.out_indices])
        else:
            dest = np.empty(self.out_shape, dtype=dtype)
        np.multiply(values[0], values[1], out=dest)
        for v in values[2:]:
            np.multiply(dest, v, out=dest)
        if p.scale != 1.0:
            dest *= np.asarray(p.scale, dtype=dtype)
        if not self.in_place:
            with counters.timing("scatter-add (fold)"):
                p.fold(out, dest)


class Path(Strategy):
    """opt_einsum's path, step by step: (batched) GEMMs on np.matmul, the rest on np.einsum; the
    last step writes the result in place when the product is the equation's result, else it is folded."""

    name = "opt_einsum path"

    def __init__(self, product, writes, steps):
        super().__init__(product)
        self.writes, self.steps = writes, steps
        if writes and isinstance(steps[-1], MatmulStep) and not steps[-1].direct:
            self.into = "copied into the result"
        else:
            self.into = "written into the result" if writes else "folded"

    @property
    def runs(self):
        return " then ".join(s.describe()["runs"] for s in self.steps) + f", {self.into}"

    def describe(self) -> dict:
        return {"name": self.name, "runs": self.runs, "steps": [s.describe() for s in self.steps]}

    def run(self, arrays, out, positions):
        p = self.product
        values = [p.operands[k].evaluate(arrays, out.dtype, positions) for k in p.order]
        if self.writes:
            contract(self.steps, p.path_info.contraction_list, values, out=out)
            if p.scale != 1.0:
                out *= np.asarray(p.scale, dtype=out.dtype)
            return
        self._finish(out, contract(self.steps, p.path_info.contraction_list, values))


class GemmIntoResult(Path):
    """A single GEMM whose result is the equation's: np.matmul(out=result), no copy."""

    name = "GEMM into the result"


class BatchedGemm(Path):
    """A path with a batch index in a pairwise step: np.matmul over the stacked matrices."""

    name = "batched GEMM"


class Stacked(Path):
    """One GEMM per block of a stack, on strided views of the operands and the result: no
    transposing copy in or out (notation/stacked.py); the plain path where a layout differs."""

    name = "stacked GEMM"

    def __init__(self, product, writes, steps, block):
        super().__init__(product, writes, steps)
        self.block = block
        self.into = "written into the result"

    @property
    def runs(self):
        return self.block.describe()["runs"] + ", written into the result"

    def describe(self) -> dict:
        return {"name": self.name, "runs": self.runs, "steps": [self.block.describe()]}

    def run(self, arrays, out, positions):
        p = self.product
        values = [p.operands[k].evaluate(arrays, out.dtype, positions) for k in p.order]
        left = list(values)
        parts = [left.pop(k) for k in p.path_info.contraction_list[0][0]]  # the order opt_einsum's einsum names them
        if self.block(*parts, out) is None:
            contract(self.steps, p.path_info.contraction_list, values, out=out)
        if p.scale != 1.0:
            out *= np.asarray(p.scale, dtype=out.dtype)


class SliceScatter(Strategy):
    """A looped scatter over a large result, run in slices of its leading (batch) index so each
    slice-add reads a result still in cache."""

    name = "scatter in batch slices"

    def __init__(self, product, chunks):
        super().__init__(product)
        self.chunks = chunks  # [(start, stop, steps, contraction_list, fold)]
        self.runs = f"{len(chunks)} slices of {product.chunk_index}, each " + " then ".join(
            s.describe()["runs"] for s in chunks[0][2]) + ", folded"

    def describe(self) -> dict:
        return {"name": self.name, "runs": self.runs, "steps": [s.describe() for s in self.chunks[0][2]]}

    def run(self, arrays, out, positions):
        p = self.product
        views = [(p.operands[k].view(arrays[p.operands[k].view.name]), p.operands[k].indices) for k in p.order]
        c, axis = p.chunk_index, p.chunk_axis
        for start, stop, steps, clist, fold in self.chunks:
            parts = []
            for v, indices in views:
                if c in indices:
                    key = [slice(None)] * v.ndim
                    key[indices.index(c)] = slice(start, stop)
                    v = v[tuple(key)]
                parts.append(v)
            result = contract(steps, clist, parts)
            if p.scale != 1.0:
                result = result * np.asarray(p.scale, dtype=out.dtype)
            key = [slice(None)] * out.ndim
            key[axis] = slice(start, stop)
            with counters.timing("scatter-add (fold)"):
                fold(out[tuple(key)], result)


def _broadcast_to(indices, out_indices, extents):
    """(transpose, reshape) that lines an operand up with the output, size 1 where it is absent."""
    perm = tuple(sorted(range(len(indices)), key=lambda k: out_indices.index(indices[k])))
    return perm, tuple(extents[i] if i in indices else 1 for i in out_indices)


def choose(product, first: bool) -> Strategy:
    """The road one product takes, decided once: the first match in this order wins."""
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
        return Elementwise(p, first)
    if len(ops) == 1 and ops[0].kind == "view" and not p.summed and ops[0].distinct:
        return AddView(p)
    writes = first and p.direct
    info = p.path_info
    last = len(info.contraction_list) - 1
    steps = [make_step(c[2], info.size_dict, prefer_out=writes and n == last)
             for n, c in enumerate(info.contraction_list)]
    if writes and len(steps) == 1 and isinstance(steps[0], MatmulStep) and all(
            op.kind == "view" for op in ops):
        einsum = info.contraction_list[0][2]
        shapes = [tuple(info.size_dict[i] for i in part) for part in einsum.split("->")[0].split(",")]
        block = stacked.plan(einsum, info.size_dict)
        if block is not None and steps[0].copies(*shapes):
            return Stacked(p, writes, steps, block)
    if any(isinstance(s, MatmulStep) and s.batch for s in steps):
        return BatchedGemm(p, writes, steps)
    if writes and len(steps) == 1 and isinstance(steps[0], MatmulStep) and steps[0].direct:
        return GemmIntoResult(p, writes, steps)
    return Path(p, writes, steps)
