"""An equation's canonical text: indices renamed in order of first appearance, so spellings of one
meaning print alike (`dx[c,k] = dz[c,j] * w[k,j]` and `dx[a,b] = dz[a,c] * w[b,c]` are one).

An index whose upper-case letter the equation uses (`P - p`: the last value of p's range) keeps its
name, and no index is renamed onto such a letter: the extent rule ties the two.  `same` compares
two equations so, an ellipsis expanded to as many fresh indices as make them agree.
"""
from __future__ import annotations

import dataclasses
import string

from .ast import Affine, Call, Delta, Max, Mono, Mul, Ref, Sum, Sym, is_extent_name, rebuild, walk
from .ellipsis import dotted, expand
from .errors import NotationError
from .parser import parse

MOST_AXES = 8  # an ellipsis standing for more leading axes than this is not tried


def canonical(lhs, rhs) -> str:
    """The equation's text with its indices renamed a, b, c, ... in order of first appearance."""
    nodes = [lhs, *walk(rhs)]
    extents = {s for n in nodes if isinstance(n, Ref) for a in n.axes for s in a.symbols if is_extent_name(s)}
    extents |= {n.name for n in nodes if isinstance(n, Sym) and is_extent_name(n.name)}

    def tied(name):
        return name.rstrip("'").upper() in extents

    order = list(dict.fromkeys(_indices(lhs) + _indices(rhs)))
    names = iter(c + prime for prime in ("", "'", "''") for c in string.ascii_lowercase if not tied(c + prime))
    mapping = {i: (i if tied(i) else next(names)) for i in order}
    return f"{_rename(lhs, mapping)} = {_rename(rhs, mapping)}"


def same(old: str, new: str) -> tuple:
    """(whether two equations mean the same up to index names, how many leading indices the ellipsis of
    one stands for in the other or None); two texts that do not parse are the same only if equal."""
    try:
        a, b = parse(old), parse(new)
    except (NotationError, ValueError, TypeError):
        return old == new, None
    if canonical(*a) == canonical(*b):
        return True, None
    dots, plain = (a, b) if dotted(*a) and not dotted(*b) else (b, a) if dotted(*b) and not dotted(*a) else (None, None)
    if dots is None:
        return False, None
    target = canonical(*plain)
    for count in range(MOST_AXES + 1):
        if canonical(*expand(*dots, count)) == target:
            return True, count
    return False, None


def _indices(node) -> list:
    """Index names in the order they print."""
    if isinstance(node, Ref):
        return [i for a in node.axes for i in a.indices]
    if isinstance(node, Delta):
        return [node.i, node.j]
    if isinstance(node, Max):
        return list(node.indices) + _indices(node.arg)
    if isinstance(node, Call):
        return _indices(node.arg)
    if isinstance(node, (Sum, Mul)):
        return [i for _, sub in (node.terms if isinstance(node, Sum) else node.factors) for i in _indices(sub)]
    return []


def _rename(node, mapping):
    def leaf(n):
        if isinstance(n, Ref):
            return dataclasses.replace(n, axes=tuple(_renamed(a, mapping) for a in n.axes))
        if isinstance(n, Delta):
            return dataclasses.replace(n, i=mapping[n.i], j=mapping[n.j])
        if isinstance(n, Max):
            return dataclasses.replace(n, indices=tuple(mapping[i] for i in n.indices))
        return n
    return rebuild(node, leaf)


def _renamed(axis, mapping):
    if not isinstance(axis, Affine):
        return axis  # the ellipsis
    return Affine(tuple(Mono(m.coef, m.symbols, mapping.get(m.index, m.index)) for m in axis.monos))


__all__ = ["canonical", "same"]
