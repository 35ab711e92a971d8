"""The ellipsis bound: `...` replaced by fresh indices, as many as the leading axes of the tensors read.

`z[...,j] = x[...,i] * w[i,j] + b[j]` on x of shape (64, 16, 32) reads `z[b,n,j] = x[b,n,i] * w[i,j]
+ b[j]`: one kind serves [b, features] and [b, tokens, features].  Every ellipsis of an equation
stands for the same axes (numpy's einsum broadcasts ranks; we do not); on the right only it is
summed, as any index the left does not name (`db[j] = dz[...,j]`).
"""
from __future__ import annotations

from dataclasses import replace

from .ast import Affine, Delta, Dots, Max, Mono, Ref, is_index_name, rebuild, walk
from .errors import NotationError

FRESH = "bnmtuvwxyzacdefghijklopqrs"  # the report's b first, then a token's n: plans read naturally

HINT = "every ... of an equation stands for the same leading axes; give the tensors shapes that agree"


def dotted(lhs, rhs) -> list:
    """The tensors written with an ellipsis, those read first, then the result if it has one."""
    refs = [n for n in walk(rhs) if isinstance(n, Ref) and n.dotted]
    return refs + ([lhs] if lhs.dotted else [])


def rank(source, lhs, rhs, shapes) -> int:
    """How many axes `...` stands for, from the shapes of the tensors written with it."""
    found, first = None, None
    for ref in dotted(lhs, rhs):
        shape = shapes.get(ref.name)
        if shape is None:
            continue
        r = len(shape) - (len(ref.axes) - 1)
        if r < 0:
            raise NotationError(f"{ref.name} has {len(shape)} axes (shape {tuple(shape)}) but {ref} names "
                                f"{len(ref.axes) - 1} after its ellipsis", source, ref.span, HINT)
        if found is None:
            found, first = r, ref
        elif r != found:
            raise NotationError(f"the ellipsis stands for {_axes(r)} in {ref.name} (shape {tuple(shape)}) but for "
                                f"{found} in {first.name} (shape {tuple(shapes[first.name])})", source, ref.span,
                                HINT)
    if found is None:
        names = sorted({ref.name for ref in dotted(lhs, rhs)})
        raise NotationError(f"cannot tell how many axes ... stands for: no shape is given for {names}", source,
                            hint=f"give the shape of {names[0]}")
    return found


def _axes(n) -> str:
    return f"{n} axis" if n == 1 else f"{n} axes"


def fresh(lhs, rhs, count) -> list:
    """`count` index names the equation does not use, in the order FRESH prefers."""
    used = {i for n in [lhs, *walk(rhs)] if isinstance(n, Ref) for a in n.axes for i in a.indices}
    used |= {i for n in walk(rhs) if isinstance(n, Max) for i in n.indices}
    used |= {i for n in walk(rhs) if isinstance(n, Delta) for i in (n.i, n.j)}
    names = [c for c in FRESH if c not in used] + [c + "'" for c in FRESH if c + "'" not in used]
    return [n for n in names if is_index_name(n)][:count]


def bind_dots(source, lhs, rhs, shapes) -> tuple:
    """(lhs, rhs) with every ellipsis replaced by fresh plain indices; unchanged without one."""
    if not dotted(lhs, rhs):
        return lhs, rhs
    return expand(lhs, rhs, rank(source, lhs, rhs, shapes))


def expand(lhs, rhs, count) -> tuple:
    """(lhs, rhs) with every ellipsis replaced by the same `count` fresh plain indices."""
    axes = tuple(Affine((Mono(1, (), i),)) for i in fresh(lhs, rhs, count))
    return _replace(lhs, axes), _replace(rhs, axes)


def _replace(node, axes):
    def dots(n):
        return replace(n, axes=axes + n.axes[1:]) if isinstance(n, Ref) and n.dotted else n
    return rebuild(node, dots)


__all__ = ["Dots", "bind_dots", "dotted", "expand", "rank", "fresh"]
