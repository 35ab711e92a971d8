"""The parsed equation: immutable nodes that print back in our notation and in LaTeX.

Index terms are affine: a sum of monomials, each an integer times symbols (strides such as
`s1`, upper-case extents such as `P` or `J`) times at most one index.  Upper-case letters
follow one rule (equations.md): as an additive constant (`P - p`, `P + s1*i - t`) a letter
is the *last value* of its lower-case index's range; as a multiplier of an index
(`i*J*K + j*K + k`) it is the *count* of that range.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction

from .printer import LATEX, TEXT, affine, render, signed

Span = tuple  # (start, end) character offsets in the source


class Printable:
    """A node prints itself in our notation (str) and as the report typesets it (latex()),
    both through the one printer in notation/language/printer.py."""

    def __str__(self) -> str:
        return render(self, TEXT)

    def latex(self) -> str:
        return render(self, LATEX)


def is_index_name(name: str) -> bool:
    """An index is one lower-case letter, optionally primed: `i`, `p'`."""
    return len(name.rstrip("'")) == 1 and name[0].islower()


def is_extent_name(name: str) -> bool:
    """An extent is one upper-case letter: `P` (last value of p) or `J` (count of j)."""
    return len(name) == 1 and name.isupper()


@dataclass(frozen=True)
class Mono:
    """coef * symbols * index, one monomial of an index term."""

    coef: int
    symbols: tuple = ()
    index: str | None = None
    span: Span = field(default=(0, 0), compare=False)
    names: tuple = field(default=(), compare=False)  # ((symbol or index, its own span), ...) as parsed

    def value(self, symvals) -> int:
        out = self.coef
        for s in self.symbols:
            out *= symvals[s]
        return out


@dataclass(frozen=True)
class Affine(Printable):
    """An index term: a sum of monomials, e.g. `s1*i + p` or `P - p`."""

    monos: tuple
    span: Span = field(default=(0, 0), compare=False)
    kind = "term"

    def render(self, d) -> str:
        return affine(self, d)

    @property
    def indices(self) -> tuple:
        seen = []
        for m in self.monos:
            if m.index is not None and m.index not in seen:
                seen.append(m.index)
        return tuple(seen)

    @property
    def symbols(self) -> tuple:
        seen = []
        for m in self.monos:
            for s in m.symbols:
                if s not in seen:
                    seen.append(s)
        return tuple(seen)

    def plain(self) -> str | None:
        """The index if this term is just one index with coefficient 1."""
        if len(self.monos) == 1:
            m = self.monos[0]
            if m.index is not None and m.coef == 1 and not m.symbols:
                return m.index
        return None

    def flip(self) -> str | None:
        """The index if this term is a flip `U - u` of its own range (eq. 15's `P - p`)."""
        if len(self.monos) != 2:
            return None
        a, b = self.monos
        if b.index is None:
            a, b = b, a
        if (a.index is None and a.coef == 1 and len(a.symbols) == 1 and is_extent_name(a.symbols[0])
                and b.index is not None and b.coef == -1 and not b.symbols
                and a.symbols[0].lower() == b.index.rstrip("'")):
            return b.index
        return None

    def linear(self, symvals) -> tuple:
        """({index: integer coefficient}, integer constant) under the given symbol values."""
        coefs, const = {}, 0
        for m in self.monos:
            v = m.value(symvals)
            if m.index is None:
                const += v
            else:
                coefs[m.index] = coefs.get(m.index, 0) + v
        return {k: v for k, v in coefs.items() if v != 0}, const

    def substitute(self, index: str, replacement: Affine) -> Affine:
        """This term with `index` replaced by another term (coefficients distribute)."""
        out = []
        for m in self.monos:
            if m.index != index:
                out.append(m)
                continue
            for r in replacement.monos:
                out.append(Mono(m.coef * r.coef, m.symbols + r.symbols, r.index, r.span))
        return Affine(tuple(out), self.span)


@dataclass(frozen=True)
class Dots(Printable):
    """`...`, numpy's ellipsis: the leading axes of the tensor read, as many as its shape has beyond
    the terms written after it; bound to fresh indices once shapes are known (notation/language/ellipsis.py)."""

    span: Span = field(default=(0, 0), compare=False)
    kind = "ellipsis"
    monos, indices, symbols = (), (), ()

    def render(self, d) -> str:
        return d.dots

    def plain(self) -> None:
        return None

    def flip(self) -> None:
        return None

    def substitute(self, index: str, replacement: Affine) -> Dots:
        return self


@dataclass(frozen=True)
class Ref(Printable):
    """A tensor with its index terms: `x[b, s1*i+p, s2*j+q, r]`, or `x[...,i]` with an ellipsis first."""

    name: str
    axes: tuple
    span: Span = field(default=(0, 0), compare=False)
    kind = "tensor"

    def render(self, d) -> str:
        return d.tensor(self.name, [render(a, d) for a in self.axes],
                        [a.plain() is not None or isinstance(a, Dots) for a in self.axes])

    @property
    def dotted(self) -> bool:
        """Whether its first axis is an ellipsis (`x[...,i]`)."""
        return bool(self.axes) and isinstance(self.axes[0], Dots)


@dataclass(frozen=True)
class Delta(Printable):
    """Kronecker delta[i,j] (eq. 13, 23): 1 where the two indices agree."""

    i: str
    j: str
    span: Span = field(default=(0, 0), compare=False)
    kind = "delta"

    def render(self, d) -> str:
        return d.delta(d.index(self.i), d.index(self.j))


@dataclass(frozen=True)
class Call(Printable):
    """An elementwise function from the registry applied to an expression: `relu(z[b,i])`."""

    func: str
    arg: Node
    span: Span = field(default=(0, 0), compare=False)
    kind = "call"

    def render(self, d) -> str:
        return d.call(self.func, render(self.arg, d))


@dataclass(frozen=True)
class Max(Printable):
    """`max[p,q] x[...]` (eq. 18): the maximum over the listed indices, positions kept."""

    indices: tuple
    arg: Node
    span: Span = field(default=(0, 0), compare=False)
    kind = "max"

    def render(self, d) -> str:
        arg = render(self.arg, d)
        if self.arg.kind in ("sum", "mul"):
            arg = d.group(arg)
        return d.max([d.index(i) for i in self.indices], arg)


@dataclass(frozen=True)
class Num(Printable):
    value: Fraction
    span: Span = field(default=(0, 0), compare=False)
    kind = "number"

    def render(self, d) -> str:
        return d.number(self.value)


@dataclass(frozen=True)
class Sym(Printable):
    """A scalar symbol (`eta`) or an upper-case count (`B` in `1/B`)."""

    name: str
    span: Span = field(default=(0, 0), compare=False)
    kind = "symbol"

    def render(self, d) -> str:
        return d.symbol(self.name)


@dataclass(frozen=True)
class Sum(Printable):
    """Signed terms: [(+1 | -1, node), ...]."""

    terms: tuple
    span: Span = field(default=(0, 0), compare=False)
    kind = "sum"

    def render(self, d) -> str:
        return signed([(sign, render(sub, d), sub.kind == "sum") for sign, sub in self.terms], d)


@dataclass(frozen=True)
class Mul(Printable):
    """Factors joined by `*` or `/`: [(op, node), ...], the first op being '*'."""

    factors: tuple
    span: Span = field(default=(0, 0), compare=False)
    kind = "mul"

    def render(self, d) -> str:
        out = ""
        for n, (op, sub) in enumerate(self.factors):
            text = render(sub, d)
            if d.grouped(sub, op, last=n == len(self.factors) - 1):
                text = d.group(text)
            out = d.factors(out, op, text, n == 0)
        return out


Node = Ref | Dots | Delta | Call | Max | Num | Sym | Sum | Mul


@dataclass(frozen=True)
class Product:
    """One term of the expanded right side: coefficient, scalar symbols with powers, factors."""

    coef: Fraction
    scalars: tuple = ()  # ((name, power), ...)
    factors: tuple = ()  # Ref | Delta | Call | Max
    spans: tuple = field(default=(), compare=False)  # ((scalar name, where it stands), ...)


def expand(node) -> list:
    """The right side multiplied out into a sum of products (summation is per product)."""
    if isinstance(node, Num):
        return [Product(node.value)]
    if isinstance(node, Sym):
        return [Product(Fraction(1), ((node.name, 1),), (), ((node.name, node.span),))]
    if isinstance(node, (Ref, Delta, Call, Max)):
        return [Product(Fraction(1), (), (node,))]
    if isinstance(node, Sum):
        out = []
        for sign, sub in node.terms:
            out += [Product(sign * p.coef, p.scalars, p.factors, p.spans) for p in expand(sub)]
        return out
    if isinstance(node, Mul):
        acc = [Product(Fraction(1))]
        for op, sub in node.factors:
            parts = expand(sub)
            if op == "/":
                from .errors import NotationError
                if len(parts) != 1 or parts[0].factors or parts[0].coef == 0:
                    raise NotationError("only division by a non-zero scalar (a number or a symbol) "
                                        "is supported", span=sub.span,
                                        hint="multiply by a tensor instead, or move the division into a function")
                p = parts[0]
                parts = [Product(1 / p.coef, tuple((s, -k) for s, k in p.scalars), (), p.spans)]
            acc = [Product(a.coef * b.coef, _merge_powers(a.scalars + b.scalars), a.factors + b.factors,
                           a.spans + b.spans) for a in acc for b in parts]
        return acc
    raise TypeError(f"unexpected node {node!r}")


def _merge_powers(scalars) -> tuple:
    powers = {}
    for s, k in scalars:
        powers[s] = powers.get(s, 0) + k
    return tuple((s, k) for s, k in powers.items() if k)


def walk(node):
    """Every node below and including this one, depth first."""
    yield node
    if isinstance(node, (Sum, Mul)):
        for _, sub in (node.terms if isinstance(node, Sum) else node.factors):
            yield from walk(sub)
    elif isinstance(node, (Call, Max)):
        yield from walk(node.arg)


def rebuild(node, leaf):
    """The tree with `leaf` applied to every node, its parts rebuilt first: one rewrite of a tree."""
    if isinstance(node, (Call, Max)):
        node = replace(node, arg=rebuild(node.arg, leaf))
    elif isinstance(node, Sum):
        node = replace(node, terms=tuple((s, rebuild(n, leaf)) for s, n in node.terms))
    elif isinstance(node, Mul):
        node = replace(node, factors=tuple((op, rebuild(n, leaf)) for op, n in node.factors))
    return leaf(node)


def free_indices(factors) -> list:
    """The indices the factors name, in order of appearance, but those a max inside reduces."""
    out = []
    for f in factors:
        reduced = {i for m in walk(f) if isinstance(m, Max) for i in m.indices}
        for n in walk(f):
            names = []
            if isinstance(n, Ref):
                names = [i for axis in n.axes for i in axis.indices]
            elif isinstance(n, Delta):
                names = [n.i, n.j]
            out += [i for i in names if i not in out and i not in reduced]
    return out


def lonely_sums(lhs, rhs) -> list:
    """[(index, span)]: an index summed (not on the left) that, in a product of several factors as
    written, one factor alone names: `x[b,i,j,k] * g[m]` sums g over m, most likely a misspelt g[k].
    A sum meant so is written as its own equation first (`s = g[m]`), which is not flagged."""
    left = {i for axis in lhs.axes for i in axis.indices}
    found = []
    for node in walk(rhs):
        if not isinstance(node, Mul):
            continue
        factors = [sub for _, sub in node.factors if any(isinstance(n, (Ref, Delta)) for n in walk(sub))]
        if len(factors) < 2:
            continue
        counts = {}
        for f in factors:
            for i in free_indices([f]):
                counts[i] = counts.get(i, 0) + 1
        for f in factors:
            for i in free_indices([f]):
                if counts[i] == 1 and i not in left and i not in [x for x, _ in found]:
                    ref = next(n for n in walk(f) if isinstance(n, (Ref, Delta)) and i in free_indices([n]))
                    found.append((i, ref.span))
    return found
