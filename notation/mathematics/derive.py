"""Jacobian contractions derived from a forward equation by the einsum gradient rule.

For `z[L] = c * x[T] * w[U]` the gradient with respect to x is the upstream gradient
contracted with the other operands, written at x's own index terms:
`dx[T] = c * dz[L] * w[U]`.  What was a gather on the right (a strided window) becomes a
scatter on the left, a scatter on the left a gather; a function contributes its
derivative from the registry (relu -> drelu), a max its positions mask (eq. 19); a function that
is its own derivative (exp) reads the result it wrote, `ex[L] = exp(s[L] - m)` giving `ds = dex * ex`.
A function of a sum (`rsqrt(v[k] + eps)`) is opened when the tensor is one of its terms.
"""
from __future__ import annotations

from fractions import Fraction

from ..language.ast import Affine, Call, Max, Mono, Ref, Sum, walk
from ..language.errors import NotationError
from .functions import FUNCTIONS


def grad(name: str) -> str:
    """The name of the loss's gradient with respect to a tensor: dz for z (the report's d<t>).
    The one place that says how such names are formed."""
    return "d" + name


def grad_of(name: str) -> str | None:
    """The tensor whose gradient `name` is (z for dz), or None: grad's inverse."""
    return name[1:] if name.startswith("d") and len(name) > 1 else None


def derive(equation, wrt: str, positions=None, name=None) -> str:
    """The equation for d<wrt> given d<result>; positions names the mask of a max, if any.

    `name` writes the result under another name (one term of a gradient summed at a fan-out)."""
    lhs = equation.lhs
    upstream = Ref(grad(lhs.name), lhs.axes)
    terms, target = [], None
    for product in equation.products:
        found = [f for f in product.factors if wrt in _names(f)]
        if not found:
            continue
        if len(found) > 1 or sum(1 for n in walk(found[0]) if isinstance(n, Ref) and n.name == wrt) > 1:
            raise _cannot(equation, wrt, f"{wrt!r} appears more than once in one product")
        f = found[0]
        rest = [g for g in product.factors if g is not f]
        coef = product.coef
        if isinstance(f, Ref):
            ref, local = f, []
        elif isinstance(f, Call) and (isinstance(f.arg, Ref) or _term_of_sum(f.arg, wrt)):
            d = FUNCTIONS[f.func].derivative
            if d is None:
                raise _cannot(equation, wrt, f"{f.func} has no derivative in the registry")
            if isinstance(f.arg, Ref):
                ref = f.arg
            else:
                sign, ref = _term_of_sum(f.arg, wrt)
                coef = coef * sign
            local = [Call(d, f.arg)]
            if d == f.func and _result_is(equation, product, f):  # exp: its derivative is what it wrote
                local = [Ref(lhs.name, lhs.axes)]
        elif isinstance(f, Max) and isinstance(f.arg, Ref):
            if not positions:
                raise _cannot(equation, wrt, "a max needs its positions named (positions: {z: m})")
            ref = f.arg
            free = [i for a in ref.axes for i in a.indices if i not in f.indices]
            free = list(dict.fromkeys(free))
            lead = ref.axes[:1] if ref.dotted else ()  # the mask's leading axes, as the max's argument's
            local = [Ref(positions, lead + tuple(Affine((Mono(1, (), i),)) for i in free + list(f.indices)))]
        else:
            raise _cannot(equation, wrt, f"{wrt!r} sits inside {f}, which the gradient rule does not open")
        key = tuple(str(a) for a in ref.axes)
        if target is None:
            target = (key, ref)
        elif target[0] != key:
            raise _cannot(equation, wrt, f"{wrt!r} is indexed two ways ({target[1]} and {ref})")
        terms.append((coef, product.scalars, [upstream] + local + rest))
    if target is None:
        raise _cannot(equation, wrt, f"{wrt!r} does not appear on the right side")
    ref = target[1]
    body = " + ".join(_product_text(c, s, fs) for c, s, fs in terms).replace("+ -", "- ")
    return f"{Ref(name or 'd' + wrt, ref.axes)} = {body}"


def _result_is(equation, product, f) -> bool:
    """Whether the equation's result is exactly f (one product, no coefficient): then f's value
    is read from the result rather than computed again."""
    return (len(equation.products) == 1 and product.factors == (f,) and product.coef == 1
            and not product.scalars and bool(equation.lhs.axes))


def _term_of_sum(node, wrt):
    """(sign, ref) when `node` is a sum in which `wrt` is one plain term and appears nowhere else."""
    if not isinstance(node, Sum):
        return None
    found = [(sign, sub) for sign, sub in node.terms if wrt in _names(sub)]
    if len(found) != 1 or not isinstance(found[0][1], Ref):
        return None
    return found[0]


def _names(node) -> set:
    return {n.name for n in walk(node) if isinstance(n, Ref)}


def _product_text(coef: Fraction, scalars, factors) -> str:
    parts = [str(f) for f in factors]
    head = ""
    if coef != 1:
        head = _number(coef)
        head += " * "
    text = head + " * ".join(parts)
    for name, power in scalars:
        text += (f" * {name}" if power > 0 else f" / {name}") * abs(power)
    return text


def _number(value: Fraction) -> str:
    """A coefficient as the spec would write it: a whole number, a decimal where one is exact
    (0.0356774081, not 356774081/10000000000), else a fraction (1/3)."""
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d == 1:  # exact in decimal: the digits worked out in whole numbers
        digits = 0
        while (value * 10 ** digits).denominator != 1:
            digits += 1
        whole = abs(int(value * 10 ** digits))
        text = str(whole).rjust(digits + 1, "0")
        return ("-" if value < 0 else "") + text[:-digits] + "." + text[-digits:]
    return f"{value.numerator}/{value.denominator}"


def _cannot(equation, wrt, why) -> NotationError:
    return NotationError(f"cannot derive the Jacobian for {wrt!r}: {why}", equation.source,
                         hint="declare that Jacobian in the layer's backward: instead")
