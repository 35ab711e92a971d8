"""Execution strategies: how one product of an equation runs, chosen once at compile time.

Each road is a small named object (`GemmIntoResult`, `BatchedGemm`, `GatherCopy`, ...) made by
`choose()`; `describe()` says what runs, so a plan names the road that is taken.  Like
opt_einsum's `blas_flag`, the choice is made once and recorded.  A strategy that walks opt_einsum's
path runs each pairwise step as notation/lowering/steps.py makes it (batched GEMMs on `np.matmul`).
"""
from __future__ import annotations

import math
import operator

import numpy as np

from ..runtime import counters, fused, parallel
from . import cost
from .steps import MatmulStep, bias_addend, contract


# -- strategies: one per road ------------------------------------------------------------------
class Strategy:
    """How one product runs.  `run` writes or adds the product into `out`; `describe` says how."""

    name = "?"
    writes = False  # overwrites the whole result (no zeroing needed before it)
    alternatives = None  # {road: modelled seconds} where several were weighed (notation/lowering/roads.py)
    note = ""  # what runs it instead, where another road takes the whole right side (notation/lowering/chains.py)

    def __init__(self, product):
        self.product = product

    def run(self, arrays, out, positions):
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name, "runs": self.runs + self.note, "steps": None}

    def modelled(self, itemsize, r) -> float:
        """Modelled seconds of this road (notation/lowering/cost.py): here one pass over its operands and result."""
        p = self.product
        return cost.pass_seconds(sum(math.prod(op.shape) for op in p.operands) + math.prod(p.fold.view.shape),
                                 itemsize, r)

    def _fold_seconds(self, itemsize, r) -> float:
        """Modelled seconds of folding a result made apart into out: each entry read, and its target read
        and written, a row of the fold's view at a time (notation/runtime/taps.py's loop)."""
        shape = self.product.fold.view.shape
        entries = math.prod(shape)
        return cost.taps_seconds(0, entries // max(shape[-1] if shape else 1, 1), 3 * entries, True, itemsize, r)

    def _finish(self, out, result):
        """Scale the product's result and fold it into out (a scatter or a plain add)."""
        p = self.product
        if p.scale != 1.0:
            result = result * np.asarray(p.scale, dtype=out.dtype)
        result = np.asarray(result, dtype=out.dtype)
        if counters.ACTIVE is None:
            p.fold(out, result)
            return
        with counters.timing("scatter-add (fold)"):
            p.fold(out, result)


class Constant(Strategy):
    """A term of no operand (a layer norm's eps): its scale added to every entry of a plain result in one
    np.add (the same bits as the fold's tiled add), else folded."""

    name, runs = "constant", "the term's scale, added"

    def run(self, arrays, out, positions):
        if self.product.fold.plain:
            np.add(out, np.asarray(self.product.scale, dtype=out.dtype), out=out)
            return
        self._finish(out, np.ones((), out.dtype))


class NestedIntoResult(Strategy):
    """A function or max whose result is the equation's: evaluated with out=result."""

    name, writes = "nested into the result", True

    @property
    def runs(self):
        op = self.product.operands[0]
        return f"{op.func.name}(..., out=result)" if op.kind == "call" else \
            "window max in one C loop (notation/runtime/fused.c) where built, out=result"

    def run(self, arrays, out, positions):
        self.product.operands[0].evaluate(arrays, out.dtype, positions, out=out)


class GatherCopy(Strategy):
    """One view copied into the result (im2col windows, flatten): np.copyto, 2x faster than einsum; a
    large one in two parts on the workers (conv1's windows: a step 0.1-1 ms faster at batch 32-128)."""

    name, runs, writes = "gather copy", "np.copyto(result, view), a large one cut between the workers", True

    def run(self, arrays, out, positions):
        op = self.product.operands[0]
        parallel.elementwise(_copy, (op.view(arrays[op.view.name]).transpose(self.product.perm),), out)


def _copy(view, out):
    np.copyto(out, view)


class AddView(Strategy):
    """One viewed operand, nothing summed (a bias, a padding): its view is added straight into the
    result by the fold, with no einsum copy in between; copied, where it is the first product and
    its fold reaches every entry once (flatten's (10)), so the result needs no zeroing first."""

    name, runs = "add of a view", "the view folded into the result"

    def __init__(self, product, first=False):
        super().__init__(product)
        op = product.operands[0]
        self.perm = tuple(op.indices.index(i) for i in product.out_indices)
        self.term = f"{op.view.name}[{','.join(op.indices)}]"  # as plans name it
        f = product.fold
        self.writes = first and f.covers and product.scale == 1.0
        if self.writes:
            self.runs = "np.copyto(the result's view, view)"
        # a box of the result (a padding's interior, a block of channels): copied there and the rest
        # zeroed, not the result zeroed whole, then the box read back and added to (a -0 stays -0)
        self.boxed = first and not self.writes and product.scale == 1.0 and f.box is not None
        if self.boxed:
            self.writes = True
            self.runs = "np.copyto(the result's box, view), the rest of the result zeroed"

    def lined(self, arrays, out) -> np.ndarray:
        """The view, scaled, on the result's axes (size 1 where it is broadcast): what the fold adds."""
        p = self.product
        v = p.operands[0].view(arrays[p.operands[0].view.name]).transpose(self.perm)
        v = np.asarray(v * np.asarray(p.scale, dtype=out.dtype) if p.scale != 1.0 else v, dtype=out.dtype)
        return v.reshape([p.extents[i] if i in p.out_indices else 1 for i in p.fold.view.indices])

    def run(self, arrays, out, positions):
        op = self.product.operands[0]
        view = op.view(arrays[op.view.name]).transpose(self.perm)
        if self.boxed:
            self.product.fold.zero_outside(out)
        if self.writes:
            self.product.fold.write(out, view)
        else:
            self._finish(out, view)


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
        # two operands in short rows (a pool's (19): rows of 32 channels): numpy's cost per row would
        # outweigh the work, so one C loop runs them, to the same bits (fused.multiply decides per call)
        rows = len(p.operands) == 2 and 0 < (self.out_shape or (0,))[-1] <= fused.ROW
        self.runs = ("np.multiply in one C loop (notation/runtime/fused.c) where built" if rows else "np.multiply") + \
            (", out=result" if self.in_place else ", then folded")
        self.scratch = {}  # dtype -> the buffer a product that is folded is made in
        self.last = None  # (the operands, out, their lined-up views, dest) of the last run: made once per arrays
        self.memo = [None]  # fused.multiply's call for the last arrays

    def modelled(self, itemsize, r) -> float:
        """One pass over the operands and the product; for a scatter (a fold that loops), also a call's
        worth per row where an operand is broadcast (rows of a few channels) and the fold's own pass.
        (A plain result's rows and folds are the fused chain's to weigh: notation/lowering/chains.py.)"""
        if not self.product.fold.loop:
            return super().modelled(itemsize, r)
        shape = self.out_shape or (1,)
        broadcast = any(len(op.indices) < len(shape) for op in self.product.operands)
        rows = math.prod(shape[:-1]) if broadcast and shape[-1] <= fused.ROW else 0
        return super().modelled(itemsize, r) + cost.taps_seconds(0, rows, 0, True, itemsize, r) + \
            (0.0 if self.in_place else self._fold_seconds(itemsize, r))

    def run(self, arrays, out, positions):
        p = self.product
        dtype = out.dtype
        given = [op.evaluate(arrays, dtype, positions) for op in p.operands]
        last = self.last
        if last is not None and last[1] is out and all(map(operator.is_, given, last[0])):
            values, dest = last[2], last[3]  # the same arrays: their views as before (the operands' buffers)
        else:
            values, dest = self._lined(given, out)
            if all(np.may_share_memory(v, a) for v, a in zip(values, given)):  # views, not copies: kept
                self.last = (given, out, values, dest)
        parallel.elementwise(self._multiply, values, dest)
        if not self.in_place:
            with counters.timing("scatter-add (fold)"):
                p.fold(out, dest)

    def _lined(self, given, out):
        """The operands lined up with the result (size 1 where absent), and where the product is made."""
        p = self.product
        values = [v.transpose(perm).reshape(shape) for v, (perm, shape) in zip(given, self.lineup)]
        if self.in_place:
            # the result is zero where this product does not reach, so write instead of add
            dest = out if p.direct else p.fold.view(out, writeable=True).transpose(
                [p.fold.view.indices.index(i) for i in p.out_indices])
        else:
            dest = self.scratch.get(out.dtype)
            if dest is None:  # made once, written again every run
                dest = self.scratch[out.dtype] = np.empty(self.out_shape, dtype=out.dtype)
        return values, dest

    def _multiply(self, *values, out):
        """The product of the values into out (run on a part of it by each worker), then its scale;
        two values in rows of a few channels (a pool's (19)) in one C loop, the same bits."""
        if not fused.multiply(values[0], values[1], out, self.memo):
            np.multiply(values[0], values[1], out=out)
        for v in values[2:]:
            np.multiply(out, v, out=out)
        if self.product.scale != 1.0:
            out *= np.asarray(self.product.scale, dtype=out.dtype)


class Path(Strategy):
    """opt_einsum's path, step by step: (batched) GEMMs on np.matmul, the rest on np.einsum; the
    last step writes the result in place when the product is the equation's result, else it is folded.
    A result copied into place is made in a buffer kept between runs, not a fresh one each time."""

    name = "opt_einsum path"
    bias = None  # the next product, added by this one's workers (fuse_bias; GEMM into the result, stacked)
    addends = None  # dtype -> (the bias array, its layout for the workers) where that is a view of it

    def __init__(self, product, writes, steps):
        super().__init__(product)
        self.writes, self.steps = writes, steps
        # a result made apart from out: copied into place (writes), or folded into it (a scatter)
        self.copied = isinstance(steps[-1], MatmulStep) and (not steps[-1].direct or not writes)
        self.scratch = {}  # dtype -> the buffer a copied result is made in
        if self.copied and writes:
            self.into = "copied into the result"
        else:
            self.into = "written into the result" if writes else "folded"

    @property
    def runs(self):
        return " then ".join(s.describe()["runs"] for s in self.steps) + f", {self.into}" + self._bias_runs()

    def _bias_runs(self) -> str:
        return f", {self.bias.strategy.term} added to each worker's part as it is made" if self.bias else ""

    def describe(self) -> dict:
        return {"name": self.name, "runs": self.runs + self.note, "steps": [s.describe() for s in self.steps]}

    def modelled(self, itemsize, r, copies=True) -> float:
        """Each pairwise step: a (batched) GEMM with the copies it makes, or np.einsum's loop; then the fold."""
        p = self.product
        sizes = p.path_info.size_dict
        total = 0.0
        for step, c in zip(self.steps, p.path_info.contraction_list):
            inputs, out = c[2].split("->")
            shapes = [tuple(sizes[i] for i in term) for term in inputs.split(",")]
            if isinstance(step, MatmulStep):
                moved = step.copied(*shapes) if copies and len(shapes) == 2 else 0
                # an operand whose unit-stride axis is a batch index is read a cache line per entry
                strided = sum(math.prod(s) * min(sizes[t[-1]], cost.LINE // itemsize)
                              for t, s in zip(inputs.split(","), shapes) if t and t[-1] in step.batch)
                total += cost.matmul_seconds(step.x_shape, step.y_shape, itemsize, r, copies=moved,
                                             strided=strided)
            else:
                flops = 2 * math.prod(sizes[i] for i in set(inputs.replace(",", "")))
                entries = sum(math.prod(s) for s in shapes) + math.prod(sizes[i] for i in out)
                # a sum's loop restarts for each row of the largest operand's last axis (a window's few channels)
                big = max(inputs.split(","), key=lambda t: math.prod(sizes[i] for i in t))
                summed = set(inputs.replace(",", "")) - set(out)
                rows = math.prod(sizes[i] for i in big[:-1]) if summed and big and sizes[big[-1]] <= fused.ROW else 0
                total += cost.einsum_seconds(flops, entries, itemsize, r) + cost.ROW_FLOPS * rows / r.einsum
        if not self.writes:  # a scatter's or strided fold row by row; a plain one a pass (the chain weighs those)
            plain = p.fold.plain and not p.fold.loop
            total += cost.pass_seconds(2 * math.prod(p.fold.view.shape), itemsize, r) if plain else \
                self._fold_seconds(itemsize, r)
        return total

    def _scratch(self, dtype):
        if not self.copied:
            return None
        buf = self.scratch.get(dtype)
        if buf is None:
            step = self.steps[-1]
            buf = self.scratch[dtype] = np.empty(step.x_shape[:-2] + (step.x_shape[-2], step.y_shape[-1]), dtype)
        return buf

    def run(self, arrays, out, positions):
        p = self.product
        values = [p.operands[k].evaluate(arrays, out.dtype, positions) for k in p.order]
        if self.writes:
            add = None if self.bias is None else bias_addend(self, arrays, out)
            contract(self.steps, p.path_info.contraction_list, values, out=out, add=add,
                     scratch=self._scratch(out.dtype) if self.copied else None)
            if p.scale != 1.0:
                out *= np.asarray(p.scale, dtype=out.dtype)
            if self.bias is not None:
                self._bias_after(add, arrays, out, positions)
            return
        self._finish(out, contract(self.steps, p.path_info.contraction_list, values, scratch=self._scratch(out.dtype)))

    def _bias_after(self, add, arrays, out, positions):
        """The fused bias, added on its own where the product could not take it (no `add` was made)."""
        if add is None and self.bias is not None:
            self.bias.strategy.run(arrays, out, positions)

    def groups(self):
        """The result's letters on each axis of the product as np.matmul sees it (a fused bias's layout)."""
        return self.steps[0].groups


class GemmIntoResult(Path):
    """A single GEMM whose result is the equation's: np.matmul(out=result), no copy; a bias after it
    (`fuse_bias`) is added by the GEMM's workers, each to its part as soon as it is made."""

    name = "GEMM into the result"


class TurnedGemm(Path):
    """A GEMM that would read a large operand transposed, run with that operand first as it lies in
    memory; the small result is copied into place (notation/lowering/steps.py, MatmulStep.turned)."""

    name = "GEMM, turned"

    @property
    def runs(self):
        big = max(self.product.operands, key=lambda op: math.prod(op.shape))
        name = big.view.name if big.kind == "view" else "the large operand"
        return f"np.matmul with {name} first, as it lies in memory, copied into the result"


class BatchedGemm(Path):
    """A path with a batch index in a pairwise step: np.matmul over the stacked matrices."""

    name = "batched GEMM"


class Stacked(Path):
    """One GEMM per block of a stack, on strided views of the operands and the result: no
    transposing copy in or out (notation/lowering/stacked.py); the plain path where a layout differs."""

    name = "stacked GEMM"

    def __init__(self, product, writes, steps, block):
        super().__init__(product, writes, steps)
        self.block = block
        self.into = "written into the result"

    @property
    def runs(self):
        return self.block.describe()["runs"] + ", written into the result" + self._bias_runs()

    def groups(self):
        return self.block.groups

    def describe(self) -> dict:
        return {"name": self.name, "runs": self.runs + self.note, "steps": [self.block.describe()]}

    def modelled(self, itemsize, r, copies=False) -> float:
        return super().modelled(itemsize, r, copies=False)  # strided views: nothing copied

    def run(self, arrays, out, positions):
        p = self.product
        values = [p.operands[k].evaluate(arrays, out.dtype, positions) for k in p.order]
        left = list(values)
        parts = [left.pop(k) for k in p.path_info.contraction_list[0][0]]  # the order opt_einsum's einsum names them
        add = bias_addend(self, arrays, out)
        if self.block(*parts, out, add=add) is None:
            contract(self.steps, p.path_info.contraction_list, values, out=out)
            add = None
        if p.scale != 1.0:
            out *= np.asarray(p.scale, dtype=out.dtype)
        self._bias_after(add, arrays, out, positions)


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
        return {"name": self.name, "runs": self.runs + self.note, "steps": [s.describe() for s in self.chunks[0][2]]}

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


def fuse_bias(products) -> None:
    """z = x w + b: where a GEMM writes the result and the next product adds a small view to all of it
    (a bias), the GEMM's workers add it, each to its part right after making it, while that part is
    in cache and on both cores (conv1's bias: 0.5 ms a pass over 6 MiB otherwise).  The same adds in
    the same order: the same bits.  That product is then marked `fused` and not run on its own."""
    if len(products) < 2:
        return
    p, q = products[0], products[1]
    s = p.strategy
    if not (isinstance(s, (GemmIntoResult, Stacked)) and s.writes and p.scale == 1.0 and p.direct):
        return
    if not (isinstance(q.strategy, AddView) and q.fold.plain and tuple(q.fold.view.indices) == p.out_indices):
        return
    groups, letters = s.groups(), p.einsum.split("->")[1]
    sizes = p.path_info.size_dict
    bias = q.einsum.split("->")[0]
    if not groups or sorted("".join(groups)) != sorted(letters):
        return
    small = math.prod(math.prod(sizes[i] for i in g) if set(g) & set(bias) else 1 for g in groups)
    if small * 8 > math.prod(sizes[i] for i in letters):
        return  # more than a bias: laying it out would copy as much as it saves
    s.bias, s.addends = q, {}
    q.fused = True
    q.strategy.runs = "added by the product before it, to each of its parts"


def _broadcast_to(indices, out_indices, extents):
    """(transpose, reshape) that lines an operand up with the output, size 1 where it is absent."""
    perm = tuple(sorted(range(len(indices)), key=lambda k: out_indices.index(indices[k])))
    return perm, tuple(extents[i] if i in indices else 1 for i in out_indices)
