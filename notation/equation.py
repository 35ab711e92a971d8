"""Equation and Run: parse once, bind sizes once, plan once; then call as often as needed.

    eq = Equation("z[b,i,j,k] = x[b, s1*i+p, s2*j+q, r] * w[P-p, Q-q, r, k]")
    run = eq.compile(shapes={"x": (2, 9, 9, 3), "w": (3, 3, 3, 4)}, symbols={"s1": 2, "s2": 2})
    z = run(x=x, w=w)
"""
from __future__ import annotations

import numpy as np

from .language.ast import Max, Ref, expand, free_indices, lonely_sums, walk
from .language.ellipsis import bind_dots, dotted
from .language.errors import NotationError
from .language.parser import parse, parse_einsum
from .language.printer import LATEX, signed
from .language.sizes import bind
from .lowering.lowering import CompiledSum
from .lowering.maxima import Masks
from .runtime import counters


class Equation:
    """One equation of our notation (or a numpy-style einsum string with named operands)."""

    def __init__(self, source: str, operands=None, result: str = "z"):
        if operands is not None:
            source = parse_einsum(source, operands, result)
        self.source = source
        self.lhs, self.rhs = parse(source)
        try:
            self.products = expand(self.rhs)
        except NotationError as e:
            raise e.located(source) from None

    # -- what it reads ----------------------------------------------------
    @property
    def operands(self) -> tuple:
        """The names of the tensors on the right side, in order of first appearance."""
        seen = []
        for n in walk(self.rhs):
            if isinstance(n, Ref) and n.name not in seen:
                seen.append(n.name)
        return tuple(seen)

    @property
    def lonely(self) -> list:
        """[(index, span)]: indices summed over one factor alone of a product (likely misspelt; ast.lonely_sums)."""
        return lonely_sums(self.lhs, self.rhs)

    @property
    def result(self) -> str:
        return self.lhs.name

    @property
    def has_ellipsis(self) -> bool:
        """Whether a tensor is written with `...` (its leading axes, bound when shapes are known)."""
        return bool(dotted(self.lhs, self.rhs))

    def expanded(self, shapes) -> Equation:
        """This equation with each `...` bound to fresh indices for these shapes (itself without one):
        `z[...,j] = x[...,i] * w[i,j]` on x (64, 16, 32) is `z[b,n,j] = x[b,n,i] * w[i,j]`."""
        if not self.has_ellipsis:
            return self
        lhs, rhs = bind_dots(self.source, self.lhs, self.rhs, shapes)
        return Equation(f"{lhs.name if not lhs.axes else lhs} = {rhs}")

    def summed(self, product) -> tuple:
        """Indices of one product that the left side does not name (Einstein summation)."""
        left = {i for axis in self.lhs.axes for i in axis.indices}
        return tuple(i for i in free_indices(product.factors) if i not in left)

    def __str__(self) -> str:
        lhs = self.lhs.name if not self.lhs.axes else str(self.lhs)
        return f"{lhs} = {self.rhs}"

    def __repr__(self) -> str:
        return f"Equation({str(self)!r})"

    def latex(self) -> str:
        """The equation in the report's style: explicit sums over the summed indices."""
        from .language.ast import Sum
        terms = self.rhs.terms if isinstance(self.rhs, Sum) else ((1, self.rhs),)
        parts = []
        for sign, node in terms:
            summed = self.summed(expand(node)[0]) if expand(node) else ()
            text = LATEX.group(node.latex()) if isinstance(node, Sum) and sign < 0 else node.latex()
            if summed:
                text = rf"\sum_{{{','.join(LATEX.index(i) for i in summed)}}} {text}"
            parts.append((sign, text, False))
        return f"{self.lhs.latex()} = {signed(parts, LATEX)}"

    def _repr_latex_(self) -> str:
        """In a notebook the equation is typeset as the report writes it."""
        return f"$${self.latex()}$$"

    # -- compile ------------------------------------------------------------
    def compile(self, shapes, symbols=None, optimize="auto") -> Run:
        """Bind every size, lower to views and einsum strings, plan each contraction once."""
        shapes = dict(shapes or {})
        symbols = dict(symbols or {})
        for name, shape in shapes.items():
            try:
                shapes[name] = tuple(int(n) for n in shape)
            except (TypeError, ValueError):
                raise NotationError(f"the shape of {name!r} must be a tuple of whole numbers, "
                                    f"not {shape!r}", self.source) from None
        plain = self.expanded(shapes)
        binding = bind(plain.source, plain.lhs, plain.products, shapes, symbols)
        operand_shapes = {k: v for k, v in shapes.items() if k != self.lhs.name}
        rhs = CompiledSum(binding.products, binding.result_shape, binding.extents, binding.symbols,
                          operand_shapes, optimize)
        return Run(self, binding, rhs, operand_shapes, plain)


def cost_line(c: dict) -> str:
    """A product's modelled time against its roofline bound, and the roads weighed for it."""
    text = f"modelled {c['modelled_s'] * 1e3:.3f} ms, roofline bound {c['bound_s'] * 1e3:.3f} ms"
    if c["alternatives"]:
        text += "; weighed: " + ", ".join(f"{name} {s * 1e3:.3f} ms" for name, s in c["alternatives"].items())
    return text


class Run:
    """A compiled equation: fixed shapes, views, einsum strings and planned paths."""

    def __init__(self, equation, binding, rhs, shapes, expanded=None):
        self.equation = equation
        self.expanded = expanded or equation  # the equation as lowered: each `...` bound to indices
        self.extents = dict(binding.extents)
        self.symbols = dict(binding.symbols)
        self.result_shape = tuple(binding.result_shape)
        self.shapes = {k: v for k, v in shapes.items() if k in equation.operands}
        self._rhs = rhs
        self.has_max = any(isinstance(n, Max) for n in walk(equation.rhs))
        # the right side is one operand whole, or reshaped, in its own order, nothing summed or scaled (a
        # residual's dx1 = dz, flatten's (10) and (11)): a caller that owns no copy of the result may take
        # the operand's memory (alias()); a window, a flip or a transpose is never laid out as the result
        p = rhs.products[0] if rhs.is_view else None
        self.copies = p is not None and p.perm == tuple(range(len(p.perm))) and \
            p.operands[0].view.summary()["kind"] in ("whole array", "reshape")

    @property
    def einsum(self) -> str:
        """The lowered einsum subscripts; products of a sum are joined by ' + '."""
        return " + ".join(p.einsum for p in self._rhs.products)

    @property
    def path_info(self):
        """opt_einsum's PathInfo of the contraction (a list when the right side is a sum)."""
        infos = [p.path_info for p in self._rhs.products if p.path_info is not None]
        return infos[0] if len(infos) == 1 else infos

    @property
    def positions_shape(self):
        """The shape of the max's positions mask: its free indices, then its window indices."""
        for p in self._rhs.products:
            for op in p.operands:
                if op.kind == "max":
                    return op.argument.result_shape
        return None

    def describe(self, itemsize: int = 4) -> dict:
        """The lowering as data: per product the strategy that runs it, its views, einsum, opt_einsum's
        steps and costs (each step with what runs it), how its result is written, and the road's
        modelled time and roofline bound for entries of `itemsize` bytes (notation/lowering/cost.py).

        Every figure is opt_einsum's own (PathInfo), never recomputed here.
        """
        products = []
        for p in self._rhs.products:
            strategy = p.strategy.describe()
            views = [op.view.summary() for op in p.operands if op.kind == "view"]
            nested = [{"kind": op.kind, "function": op.func.name if op.func else None,
                       "indices": list(op.indices), "shape": list(op.shape),
                       "strategies": op.argument.strategies}
                      for op in p.operands if op.kind in ("call", "max")]
            nested += [{"kind": "eye", "function": None, "indices": list(op.indices), "shape": list(op.shape),
                        "strategies": []} for op in p.operands if op.kind == "eye"]
            entry = {"einsum": p.einsum, "scale": p.scale, "strategy": strategy, "cost": p.costs(itemsize),
                     "views": views,
                     "nested": nested, "fold": p.fold.summary(p.strategy.writes), "steps": [], "naive_flops": 0,
                     "optimized_flops": 0, "speedup": 1.0, "largest_intermediate": 0}
            info = p.path_info
            if info is not None:
                walked = strategy["steps"] or [None] * len(info.contraction_list)
                entry.update(naive_flops=int(info.naive_cost), optimized_flops=int(info.opt_cost),
                             speedup=float(info.speedup), largest_intermediate=int(info.largest_intermediate),
                             steps=[{"einsum": c[2], "blas": c[4] or None, "contracted": sorted(c[1]),
                                     "kind": s["kind"] if s else None, "runs": s["runs"] if s else None}
                                    for c, s in zip(info.contraction_list, walked)])
            products.append(entry)
        return {"equation": str(self.equation), "source": self.equation.source,
                "result_shape": list(self.result_shape), "extents": dict(self.extents),
                "symbols": {k: v for k, v in self.symbols.items()}, "products": products}

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k} {tuple(v)}" for k, v in self.shapes.items())
        return f"<Run {self.equation} for {shapes or 'no operands'}>"

    def bound_seconds(self, itemsize: int = 4) -> float:
        """The roofline bound of the whole equation: its products' bounds summed (notation/lowering/cost.py)."""
        return sum(p.costs(itemsize)["bound_s"] for p in self._rhs.products)

    def modelled_seconds(self, itemsize: int = 4) -> float:
        """The modelled time of the roads its products take, on this machine's rates."""
        return sum(p.costs(itemsize)["modelled_s"] for p in self._rhs.products)

    @property
    def strategies(self) -> tuple:
        """The road each product of the right side takes, in order (see notation.lowering.strategies)."""
        return tuple(p.strategy.name for p in self._rhs.products)

    def plan(self) -> str:
        """describe(), readable: the strategy, views, einsum, opt_einsum's steps, how the result is written."""
        doc = self.describe()
        lines = [doc["equation"]]
        for p in doc["products"]:
            lines.append(f"  strategy {p['strategy']['name']}: {p['strategy']['runs']}")
            for v in p["views"]:
                if v["kind"] != "whole array":
                    lines.append(f"  {v['tensor']} viewed as ({','.join(v['indices'])}) {tuple(v['shape'])}, "
                                 f"{v['kind']}")
            for n in p["nested"]:
                if n["strategies"]:
                    lines.append(f"  nested {n['function'] or n['kind']} ({','.join(n['indices'])}) first: "
                                 f"{', '.join(n['strategies'])}")
            lines.append(f"  einsum {p['einsum']}")
            if p["steps"]:
                steps = "; ".join(f"{s['einsum']} [{s['blas'] or 'einsum'}"
                                  + (f" -> {s['runs']}" if s["runs"] else "") + "]" for s in p["steps"])
                note = "" if p["strategy"]["steps"] else " (opt_einsum's count; not how it runs)"
                lines.append(f"  path {steps}; {p['optimized_flops']:,} flops{note}, largest intermediate "
                             f"{p['largest_intermediate']:,}")
            fold = p["fold"]
            how = {"in place": "written in place", "strided add": "one strided add",
                   "strided write": "written through one strided view, each entry once,",
                   "slice-add": f"slice-add looped over ({','.join(fold['loop'])}), {fold['adds']} adds"}
            lines.append(f"  result {how[fold['kind']]} to ({','.join(fold['indices'])}) {tuple(fold['shape'])}")
            lines.append("  " + cost_line(p["cost"]))
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        """In a notebook a compiled run shows as a table: one row per product, with its strategy."""
        doc = self.describe()
        rows = [f"`{doc['source']}` compiled for {', '.join(f'{k} {tuple(v)}' for k, v in self.shapes.items())}",
                "", "| term | strategy | runs | einsum | path steps | FLOPs | result |",
                "| --- | --- | --- | --- | --- | ---: | --- |"]
        for n, p in enumerate(doc["products"], 1):
            steps = "<br>".join(f"`{s['einsum']}` {s['blas'] or 'einsum'}" for s in p["steps"])
            fold = p["fold"]
            rows.append(f"| {n} | {p['strategy']['name']} | {p['strategy']['runs']} | `{p['einsum']}` | {steps} "
                        f"| {p['optimized_flops']:,} | {fold['kind']} ({','.join(fold['indices'])}) |")
        return "\n".join(rows)

    def __call__(self, out=None, positions=False, **arrays):
        """Evaluate on arrays of the compiled shapes; with positions=True also the max masks.
        With out= the masks, like out, live in buffers this run reuses: the next call overwrites them."""
        for name, shape in self.shapes.items():
            if name not in arrays:
                raise NotationError(f"missing operand {name!r}", self.equation.source, self._span(name),
                                    hint=f"call with {', '.join(f'{n}=...' for n in self.shapes)}")
            a = arrays[name]
            if not isinstance(a, np.ndarray):
                arrays[name] = a = np.asarray(a)
            if a.shape != shape:
                raise NotationError(f"{name!r} has shape {a.shape} but this run was compiled for "
                                    f"{shape}", self.equation.source, self._span(name),
                                    hint="compile again for the new shape")
        extra = set(arrays) - set(self.shapes)
        if extra:
            raise NotationError(f"unexpected operand(s) {sorted(extra)}", self.equation.source,
                                hint=f"this equation reads {sorted(self.shapes)}")
        if out is not None and out.shape != self.result_shape:
            raise NotationError(f"out has shape {out.shape}, the result has {self.result_shape}",
                                self.equation.source)
        return self.evaluate(arrays, out, positions)

    def alias(self, arrays: dict):
        """The result as the operand's own memory, no pass over it, where `copies` holds and the view is
        C-ordered (then it holds the result's entries in the result's order, reshaped where the result is
        a reshape of it: flatten's); else None (evaluate() into a buffer then)."""
        if not self.copies:
            return None
        a = self._rhs.as_view(arrays)
        if not a.flags.c_contiguous:
            return None
        return a if a.shape == self.result_shape else a.reshape(self.result_shape)

    def evaluate(self, arrays: dict, out=None, positions=False):
        """As calling it, without checking the arrays: for a caller that passes arrays of the compiled
        shapes (the engine's layers, whose buffers are made for them), where the checks would cost
        more than a small product does.  `arrays` may hold more than the operands (a layer's env)."""
        masks = Masks(reuse=out is not None) if positions else None  # with out=, in buffers kept
        if counters.ACTIVE is None:
            z = self._rhs.evaluate(arrays, out=out, positions=masks)
        else:
            with counters.in_run(self):
                z = self._rhs.evaluate(arrays, out=out, positions=masks)
        if not positions:
            return z
        if not masks:
            raise NotationError("positions=True needs a max[...] in the equation", self.equation.source)
        found = [masks[key] for key in sorted(masks)]
        return z, (found[0] if len(found) == 1 else tuple(found))

    def _span(self, name):
        """Where the equation first reads the tensor `name`."""
        return next(n.span for n in walk(self.equation.rhs) if isinstance(n, Ref) and n.name == name)
