"""Pairwise steps of an opt_einsum path: a (batched) GEMM on np.matmul, or np.einsum.

A step that keeps an index of both operands (a batch index) runs on `np.matmul` over stacked
matrices, where opt_einsum itself would fall back to `np.einsum`, off BLAS.  `make_step` picks
the step once per entry of the path's contraction list; `contract` walks them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..runtime import parallel


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
    groups: tuple = ()  # the output's letters of B, L and R, in its order (where `direct`)
    # the result's shape as np.matmul writes it, and which operand transposes are no-ops: worked out once
    # (every call asked again)
    matmul_shape: tuple = field(init=False, compare=False, repr=False)
    same: tuple = field(init=False, compare=False, repr=False)
    # the last call's operands and the matrices BLAS read of them, where those are views (no copy): a
    # step passes the same arrays (notation/lowering/views.py keeps their views), so they are made once
    last: list = field(init=False, compare=False, repr=False, default_factory=lambda: [None])
    # an operand BLAS cannot read as it lies (patches cut from an image) is copied into a buffer kept here
    kept: list = field(init=False, compare=False, repr=False, default_factory=lambda: [None, None])

    def __post_init__(self):
        object.__setattr__(self, "matmul_shape", self.x_shape[:-2] + (self.x_shape[-2], self.y_shape[-1]))
        object.__setattr__(self, "same", tuple(perm == tuple(range(len(perm))) for perm in (self.x_perm, self.y_perm)))

    @property
    def kind(self) -> str:
        return "batched GEMM" if self.batch else "GEMM"

    def __call__(self, x, y, out=None, add=None, scratch=None):
        """The product (into out when given); `add`, laid out by addend() for this step's groups, is
        added to each part of it as soon as that part is made (only with a C-ordered out, `direct`).
        A result that is not `direct` is made in `scratch` (x_shape[:-2] + (L, R), kept by the caller
        between runs) when given, then copied into out."""
        if self.swap:
            x, y = y, x
        last = self.last[0]
        if last is not None and last[0] is x and last[1] is y:
            a, b = last[2], last[3]
        else:
            same_x, same_y = self.same
            a = self._matrix(x if same_x else x.transpose(self.x_perm), self.x_shape, 0)
            b = self._matrix(y if same_y else y.transpose(self.y_perm), self.y_shape, 1)
            if np.may_share_memory(a, x) and np.may_share_memory(b, y):  # views, not copies: kept
                self.last[0] = (x, y, a, b)
        if out is not None and self.direct and out.flags.c_contiguous:
            parallel.matmul(a, b, out=out.reshape(self.matmul_shape), add=add)
            return out
        if add is not None:
            raise ValueError("an addend needs a C-ordered result written in place")
        result = parallel.matmul(a, b, out=scratch).reshape(self.out_shape).transpose(self.out_perm)
        if out is not None:
            np.copyto(out, result)
            return out
        return result

    def _matrix(self, v, shape, k):
        """v as the matrices `shape` BLAS reads: a view where its axes merge so and BLAS can read it, else a
        copy in the buffer kept for operand k (made once: a fresh one of 200 KiB a step cost its page faults
        every step)."""
        strides = _merged(v.shape, v.strides, shape)
        if strides is not None and _reads(shape, strides, v.itemsize):
            return v.reshape(shape)
        buf = self.kept[k]
        if buf is None or buf.shape != shape or buf.dtype != v.dtype:
            buf = self.kept[k] = np.empty(shape, v.dtype)
        np.copyto(buf.reshape(v.shape), v)
        return buf

    def describe(self) -> dict:
        runs = "np.matmul" + (f", batched over ({','.join(self.batch)})" if self.batch else "")
        return {"kind": self.kind, "runs": runs}

    def copies(self, x_shape, y_shape) -> bool:
        """Whether, on C-ordered operands of these shapes, it copies an operand (what _matrix does at run
        time) or its result (not `direct`): decided when compiling."""
        xs, ys = (y_shape, x_shape) if self.swap else (x_shape, y_shape)
        return not (self.direct and _free(xs, self.x_perm, self.x_shape) and _free(ys, self.y_perm, self.y_shape))

    def copied(self, x_shape, y_shape) -> int:
        """Entries copied on C-ordered operands of these shapes: an operand BLAS cannot read as it lies
        (a transposing copy, _matrix), and a result that is not `direct`."""
        xs, ys = (y_shape, x_shape) if self.swap else (x_shape, y_shape)
        n = 0 if _free(xs, self.x_perm, self.x_shape) else math.prod(self.x_shape)
        n += 0 if _free(ys, self.y_perm, self.y_shape) else math.prod(self.y_shape)
        return n + (0 if self.direct else math.prod(self.out_shape))

    def turned(self, sizes: dict):
        """This plain GEMM with its operands exchanged, where it reads a large right operand transposed
        (its summed index last in memory, as w[k,j] in (13)'s dx = dz w^T) and the result is small: the
        large one then comes first, as it lies in memory, and the small result is copied into place.
        OpenBLAS packs a transposed right operand slowly (dense1's dx at batch 32: 3.1 against 2.1 ms
        turned, the copy included).  None where that does not apply."""
        if self.batch or not self.direct:
            return None
        inputs, out = self.einsum.split("->")
        x, y = inputs.split(",")
        if self.swap:
            x, y = y, x
        con = [i for i in x if i in y and i not in out]
        left, right = [i for i in x if i not in con], [i for i in y if i not in con]
        size = lambda idx: math.prod(sizes[i] for i in idx)  # noqa: E731
        if y[-1] not in con or list(y) != right + con or size(y) < TURN_SIZE or 4 * size(out) > size(y):
            return None
        order = right + left
        return MatmulStep(
            einsum=self.einsum, x_perm=tuple(y.index(i) for i in right + con),
            y_perm=tuple(x.index(i) for i in con + left), x_shape=(size(right), size(con)),
            y_shape=(size(con), size(left)), out_perm=tuple(order.index(i) for i in out),
            out_shape=tuple(sizes[i] for i in order), swap=not self.swap, direct=False, batch=(),
            groups=("".join(right), "".join(left)))


TURN_SIZE = 1 << 18  # entries of a right operand worth reading first instead (1 MiB in float32)


@dataclass(frozen=True)
class EinsumStep:
    """A pairwise (or single-operand) step that is no matrix product: np.einsum runs it."""

    einsum: str
    kind: str = "einsum"

    def __call__(self, *values, out=None):
        return np.einsum(self.einsum, *values, out=out)

    def describe(self) -> dict:
        return {"kind": self.kind, "runs": "np.einsum"}


def _merged(shape, strides, target):
    """The strides of an array of this shape and strides reshaped to `target` without a copy (each axis of
    target a run of its consecutive axes, those of one entry aside, that lie evenly in memory), or None
    where the reshape must copy."""
    dims, k, found = [(n, s) for n, s in zip(shape, strides) if n != 1], 0, []
    for t in target:
        size, outer = 1, None
        while size < t:
            if k == len(dims):
                return None
            n, s = dims[k]
            if outer is not None and outer != s * n:
                return None
            outer, size, k = s, size * n, k + 1
        if size != t:
            return None
        found.append(0 if outer is None else outer)
    return tuple(found) if k == len(dims) else None


def _reads(shape, strides, item) -> bool:
    """Whether BLAS reads the trailing matrices of an array of this shape and strides (in bytes) as they
    lie: one unit-stride axis and a leading dimension that spans it (else np.matmul takes its own loop)."""
    if len(shape) < 2 or 0 in shape:
        return True
    n, (rows, cols) = shape, strides[-2:]
    cols = item if n[-1] == 1 else cols  # an axis of one entry: its stride is never stepped
    rows = max(n[-1], 1) * item if n[-2] == 1 else rows
    return ((cols == item and (rows >= max(n[-1], 1) * item or n[-2] == 1)) or (
        rows == item and (cols >= max(n[-2], 1) * item or n[-1] == 1))) and \
        rows % item == 0 and cols % item == 0 and min(strides) >= 0


def c_strides(shape) -> tuple:
    """Element strides of a C-ordered array of `shape`."""
    return tuple(math.prod(shape[k + 1:]) for k in range(len(shape)))


def _free(shape, perm, merged) -> bool:
    """Whether a C-ordered array of `shape`, transposed by perm and reshaped to `merged`, is a view BLAS
    reads as it is (what MatmulStep._matrix does at run time, decided when compiling)."""
    c = c_strides(shape)
    strides = _merged([shape[p] for p in perm], [c[p] for p in perm], merged)
    return strides is not None and _reads(merged, strides, 1)


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
        swap=swap, direct="".join(order) == out, batch=tuple(batch),
        groups=tuple("".join(g) for g in ((batch,) if batch else ()) + (left, right)))


def addend(lined, letters: str, groups, extents: dict) -> np.ndarray:
    """An array `lined` up with a result indexed by `letters` (size 1 where it does not vary, as a bias
    b[k] over z[b,i,j,k]), laid out on a product's axis groups (each group's letters merged into one
    axis, in the result's order): size 1 where it is constant over a group, else the group whole, so
    np.add(part of the product, same part of it) adds it entry for entry.  A small copy (a bias)."""
    t = lined.transpose([letters.index(i) for g in groups for i in g])
    full, shape, k = [], [], 0
    for g in groups:
        if all(t.shape[k + n] == 1 for n in range(len(g))):
            full += [1] * len(g)
            shape.append(1)
        else:
            full += [extents[i] for i in g]
            shape.append(math.prod(extents[i] for i in g))
        k += len(g)
    return np.ascontiguousarray(np.broadcast_to(t, full)).reshape(shape)


def bias_addend(strategy, arrays, out):
    """The fused bias laid out on the product's groups (addend), or None where there is
    none or the result is not C-ordered (then it is added on its own, after the product)."""
    if strategy.bias is None or not out.flags.c_contiguous:
        return None
    bias = strategy.bias.strategy
    source = arrays[bias.product.operands[0].view.name]
    kept = strategy.addends.get(out.dtype)
    if kept is not None and kept[0] is source:
        return kept[1]  # a view of the same bias array: its values follow it
    p = strategy.product
    made = addend(bias.lined(arrays, out), p.einsum.split("->")[1], strategy.groups(), p.path_info.size_dict)
    if np.may_share_memory(made, source):  # laid out without a copy (a bias over the last axis): keep it
        strategy.addends[out.dtype] = (source, made)
    return made


def contract(steps, contraction_list, values, out=None, add=None, scratch=None):
    """Run opt_einsum's path over the operands: each step pops its operands, appends its result; the
    last writes into `out`, given a MatmulStep's `add` and `scratch` where they are not None."""
    values = list(values)
    last = len(steps) - 1
    for n, (step, c) in enumerate(zip(steps, contraction_list)):
        parts = [values.pop(k) for k in c[0]]
        if n < last:
            values.append(step(*parts))
        elif add is None and scratch is None:
            return step(*parts, out=out)
        else:
            return step(*parts, out=out, add=add, scratch=scratch)
    return values[0]
