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
class BoundProduct:
    """One expanded term of the right side, after substitution, ready to lower."""

    coef: object  # Fraction from the equation
    scalars: tuple  # ((symbol, power), ...)
    factors: tuple
    lhs: tuple  # Affine per result axis, in this product's indices
    substitutions: dict = field(default_factory=dict)  # t -> (t', Affine)
    scale: float = 1.0  # coef times the scalar symbols' values, set once symbols are bound


@dataclass
class Binding:
    """What bind() returns: every index's range, every symbol's value, the bound products."""

    extents: dict
    symbols: dict
    products: list  # BoundProduct per product of the right side
    result_shape: tuple


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


@dataclass
class Binder:
    """What binding knows, declared up front; the phases below fill it in, in the order of PHASES."""

    source: str  # the equation, for error messages
    lhs: Ref  # the result as written
    products: list  # the right side multiplied out (ast.Product)
    shapes: dict  # tensor name -> shape, as given
    sym: dict  # symbol -> value: as given, then inferred (P = last value of p, J = count of j)
    E: dict = field(default_factory=dict)  # index -> its range (number of values)
    origin: dict = field(default_factory=dict)  # index -> where its range was first fixed
    refs: list = field(default_factory=list)  # the tensor references on the right, in order
    usage: dict = field(default_factory=dict)  # upper-case symbol -> {"last", "count"}: how it is used
    indices: set = field(default_factory=set)  # every index the equation names
    spans: dict = field(default_factory=dict)  # index or symbol -> where it first stands in the source
    bound: list = field(default_factory=list)  # BoundProduct per product, after substitution
    result_shape: tuple = ()  # the result's shape, given or inferred

    def fail(self, message, span=None, hint=None):
        return NotationError(message, self.source, span, hint)

    def constrain(self, idx, n, where, span):
        """Fix index idx's range to n, or fail if it is already fixed otherwise."""
        if idx in self.E and self.E[idx] != n:
            raise self.fail(f"index {idx!r} has size {n} here ({where}) but size {self.E[idx]} "
                            f"at {self.origin[idx]}", span, "make the shapes agree")
        if n < 1:
            raise self.fail(f"index {idx!r} would have size {n} ({where})", span,
                            "every axis needs at least one entry")
        self.E[idx] = n
        self.origin.setdefault(idx, where)

    def known(self, axis, except_symbol=None, except_index=None):
        return (all(s in self.sym or s == except_symbol for s in axis.symbols)
                and all(i in self.E or i == except_index for i in axis.indices))

    def terms(self):
        """(Affine, axis length or None, where, is_gather) for every index term now in play."""
        out = []
        for plan in self.bound:
            for f in plan.factors:
                for node in walk(f):
                    if isinstance(node, Ref):
                        for a, axis in enumerate(node.axes):
                            out.append((axis, self.shapes[node.name][a], f"axis {a} of {node.name}", True))
            for a, axis in enumerate(plan.lhs):
                out.append((axis, None, f"axis {a} of {self.lhs.name}", False))
        return out

    def span_of(self, name):
        """Where an index (a fresh t' by its t) or a symbol first stands in the source."""
        return self.spans.get(name, self.spans.get(name.rstrip("'")))


# -- phase 1: names --------------------------------------------------------------------------
def check_names(b: Binder):
    """Every tensor has a shape and one term per axis; every symbol is known and of the right kind."""
    b.refs = [n for n in _factor_nodes(b.products) if isinstance(n, Ref)]
    for ref in b.refs:
        if ref.name not in b.shapes:
            raise b.fail(f"unknown tensor {ref.name!r}", ref.span,
                         f"give its shape in shapes= (known: {sorted(b.shapes) or 'none'})")
        if ref.name == b.lhs.name:
            raise b.fail(f"{ref.name!r} is both the result and an operand", ref.span, "name the result differently")
    for ref in b.refs + [b.lhs]:
        shape = b.shapes.get(ref.name)
        if shape is not None and len(shape) != len(ref.axes):
            raise b.fail(f"{ref.name!r} has {len(ref.axes)} index term(s) here but its shape {shape} has "
                         f"{len(shape)} axes", ref.span, "give one index term per axis")
    _record_names(b)
    for ref in b.refs + [b.lhs]:
        for axis in ref.axes:
            for m in axis.monos:
                for s in m.symbols:
                    _check_term_symbol(b, s, m)
    for p in b.products:
        for s, _ in p.scalars:
            if is_extent_name(s):
                b.usage.setdefault(s, set()).add("count")
            elif s not in b.sym:
                raise b.fail(f"unknown symbol {s!r}", b.span_of(s),
                             f"give its value in symbols= (known: {sorted(b.sym) or 'none'})")


def _record_names(b: Binder):
    """Every index the equation names, and where each index and symbol first stands."""
    for ref in b.refs + [b.lhs]:
        for axis in ref.axes:
            for m in axis.monos:
                for name, span in m.names:
                    _first(b.spans, name, span)
            b.indices.update(axis.indices)
    for p in b.products:
        for name, span in p.spans:
            _first(b.spans, name, span)
    for n in _factor_nodes(b.products):
        if isinstance(n, Delta):
            b.indices.update((n.i, n.j))
        if isinstance(n, Max):
            b.indices.update(n.indices)
        for i in (n.i, n.j) if isinstance(n, Delta) else n.indices if isinstance(n, Max) else ():
            _first(b.spans, i, n.span)


def _first(spans, name, span):
    """Keep the earliest place a name stands in the source."""
    if span and (name not in spans or span[0] < spans[name][0]):
        spans[name] = span


def _check_term_symbol(b: Binder, s, m):
    """A symbol inside an index term: an upper-case extent, or a known whole number (a stride > 0)."""
    if is_extent_name(s):
        b.usage.setdefault(s, set()).add("count" if m.index else "last")
    elif s not in b.sym:
        if m.index is None and s.isalpha() and s.islower():  # `x[b,i,jj,k]`: an index spelt as a Python name
            raise b.fail(f"{s!r} is no index: an index is one lower-case letter (optionally primed, j'), and a "
                         "longer name is a symbol", m.span,
                         f"write one letter for an index, or give {s!r} a value in symbols= "
                         f"(known: {sorted(b.sym) or 'none'})")
        raise b.fail(f"unknown symbol {s!r}", m.span, f"give its value in symbols= (known: {sorted(b.sym) or 'none'})")
    elif m.index is not None:
        v = b.sym[s]
        if not float(v).is_integer() or v <= 0:
            raise b.fail(f"stride {s} = {v} must be a positive whole number", m.span, f"set {s} to 1 or more")
    elif not float(b.sym[s]).is_integer():
        raise b.fail(f"symbol {s} = {b.sym[s]} in an index term must be a whole number", m.span)


# -- phase 2: ranges from the axes -------------------------------------------------------------
def axis_constraints(b: Binder):
    """An axis indexed by a plain index or a flip `P - p` fixes that index's range."""
    for ref in b.refs + ([b.lhs] if b.lhs.name in b.shapes else []):
        shape = b.shapes[ref.name]
        for a, axis in enumerate(ref.axes):
            idx = axis.plain() or axis.flip()
            if idx is not None:
                b.constrain(idx, shape[a], f"axis {a} of {ref.name}", axis.span)
            if axis.flip():
                U = axis.monos[0].symbols[0] if axis.monos[0].index is None else axis.monos[1].symbols[0]
                if U in b.sym and b.sym[U] != shape[a] - 1:
                    raise b.fail(f"{U} = {b.sym[U]} but axis {a} of {ref.name} has {shape[a]} entries, so "
                                 f"{U} - {idx} needs {U} = {shape[a] - 1}", axis.span,
                                 f"drop {U} from symbols= or fix the shape")


def pair_extents(b: Binder) -> bool:
    """An upper-case symbol and its index agree: P is the last value of p, J the count of j."""
    changed = False
    given = {U: {"last"} for U in b.sym if is_extent_name(U) and U not in b.usage}
    for U, kinds in list(b.usage.items()) + list(given.items()):
        u = U.lower()
        if u not in b.indices:
            continue
        last = kinds == {"last"}
        if U in b.sym and u not in b.E:
            b.constrain(u, int(b.sym[U]) + (1 if last else 0), f"{U} = {b.sym[U]}", None)
            changed = True
        elif U not in b.sym and u in b.E:
            b.sym[U] = b.E[u] - 1 if last else b.E[u]
            changed = True
        elif U in b.sym and U in b.usage:  # given and used: it must agree with the shapes
            b.constrain(u, int(b.sym[U]) + (1 if last else 0), f"{U} = {b.sym[U]}", b.span_of(U))
    return changed


# -- phase 3: substitution (eq. 16) --------------------------------------------------------------
def substitute(b: Binder):
    """Each product's plan, with an output index read once inside a term replaced by a fresh index."""
    lhs_idx = {axis.plain() for axis in b.lhs.axes} - {None}  # t must be a whole axis of the result
    taken = set(b.indices)
    b.bound = []
    for prod in b.products:
        lhs_axes, factors, subs = list(b.lhs.axes), list(prod.factors), {}
        once = {i for i, n in _occurrences(factors).items() if n == 1} & lhs_idx
        for fi, f in enumerate(factors):
            if not isinstance(f, Ref):
                continue
            axes = list(f.axes)
            for ai, axis in enumerate(axes):
                found = _substitution(b, f.name, ai, axis, once - set(subs), taken)
                if found is not None:
                    t, fresh, expr = found
                    lhs_axes = [ax.substitute(t, expr) for ax in lhs_axes]
                    axes[ai] = Affine((Mono(1, (), fresh, axis.span),), axis.span)
                    subs[t] = (fresh, expr)
            factors[fi] = Ref(f.name, tuple(axes), f.span)
        b.bound.append(BoundProduct(prod.coef, prod.scalars, tuple(factors), tuple(lhs_axes), subs))


def _occurrences(factors) -> dict:
    """How often each index stands in the factors (in index terms, deltas and max subscripts)."""
    count = {}
    for f in factors:
        for node in walk(f):
            if isinstance(node, Ref):
                names = [m.index for axis in node.axes for m in axis.monos if m.index]
            elif isinstance(node, Delta):
                names = [node.i, node.j]
            elif isinstance(node, Max):
                names = list(node.indices)
            else:
                names = []
            for i in names:
                count[i] = count.get(i, 0) + 1
    return count


def _substitution(b: Binder, name, ai, axis, candidates, taken):
    """(t, t', the term t = ...) for the first output index of this term to substitute, or None."""
    if axis.plain() or axis.flip() or len(axis.indices) < 2:
        return None
    n = b.shapes[name][ai]
    for t in axis.indices:
        monos = [m for m in axis.monos if m.index == t]
        if t not in candidates or len(monos) != 1 or abs(monos[0].coef) != 1 or monos[0].symbols:
            continue
        if t in b.E and b.E[t] <= n or not _opposed(axis, t):
            continue
        fresh = t + "'"
        while fresh in taken:
            fresh += "'"
        taken.add(fresh)
        c = monos[0].coef
        rest = [m for m in axis.monos if m is not monos[0]]
        expr = Affine((Mono(c, (), fresh, monos[0].span),)
                      + tuple(Mono(-c * m.coef, m.symbols, m.index, m.span) for m in rest), axis.span)
        b.constrain(fresh, n, f"axis {ai} of {name}, substituted for {t}", axis.span)
        return t, fresh, expr
    return None


# -- phase 4: the fixed point of ranges -------------------------------------------------------------
def infer(b: Binder):
    """Ranges and extents from one another until nothing changes: extents, windows, deltas."""
    changed = True
    while changed:
        changed = pair_extents(b)
        for axis, n, where, gather in b.terms():
            changed |= _start_at_zero(b, axis)
            if gather:
                changed |= _window_range(b, axis, n, where)
        for node in _factor_nodes(b.products):
            if isinstance(node, Delta):
                for i, j in ((node.i, node.j), (node.j, node.i)):
                    if i in b.E and j not in b.E:
                        b.constrain(j, b.E[i], f"delta[{node.i},{node.j}]", node.span)
                        changed = True


def _start_at_zero(b: Binder, axis) -> bool:
    """An upper-case constant with no index of its own (eq. 16, 17) starts its term at 0."""
    changed = False
    for m in axis.monos:
        if (m.index is None and len(m.symbols) == 1 and is_extent_name(m.symbols[0])
                and m.symbols[0] not in b.sym and m.symbols[0].lower() not in b.indices
                and b.known(axis, except_symbol=m.symbols[0])):
            rest = Affine(tuple(x for x in axis.monos if x is not m))
            lo, _ = _term_range(rest.linear(b.sym), b.E)
            b.sym[m.symbols[0]] = -lo // m.coef
            changed = True
    return changed


def _window_range(b: Binder, axis, n, where) -> bool:
    """The one index of a window whose range is unknown takes the largest range that fits the axis."""
    unknown = [i for i in axis.indices if i not in b.E]
    if len(unknown) != 1 or not b.known(axis, except_index=unknown[0]):
        return False
    idx = unknown[0]
    coefs, const = axis.linear(b.sym)
    c = coefs.pop(idx, 0)
    if c == 0:
        return False
    lo, hi = _term_range((coefs, const), b.E)
    count = (n - 1 - hi) // c + 1 if c > 0 else lo // (-c) + 1
    if count < 1:
        raise b.fail(f"the window {axis} does not fit {where}, which has {n} entries", axis.span,
                     "use a smaller kernel or stride, or a larger input")
    b.constrain(idx, count, f"the window {axis} on {where}", axis.span)
    return True


# -- phase 5: results and final checks ------------------------------------------------------------
def finish(b: Binder):
    """Ranges of scattered output indices, the result's shape, and every window and scatter in bounds."""
    _scattered_ranges(b)
    for idx in sorted(b.indices | {s[0] for p in b.bound for s in p.substitutions.values()}):
        if idx not in b.E:
            U = idx.rstrip("'").upper()
            raise b.fail(f"cannot tell the range of index {idx!r}", b.span_of(idx),
                         f"give {U} (its last value) in symbols=, or the shape of the tensor it indexes")
    for axis, _n, _where, _gather in b.terms():
        for s in axis.symbols:
            if s not in b.sym:
                raise b.fail(f"cannot tell the value of {s!r}", axis.span, f"give {s} in symbols=")
    shape = [b.E[axis.plain()] if axis.plain() is not None else _term_range(axis.linear(b.sym), b.E)[1] + 1
             for axis in b.lhs.axes]
    given = b.shapes.get(b.lhs.name)
    b.result_shape = tuple(given) if given is not None else tuple(shape)
    _check_bounds(b)
    for plan in b.bound:
        plan.scale = scale(plan.coef, plan.scalars, b.sym)


def _scattered_ranges(b: Binder):
    """Output indices replaced everywhere (eq. 16's t) take their range from where they land."""
    for axis in b.lhs.axes:
        for m in axis.monos:
            t = m.index
            if t is None or t in b.E:
                continue
            highs = [_term_range(expr.linear(b.sym), b.E)[1] for plan in b.bound
                     for fresh, expr in [plan.substitutions.get(t, (None, None))] if expr is not None and b.known(expr)]
            if highs:
                b.constrain(t, max(highs) + 1, f"the scatter of {t}", m.span)
                continue
            _unknown_window(b, t)
            raise b.fail(f"index {t!r} on the left is bound by nothing on the right", m.span,
                         f"use {t!r} on the right side, or give the shape of {b.lhs.name!r} in shapes=")


def _unknown_window(b: Binder, t):
    """Where `t` is read in a window with another index of unknown range (s1*i + p with no P), that
    range is what is missing, not a binding of `t`: say so."""
    for axis, _n, where, gather in b.terms():
        if not gather or t not in axis.indices:
            continue
        others = [i for i in axis.indices if i != t and i not in b.E]
        if others:
            o = others[0]
            U = o.rstrip("'").upper()
            raise b.fail(f"cannot tell the range of index {o!r} in the window {axis} on {where}, "
                         f"so nor that of {t!r}", axis.span,
                         f"give {U} (the last value of {o}) in symbols=, e.g. {U}=1 for a window of 2")


def _check_bounds(b: Binder):
    """Every window fits its axis, every scattered position the result."""
    for axis, n, where, gather in b.terms():
        lo, hi = _term_range(axis.linear(b.sym), b.E)
        if gather and (lo < 0 or hi > n - 1):
            raise b.fail(f"the window {axis} runs over {lo}..{hi} but {where} has {n} entries (0..{n - 1})",
                         axis.span, "use a smaller kernel or stride, a larger input, or pad it")
    for plan in b.bound:
        for a, axis in enumerate(plan.lhs):
            n = b.result_shape[a]
            lo, hi = _term_range(axis.linear(b.sym), b.E)
            if lo < 0 or hi > n - 1:
                raise b.fail(f"the result position {axis} runs over {lo}..{hi} but axis {a} of {b.lhs.name} "
                             f"has {n} entries", b.lhs.axes[a].span,
                             f"give a shape for {b.lhs.name!r} that holds every position")


PHASES = (check_names, axis_constraints, pair_extents, substitute, infer, finish)


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


def bind(source, lhs, products, shapes, symbols) -> Binding:
    """Ranges, symbol values, substitutions and the result's shape, or a NotationError."""
    b = Binder(source, lhs, products, {k: tuple(int(n) for n in v) for k, v in shapes.items()}, dict(symbols))
    for phase in PHASES:
        phase(b)
    symbols_out = {k: (int(v) if float(v).is_integer() else v) for k, v in b.sym.items()}
    return Binding(dict(b.E), symbols_out, b.bound, b.result_shape)
