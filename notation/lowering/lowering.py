"""Lowering: index terms become zero-copy views, each product a planned contraction.

An operand `x[b, s1*i+p, s2*j+q, r]` becomes a strided view with one axis per index
(notation/lowering/views.py: stride s1 for i, 1 for p, ...); a flip `P - p` a negative stride.  What is
left is a plain einsum such as `bipjqr,pqrk->bijk`, whose path opt_einsum plans once and
whose strategy (notation/lowering/strategies.py) is chosen once.  A result with index terms (a
scatter, eq. 16, 17, 19) is folded back through a strided view of the result: one in-place
add where positions never collide, else one slice-add per kernel offset.

The stages' names: ast.Product (a term of the expanded right side) -> sizes.BoundProduct
(its ranges and substitutions known) -> CompiledProduct (views, path, strategy, fold); a
CompiledSum is the compiled right side, writing one result.
"""
from __future__ import annotations

import math

import numpy as np
import opt_einsum as oe

from ..language.ast import Affine, Call, Delta, Max, Mono, Ref, expand, free_indices
from ..language.sizes import BoundProduct, scale
from ..mathematics.functions import FUNCTIONS
from ..runtime import counters, parallel
from . import cost
from .chains import Chain
from .folds import Fold
from .maxima import window_max
from .roads import choose
from .steps import make_step
from .strategies import fuse_bias
from .views import View

CHUNK_ELEMENTS = 1 << 20  # a looped scatter's result is made in slices of about this many entries


class Operand:
    """A leaf of a product: an input viewed, a Kronecker identity, or a sub-result."""

    def __init__(self, kind, indices, shape, view=None, value=None, argument=None, func=None, max_=None,
                 key=None):
        self.kind, self.indices, self.shape = kind, tuple(indices), tuple(shape)
        self.view, self.value, self.argument, self.func, self.max = view, value, argument, func, max_
        self.key = key  # a max's place in the source, naming its positions mask
        self.distinct = len(set(self.indices)) == len(self.indices)  # no diagonal such as x[i,i]
        self.planes = None  # the positions mask's buffer, window axes first, kept between runs
        self.entries = math.prod(self.shape)  # entries read from memory (a window's array, not its view)
        self.kept = {}  # a nested function's result and argument, in buffers kept between runs

    def _kept(self, what, shape, dtype):
        """The buffer kept for `what` (this operand's argument), made on first use for this shape and dtype."""
        buf = self.kept.get(what)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
            buf = self.kept[what] = np.empty(shape, dtype)
        return buf

    def evaluate(self, arrays, dtype, positions, out=None):
        if self.kind == "view":
            return self.view(arrays[self.view.name])
        if self.kind == "eye":
            if self.value.dtype != dtype:  # cast once, not every step
                self.value = self.value.astype(dtype)
            return self.value
        inner = self.argument.as_view(arrays)
        if inner is None:
            inner = self.argument.evaluate(arrays, positions=positions,
                                           out=self._kept("argument", self.argument.result_shape,
                                                          self.argument.dtype(arrays)))
        if self.kind == "call":
            if out is None:
                kept = self.kept.get("result")
                if kept is not None and kept.dtype == inner.dtype and kept.shape == inner.shape:
                    return parallel.elementwise(self.func.array, (inner,), kept)  # its buffer, made once
                result = self.func.array(inner)  # the function picks its result's type (drelu's may be bool)
                if result.dtype == inner.dtype and result.base is None and result is not inner:
                    self.kept["result"] = result  # written again next time: nothing allocated per step
                return result
            return parallel.elementwise(self.func.array, (inner,), out)  # a large one on both cores
        want = positions is not None and self.key not in positions  # one mask per max, however often used
        reuse = want and positions.reuse
        values, mask = window_max(inner, len(self.max), want, out, self.planes if reuse else None)
        if want:
            positions[self.key] = mask
            if reuse:
                self.planes = mask.base  # the mask's own buffer, written again next run
        return values


class CompiledProduct:
    """One product: its operands, its planned contraction, its fold, and the strategy that runs it."""

    fused = False  # run by the product before it (strategies.fuse_bias), not on its own

    def __init__(self, plan: BoundProduct, extents, symbols, shapes, result_shape, optimize, letters,
                 first=True):
        factors, lhs = self._rename_deltas(plan.factors, plan.lhs, extents)
        self.scale = plan.scale
        self.extents = extents
        self.operands = [self._operand(f, extents, symbols, shapes, optimize, letters) for f in factors]
        present = []
        for op in self.operands:
            for i in op.indices:
                if i not in present:
                    present.append(i)
        lhs_order = []
        for axis in lhs:
            for i in axis.indices:
                if i not in lhs_order:
                    lhs_order.append(i)
        self.out_indices = tuple(i for i in lhs_order if i in present)
        self.summed = tuple(i for i in present if i not in lhs_order)
        # opt_einsum hands a pair to its GEMM last-first: the operand that leads the output goes
        # last, so the product is written in output order, not transposed
        self.order = list(range(len(self.operands)))
        if (len(self.operands) == 2 and self.out_indices and self.out_indices[0] in self.operands[0].indices
                and self.out_indices[0] not in self.operands[1].indices):
            self.order.reverse()
        for i in present + lhs_order:
            _assign_letter(letters, i)
        out = "->" + "".join(letters[i] for i in self.out_indices)
        self.einsum = ",".join("".join(letters[i] for i in op.indices) for op in self.operands) + out
        ordered = [self.operands[k] for k in self.order]
        executed = ",".join("".join(letters[i] for i in op.indices) for op in ordered) + out
        self.path_info = None
        if self.operands:
            # the path is searched once; PathInfo is its account, and the strategy walks its steps
            _, self.path_info = oe.contract_path(executed, *[op.shape for op in ordered], shapes=True,
                                                 optimize=optimize)
        self.fold = Fold(lhs, self.out_indices, extents, symbols, result_shape)
        self.reshape = None  # the result's shape as this product writes it, where that is a reshape of it
        self._shaped = None  # (out, its reshape) of the last run: the same buffer every step
        axes = self.fold.view.indices  # a bias over such a result (its out_indices fewer) too: fused after it
        if self.fold.reshape and tuple(i for i in axes if i in self.out_indices) == self.out_indices:
            self.reshape = self.fold.view.shape
            lhs, lhs_order = tuple(Affine((Mono(1, (), i),)) for i in axes), list(axes)
            self.fold = Fold(lhs, self.out_indices, extents, symbols, self.reshape)
        self.chunks = self._chunking(lhs, extents, symbols, result_shape, executed, ordered)
        # one viewed operand, nothing summed, unit scale, plain result: the result is a transposed view
        self.perm = None
        if (len(self.operands) == 1 and self.operands[0].kind == "view" and not self.summed
                and self.scale == 1.0 and self.fold.plain and self.operands[0].distinct
                and tuple(lhs_order) == self.out_indices):
            self.perm = tuple(self.operands[0].indices.index(i) for i in self.out_indices)
        self.direct = self.fold.plain and tuple(lhs_order) == self.out_indices and len(result_shape) > 0
        self.strategy = choose(self, first)

    def _chunking(self, lhs, extents, symbols, result_shape, executed, ordered):
        """A looped scatter over a large result runs in slices of its leading index (the batch),
        so each slice-add reads a result that is still in cache: [(start, stop, steps, path, fold)]."""
        if not self.fold.loop or not self.out_indices or any(op.kind != "view" for op in self.operands):
            return None
        c = self.out_indices[0]
        axes = [a for a, ax in enumerate(lhs) if c in ax.indices]
        if len(axes) != 1 or lhs[axes[0]].plain() != c or c in self.fold.loop:
            return None
        for op in self.operands:
            if c in op.indices:
                row = op.view.coefs[op.indices.index(c)]
                if sum(1 for x in row if x) != 1 or 1 not in row or any(
                        r[row.index(1)] for k, r in enumerate(op.view.coefs) if op.indices[k] != c):
                    return None
        per = int(np.prod([extents[i] for i in self.out_indices])) // extents[c]
        size = max(1, CHUNK_ELEMENTS // max(per, 1))
        if size >= extents[c]:
            return None
        chunks, plans = [], {}
        path = self.path_info.path
        for start in range(0, extents[c], size):
            stop = min(start + size, extents[c])
            m = stop - start
            if m not in plans:
                sub = dict(extents, **{c: m})
                shapes = [tuple(m if i == c else n for i, n in zip(op.indices, op.shape)) for op in ordered]
                shape = tuple(m if a == axes[0] else n for a, n in enumerate(result_shape))
                _, info = oe.contract_path(executed, *shapes, shapes=True, optimize=path)
                steps = [make_step(s[2], info.size_dict, prefer_out=False) for s in info.contraction_list]
                plans[m] = (steps, info.contraction_list, Fold(lhs, self.out_indices, sub, symbols, shape))
            chunks.append((start, stop) + plans[m])
        self.chunk_index, self.chunk_axis = c, axes[0]
        return chunks

    @staticmethod
    def _rename_deltas(factors, lhs, extents):
        """delta[i,j] over equal ranges: write i for j (a diagonal); else keep it as an identity."""
        factors, lhs = list(factors), list(lhs)
        while True:  # each renaming rewrites the deltas still to come (delta[i,j] * delta[j,k])
            f = next((g for g in factors if isinstance(g, Delta) and extents[g.i] == extents[g.j]), None)
            if f is None:
                return factors, lhs
            factors.remove(f)
            if f.i != f.j:
                rep = Affine((Mono(1, (), f.i),))
                factors = [_substitute_node(g, f.j, rep, f.i) for g in factors]
                lhs = [ax.substitute(f.j, rep) for ax in lhs]

    def _operand(self, f, extents, symbols, shapes, optimize, letters):
        if isinstance(f, Ref):
            view = View.of(f, extents, symbols, shapes[f.name])
            op = Operand("view", view.indices, view.shape, view=view)
            op.array_shape = tuple(shapes[f.name])  # the array it views (a road's model lays it out)
            op.entries = min(math.prod(view.shape), math.prod(shapes[f.name]))  # what memory holds of it
            return op
        if isinstance(f, Delta):
            return Operand("eye", (f.i, f.j), (extents[f.i], extents[f.j]),
                           value=np.eye(extents[f.i], extents[f.j]))
        if isinstance(f, Call):
            idx = tuple(free_indices([f.arg]))
            arg = CompiledSum.sub(f.arg, idx, extents, symbols, shapes, optimize, letters)
            op = Operand("call", idx, arg.result_shape, argument=arg, func=FUNCTIONS[f.func])
            op.entries = arg.entries  # what memory holds of what it reads
            return op
        if isinstance(f, Max):
            free = [i for i in free_indices([f.arg]) if i not in f.indices]
            arg = CompiledSum.sub(f.arg, tuple(free) + tuple(f.indices), extents, symbols, shapes,
                               optimize, letters)
            op = Operand("max", free, [extents[i] for i in free], argument=arg, max_=f.indices, key=f.span)
            op.entries = arg.entries
            return op
        raise TypeError(f)

    def costs(self, itemsize=4, rates=None) -> dict:
        """The road's modelled seconds, its roofline bound (its FLOPs at the GEMM rate or the bytes it
        must read and write once at the bandwidth), and every road that was weighed (notation/lowering/cost.py)."""
        r = rates or cost.rates()
        flops = int(self.path_info.opt_cost) if self.path_info is not None else 0
        entries = sum(op.entries for op in self.operands) + math.prod(self.fold.view.shape)
        alternatives = self.strategy.alternatives or {}
        return {"modelled_s": self.strategy.modelled(itemsize, r),
                "bound_s": cost.bound_seconds(flops, entries, itemsize, r),
                "alternatives": dict(alternatives)}

    def run(self, arrays, out, positions):
        """Write (first product) or add this product into out, by the strategy chosen at compile time."""
        if self.reshape is not None and not out.flags.c_contiguous:  # made in a C-ordered copy, then put back
            whole = np.ascontiguousarray(out)
            self.run(arrays, whole, positions)
            out[...] = whole
            return
        if self.reshape is not None:
            shaped = self._shaped
            if shaped is None or shaped[0] is not out:  # a step passes the same buffer: its view made once
                shaped = self._shaped = (out, out.reshape(self.reshape))  # a view: out is C-ordered
            out = shaped[1]
        if counters.ACTIVE is None:
            self.strategy.run(arrays, out, positions)
            return
        with counters.timing(self.strategy.name):
            self.strategy.run(arrays, out, positions)


def _assign_letter(letters, index):
    """An index keeps its own letter in the einsum string when free (`t'` gets a fresh one)."""
    if index in letters:
        return
    used = set(letters.values())
    if len(index) == 1 and index not in used:
        letters[index] = index
        return
    if index.rstrip("'") != index and index[0].upper() not in used:  # t' is written T
        letters[index] = index[0].upper()
        return
    n = 0
    while oe.get_symbol(n) in used or oe.get_symbol(n) in letters:
        n += 1
    letters[index] = oe.get_symbol(n)


def _substitute_node(node, idx, rep, new_name):
    if isinstance(node, Ref):
        return Ref(node.name, tuple(a.substitute(idx, rep) for a in node.axes), node.span)
    if isinstance(node, Delta):
        return Delta(new_name if node.i == idx else node.i, new_name if node.j == idx else node.j, node.span)
    if isinstance(node, Call):
        return Call(node.func, _substitute_node(node.arg, idx, rep, new_name), node.span)
    if isinstance(node, Max):
        return Max(node.indices, _substitute_node(node.arg, idx, rep, new_name), node.span)
    from ..language.ast import Mul, Sum
    if isinstance(node, Sum):
        return Sum(tuple((s, _substitute_node(n, idx, rep, new_name)) for s, n in node.terms), node.span)
    if isinstance(node, Mul):
        return Mul(tuple((o, _substitute_node(n, idx, rep, new_name)) for o, n in node.factors), node.span)
    return node


class CompiledSum:
    """The right side's products, each planned once, writing one result."""

    def __init__(self, bound, result_shape, extents, symbols, shapes, optimize, letters=None):
        self.letters = {} if letters is None else letters
        self.result_shape = tuple(result_shape)
        self.products = [CompiledProduct(p, extents, symbols, shapes, result_shape, optimize, self.letters,
                                        first=(n == 0)) for n, p in enumerate(bound)]
        if len(bound) == 2 and not self.products[0].strategy.writes:
            # a + b is b + a to the bit: the term that can write the whole result goes first, so that
            # nothing is zeroed before it (a derived dx = dmu[k] / count + dxc[b,i,j,k])
            swapped = CompiledProduct(bound[1], extents, symbols, shapes, result_shape, optimize, self.letters)
            if swapped.strategy.writes:
                self.products = [swapped, CompiledProduct(bound[0], extents, symbols, shapes, result_shape,
                                                          optimize, self.letters, first=False)]
        self.needs_zero = not (self.products and self.products[0].strategy.writes)
        fuse_bias(self.products)
        self.chain = Chain.fit(self) or Chain.nested(self)  # all of it in one pass, where every term is elementwise

    @classmethod
    def sub(cls, node, out_indices, extents, symbols, shapes, optimize, letters):
        """The compiled argument of a function or a max, over the given indices."""
        lhs = tuple(Affine((Mono(1, (), i),)) for i in out_indices)
        bound = [BoundProduct(p.coef, p.scalars, p.factors, lhs, {}, scale(p.coef, p.scalars, symbols))
                 for p in expand(node)]
        return cls(bound, [extents[i] for i in out_indices], extents, symbols, shapes, optimize, letters)

    @property
    def entries(self) -> int:
        """Entries its products read from memory (each array once, a window's array, not its view)."""
        return sum(op.entries for p in self.products for op in p.operands)

    def dtype(self, arrays):
        names = self.__dict__.get("names")
        if names is None:  # the tensors it reads, found once (a nested function asks every call)
            names = self.names = sorted({op.view.name for p in self.products for op in _leaves(p)})
        return np.result_type(*[arrays[n].dtype for n in names]) if names else np.dtype(np.float64)

    @property
    def strategies(self) -> list:
        """What runs for each product; an argument that is a view of an input runs nothing."""
        if self.is_view:
            return ["view (no copy)"]
        return [p.strategy.name for p in self.products]

    @property
    def is_view(self) -> bool:
        return len(self.products) == 1 and self.products[0].perm is not None

    def as_view(self, arrays):
        """The result as a view of an input, when it is one (a window, a flip): no copy, no einsum."""
        if not self.is_view:
            return None
        p = self.products[0]
        return p.operands[0].view(arrays[p.operands[0].view.name]).transpose(p.perm)

    def evaluate(self, arrays, out=None, positions=None):
        if self.chain is not None:
            if out is None:
                out = np.empty(self.result_shape, dtype=self.dtype(arrays))
            if self.chain.run(arrays, out, positions):
                return out
        if out is None:
            dtype = self.dtype(arrays)
            out = (np.zeros if self.needs_zero else np.empty)(self.result_shape, dtype=dtype)
        elif self.needs_zero:
            out[...] = 0
        for p in self.products:
            if not p.fused:
                p.run(arrays, out, positions)
        return out


def _leaves(product):
    for op in product.operands:
        if op.kind == "view":
            yield op
        elif op.argument is not None:
            for p in op.argument.products:
                yield from _leaves(p)
