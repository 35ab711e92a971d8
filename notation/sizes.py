"""Binding: every index's range and every symbol's value, checked before anything runs.

Ranges come, in this order, from operand axes indexed by a plain index or a flip `P - p`,
from the result's shape when given, from upper-case symbols (`P` = last value of `p`,
`J` as a multiplier = count of `j`), and from windows: an index whose range nothing else
fixes takes the largest range for which its window fits the axis (`s1*i + p` gives the
valid convolution's output size).

An output index `t` that is a whole axis of the result and appears once on the right, with
coefficient ±1 inside a term with another index of the opposite sign (eq. 16's
`w[P + s1*i - t, ...]`; a window such as `x[i + p]` stays a gather), is *substituted*: a
fresh index `t'` spans that axis and the result is scattered to `t = P + s1*i - t'`.  That
is the report's restricted sum (only terms with `0 <= P + s1*i - t <= P`) and costs the
kernel, not the image.  It is taken when `t`'s range is not given or is longer than the axis.

An upper-case constant without its lower-case index in the equation (eq. 16, 17) is bound
so that its term starts at 0, i.e. spans its axis from the first entry.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .ast import Affine, Delta, Max, Mono, Ref, is_extent_name, walk
from .errors import NotationError


@dataclass
class ProductPlan:
    """One expanded term of the right side, after substitution, ready to lower."""

    coef: object  # Fraction from the equation
    scalars: tuple  # ((symbol, power), ...)
    factors: tuple
    lhs: tuple  # Affine per result axis, in this product's indices
    substitutions: dict = field(default_factory=dict)  # t -> (t', Affine)
    scale: float = 1.0  # coef times the scalar symbols' values, set once symbols are bound


@dataclass
class Binding:
    extents: dict
    symbols: dict
    products: list
    result_shape: tuple
    lhs: Ref


def _factor_nodes(products):
    for p in products:
        for f in p.factors:
            yield from walk(f)


def _term_range(linear, extents):
    coefs, const = linear
    lo = hi = const
    for idx, c in coefs.items():
        span = c * (extents[idx] - 1)
        lo += min(0, span)
        hi += max(0, span)
    return lo, hi


class _Binder:
    def __init__(self, source, lhs, products, shapes, symbols):
        self.source = source
        self.lhs = lhs
        self.products = products
        self.shapes = {k: tuple(int(n) for n in v) for k, v in shapes.items()}
        self.sym = dict(symbols)
        self.E = {}
        self.origin = {}

    def fail(self, message, span=None, hint=None):
        return NotationError(message, self.source, span, hint)

    # -- checks on names ------------------------------------------------
    def check_names(self):
        nodes = list(_factor_nodes(self.products))
        self.refs = [n for n in nodes if isinstance(n, Ref)]
        for ref in self.refs:
            if ref.name not in self.shapes:
                raise self.fail(f"unknown tensor {ref.name!r}", ref.span,
                                f"give its shape in shapes= (known: {sorted(self.shapes) or 'none'})")
            if ref.name == self.lhs.name:
                raise self.fail(f"{ref.name!r} is both the result and an operand", ref.span,
                                "name the result differently")
        for ref in self.refs + [self.lhs]:
            shape = self.shapes.get(ref.name)
            if shape is not None and len(shape) != len(ref.axes):
                raise self.fail(f"{ref.name!r} has {len(ref.axes)} index term(s) here but its shape "
                                f"{shape} has {len(shape)} axes", ref.span,
                                "give one index term per axis")
        self.usage = {}
        for ref in self.refs + [self.lhs]:
            for axis in ref.axes:
                for m in axis.monos:
                    for s in m.symbols:
                        if is_extent_name(s):
                            self.usage.setdefault(s, set()).add("count" if m.index else "last")
                        elif s not in self.sym:
                            raise self.fail(f"unknown symbol {s!r}", m.span,
                                            f"give its value in symbols= (known: {sorted(self.sym) or 'none'})")
                        elif m.index is not None:
                            v = self.sym[s]
                            if not float(v).is_integer() or v <= 0:
                                raise self.fail(f"stride {s} = {v} must be a positive whole number",
                                                m.span, f"set {s} to 1 or more")
                        elif not float(self.sym[s]).is_integer():
                            raise self.fail(f"symbol {s} = {self.sym[s]} in an index term must be a "
                                            "whole number", m.span)
        for p in self.products:
            for s, _ in p.scalars:
                if is_extent_name(s):
                    self.usage.setdefault(s, set()).add("count")
                elif s not in self.sym:
                    raise self.fail(f"unknown symbol {s!r}", _scalar_span(self.source, s),
                                    f"give its value in symbols= (known: {sorted(self.sym) or 'none'})")
        self.indices = set()
        for ref in self.refs + [self.lhs]:
            for axis in ref.axes:
                self.indices.update(axis.indices)
        for n in _factor_nodes(self.products):
            if isinstance(n, Delta):
                self.indices.update((n.i, n.j))
            if isinstance(n, Max):
                self.indices.update(n.indices)

    # -- ranges ----------------------------------------------------------
    def constrain(self, idx, n, where, span):
        if idx in self.E and self.E[idx] != n:
            raise self.fail(f"index {idx!r} has size {n} here ({where}) but size {self.E[idx]} "
                            f"at {self.origin[idx]}", span, "make the shapes agree")
        if n < 1:
            raise self.fail(f"index {idx!r} would have size {n} ({where})", span,
                            "every axis needs at least one entry")
        self.E[idx] = n
        self.origin.setdefault(idx, where)

    def axis_constraints(self):
        for ref in self.refs + ([self.lhs] if self.lhs.name in self.shapes else []):
            shape = self.shapes[ref.name]
            for a, axis in enumerate(ref.axes):
                idx = axis.plain() or axis.flip()
                if idx is not None:
                    self.constrain(idx, shape[a], f"axis {a} of {ref.name}", axis.span)
                if axis.flip():
                    U = axis.monos[0].symbols[0] if axis.monos[0].index is None else axis.monos[1].symbols[0]
                    if U in self.sym and self.sym[U] != shape[a] - 1:
                        raise self.fail(f"{U} = {self.sym[U]} but axis {a} of {ref.name} has {shape[a]} "
                                        f"entries, so {U} - {idx} needs {U} = {shape[a] - 1}", axis.span,
                                        f"drop {U} from symbols= or fix the shape")

    def pair_extents(self):
        changed = False
        given = {U: {"last"} for U in self.sym if is_extent_name(U) and U not in self.usage}
        for U, kinds in list(self.usage.items()) + list(given.items()):
            u = U.lower()
            if u not in self.indices:
                continue
            last = kinds == {"last"}
            if U in self.sym and u not in self.E:
                n = int(self.sym[U]) + (1 if last else 0)
                self.constrain(u, n, f"{U} = {self.sym[U]}", None)
                changed = True
            elif U not in self.sym and u in self.E:
                self.sym[U] = self.E[u] - 1 if last else self.E[u]
                changed = True
            elif U in self.sym and U in self.usage:  # given and used: it must agree with the shapes
                n = int(self.sym[U]) + (1 if last else 0)
                self.constrain(u, n, f"{U} = {self.sym[U]}", _scalar_span(self.source, U))
        return changed

    # -- substitution (eq. 16) -----------------------------------------
    def substitute(self):
        lhs_idx = {axis.plain() for axis in self.lhs.axes} - {None}  # t must be a whole axis of the result
        taken = set(self.indices)
        plans = []
        for prod in self.products:
            lhs_axes = list(self.lhs.axes)
            factors = list(prod.factors)
            occurrences = {}
            for f in factors:
                for node in walk(f):
                    if isinstance(node, Ref):
                        for axis in node.axes:
                            for m in axis.monos:
                                if m.index:
                                    occurrences[m.index] = occurrences.get(m.index, 0) + 1
                    elif isinstance(node, Delta):
                        for i in (node.i, node.j):
                            occurrences[i] = occurrences.get(i, 0) + 1
                    elif isinstance(node, Max):
                        for i in node.indices:
                            occurrences[i] = occurrences.get(i, 0) + 1
            subs = {}
            for fi, f in enumerate(factors):
                if not isinstance(f, Ref):
                    continue
                axes = list(f.axes)
                for ai, axis in enumerate(axes):
                    if axis.plain() or axis.flip() or len(axis.indices) < 2:
                        continue
                    n = self.shapes[f.name][ai]
                    for t in axis.indices:
                        monos = [m for m in axis.monos if m.index == t]
                        if (len(monos) != 1 or abs(monos[0].coef) != 1 or monos[0].symbols
                                or t not in lhs_idx or occurrences.get(t) != 1 or t in subs):
                            continue
                        if t in self.E and self.E[t] <= n or not _opposed(axis, t):
                            continue
                        fresh = t + "'"
                        while fresh in taken:
                            fresh += "'"
                        taken.add(fresh)
                        c = monos[0].coef
                        rest = [m for m in axis.monos if m is not monos[0]]
                        expr = Affine((Mono(c, (), fresh, monos[0].span),)
                                      + tuple(Mono(-c * m.coef, m.symbols, m.index, m.span) for m in rest),
                                      axis.span)
                        lhs_axes = [ax.substitute(t, expr) for ax in lhs_axes]
                        axes[ai] = Affine((Mono(1, (), fresh, axis.span),), axis.span)
                        self.constrain(fresh, n, f"axis {ai} of {f.name}, substituted for {t}", axis.span)
                        subs[t] = (fresh, expr)
                        break
                factors[fi] = Ref(f.name, tuple(axes), f.span)
            plans.append(ProductPlan(prod.coef, prod.scalars, tuple(factors), tuple(lhs_axes), subs))
        self.plans = plans

    # -- fixed point -----------------------------------------------------
    def terms(self):
        """(Affine, axis length or None, where, is_gather) for every index term now in play."""
        out = []
        for plan in self.plans:
            for f in plan.factors:
                for node in walk(f):
                    if isinstance(node, Ref):
                        for a, axis in enumerate(node.axes):
                            out.append((axis, self.shapes[node.name][a], f"axis {a} of {node.name}", True))
            for a, axis in enumerate(plan.lhs):
                out.append((axis, None, f"axis {a} of {self.lhs.name}", False))
        return out

    def known(self, axis, except_symbol=None, except_index=None):
        return (all(s in self.sym or s == except_symbol for s in axis.symbols)
                and all(i in self.E or i == except_index for i in axis.indices))

    def infer(self):
        changed = True
        while changed:
            changed = self.pair_extents()
            for axis, n, where, gather in self.terms():
                # an upper-case constant with no index of its own starts its term at 0
                for m in axis.monos:
                    if (m.index is None and len(m.symbols) == 1 and is_extent_name(m.symbols[0])
                            and m.symbols[0] not in self.sym and m.symbols[0].lower() not in self.indices
                            and self.known(axis, except_symbol=m.symbols[0])):
                        U = m.symbols[0]
                        rest = Affine(tuple(x for x in axis.monos if x is not m))
                        lo, _ = _term_range(rest.linear(self.sym), self.E)
                        self.sym[U] = -lo // m.coef
                        changed = True
                if not gather:
                    continue
                unknown = [i for i in axis.indices if i not in self.E]
                if len(unknown) == 1 and self.known(axis, except_index=unknown[0]):
                    idx = unknown[0]
                    coefs, const = axis.linear(self.sym)
                    c = coefs.pop(idx, 0)
                    if c == 0:
                        continue
                    lo, hi = _term_range((coefs, const), self.E)
                    count = (n - 1 - hi) // c + 1 if c > 0 else lo // (-c) + 1
                    if count < 1:
                        raise self.fail(f"the window {axis} does not fit {where}, which has {n} entries",
                                        axis.span, "use a smaller kernel or stride, or a larger input")
                    self.constrain(idx, count, f"the window {axis} on {where}", axis.span)
                    changed = True
            for node in _factor_nodes(self.products):
                if isinstance(node, Delta):
                    for a, b in ((node.i, node.j), (node.j, node.i)):
                        if a in self.E and b not in self.E:
                            self.constrain(b, self.E[a], f"delta[{node.i},{node.j}]", node.span)
                            changed = True

    def _unknown_window(self, t):
        """Where `t` is read in a window with another index of unknown range (s1*i + p with no P), that
        range is what is missing, not a binding of `t`: say so."""
        for axis, n, where, gather in self.terms():
            if not gather or t not in axis.indices:
                continue
            others = [i for i in axis.indices if i != t and i not in self.E]
            if others:
                o = others[0]
                U = o.rstrip("'").upper()
                raise self.fail(f"cannot tell the range of index {o!r} in the window {axis} on {where}, "
                                f"so nor that of {t!r}", axis.span,
                                f"give {U} (the last value of {o}) in symbols=, e.g. {U}=1 for a window of 2")

    # -- results ---------------------------------------------------------
    def finish(self):
        # original output indices replaced everywhere take their range from where they land
        for axis in self.lhs.axes:
            for m in axis.monos:
                t = m.index
                if t is None or t in self.E:
                    continue
                highs = []
                for plan in self.plans:
                    if t in plan.substitutions:
                        fresh, expr = plan.substitutions[t]
                        if self.known(expr):
                            highs.append(_term_range(expr.linear(self.sym), self.E)[1])
                if highs:
                    self.constrain(t, max(highs) + 1, f"the scatter of {t}", m.span)
                else:
                    self._unknown_window(t)
                    raise self.fail(f"index {t!r} on the left is bound by nothing on the right", m.span,
                                    f"use {t!r} on the right side, or give the shape of "
                                    f"{self.lhs.name!r} in shapes=")
        for idx in sorted(self.indices | {i for p in self.plans for s in p.substitutions.values()
                                          for i in [s[0]]}):
            if idx not in self.E:
                span = _index_span(self.source, idx)
                U = idx.rstrip("'").upper()
                raise self.fail(f"cannot tell the range of index {idx!r}", span,
                                f"give {U} (its last value) in symbols=, or the shape of the tensor "
                                "it indexes")
        for axis, n, where, gather in self.terms():
            for s in axis.symbols:
                if s not in self.sym:
                    raise self.fail(f"cannot tell the value of {s!r}", axis.span, f"give {s} in symbols=")
        shape = []
        for a, axis in enumerate(self.lhs.axes):
            idx = axis.plain()
            if idx is not None:
                shape.append(self.E[idx])
            else:
                shape.append(_term_range(axis.linear(self.sym), self.E)[1] + 1)
        given = self.shapes.get(self.lhs.name)
        self.result_shape = tuple(given) if given is not None else tuple(shape)
        # every window must fit its axis, every scatter its result
        for axis, n, where, gather in self.terms():
            lo, hi = _term_range(axis.linear(self.sym), self.E)
            if gather:
                if lo < 0 or hi > n - 1:
                    raise self.fail(f"the window {axis} runs over {lo}..{hi} but {where} has {n} entries "
                                    f"(0..{n - 1})", axis.span,
                                    "use a smaller kernel or stride, a larger input, or pad it")
        for plan in self.plans:
            for a, axis in enumerate(plan.lhs):
                n = self.result_shape[a]
                lo, hi = _term_range(axis.linear(self.sym), self.E)
                if lo < 0 or hi > n - 1:
                    span = self.lhs.axes[a].span
                    raise self.fail(f"the result position {axis} runs over {lo}..{hi} but axis {a} of "
                                    f"{self.lhs.name} has {n} entries", span,
                                    f"give a shape for {self.lhs.name!r} that holds every position")
        for plan in self.plans:
            plan.scale = scale(plan.coef, plan.scalars, self.sym)


def _opposed(axis, t) -> bool:
    """Whether another index of the term runs against `t` (`s1*i - t`), so `t` spans more than the axis."""
    c = next(m.coef for m in axis.monos if m.index == t)
    return any(m.index not in (None, t) and m.coef * c < 0 for m in axis.monos)


def scale(coef, scalars, symbols) -> float:
    """A product's numeric factor: its coefficient times its scalar symbols' values."""
    out = float(coef)
    for s, k in scalars:
        out *= float(symbols[s]) ** k
    return out


def _index_span(source, idx):
    import re
    m = re.search(rf"(?<![A-Za-z0-9_]){re.escape(idx.rstrip(chr(39)))}(?![A-Za-z0-9_])", source)
    return (m.start(), m.end()) if m else None


def _scalar_span(source, name):
    import re
    m = re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_'\[])", source)
    return (m.start(), m.end()) if m else None


def bind(source, lhs, products, shapes, symbols) -> Binding:
    """Ranges, symbol values, substitutions and the result's shape, or a NotationError."""
    b = _Binder(source, lhs, products, shapes, symbols)
    b.check_names()
    b.axis_constraints()
    b.pair_extents()
    b.substitute()
    b.infer()
    b.finish()
    symbols_out = {k: (int(v) if float(v).is_integer() else v) for k, v in b.sym.items()}
    return Binding(dict(b.E), symbols_out, b.plans, b.result_shape, lhs)
