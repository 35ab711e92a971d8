"""The ground truth: an equation evaluated literally, one loop per index, as the math reads.

Every product of the right side is summed over every value of every index it names; a
tensor entry whose index term falls outside its axis contributes nothing (the report's
restricted sums, eq. 16), and a left-side position outside the result is dropped.  No views,
no einsum, no substitution: only for tiny shapes, to check the compiled code against.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from ..language.ast import Call, Delta, Max, Mul, Num, Ref, Sum, Sym, expand, free_indices
from ..language.ellipsis import bind_dots
from ..language.sizes import scale
from .functions import FUNCTIONS


def evaluate(equation, arrays, extents, symbols, result_shape, positions=False):
    """The result of `equation` on `arrays`; with positions=True also each max's first-argmax mask."""
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
    out = np.zeros(result_shape)
    masks = {}
    shapes = {**{k: v.shape for k, v in arrays.items()}, equation.lhs.name: tuple(result_shape)}
    lhs, rhs = bind_dots(equation.source, equation.lhs, equation.rhs, shapes)  # each `...` as fresh indices
    left = [i for axis in lhs.axes for i in axis.indices]
    for product in expand(rhs):
        names = list(dict.fromkeys(left + free_indices(product.factors)))
        k = scale(product.coef, product.scalars, symbols)
        for values in itertools.product(*(range(extents[i]) for i in names)):
            env = dict(zip(names, values))
            pos = _position(lhs.axes, env, symbols, result_shape)
            if pos is None:
                continue
            v = k
            for f in product.factors:
                v *= _value(f, env, arrays, symbols, extents, masks)
            out[pos] += v
    if not positions:
        return out
    found = [masks[key] for key in sorted(masks, key=lambda m: m[0])]
    return out, (found[0][1] if len(found) == 1 else tuple(m for _, m in found))


def evaluate_run(run, positions=False, **arrays):
    """The reference result for a compiled Run, using the ranges it bound."""
    return evaluate(run.expanded, arrays, run.extents, run.symbols, run.result_shape, positions)


def _position(axes, env, symbols, shape):
    pos = []
    for axis, n in zip(axes, shape):
        coefs, const = axis.linear(symbols)
        p = const + sum(c * env[i] for i, c in coefs.items())
        if not 0 <= p < n:
            return None
        pos.append(p)
    return tuple(pos)


def _value(node, env, arrays, symbols, extents, masks):
    if isinstance(node, Ref):
        a = arrays[node.name]
        pos = _position(node.axes, env, symbols, a.shape)
        return 0.0 if pos is None else float(a[pos])
    if isinstance(node, Delta):
        return 1.0 if env[node.i] == env[node.j] else 0.0
    if isinstance(node, Num):
        return float(node.value)
    if isinstance(node, Sym):
        return float(symbols[node.name])
    if isinstance(node, Call):
        return FUNCTIONS[node.func].scalar(_value(node.arg, env, arrays, symbols, extents, masks))
    if isinstance(node, Sum):
        return sum(s * _value(n, env, arrays, symbols, extents, masks) for s, n in node.terms)
    if isinstance(node, Mul):
        v = 1.0
        for op, n in node.factors:
            x = _value(n, env, arrays, symbols, extents, masks)
            v = v / x if op == "/" else v * x
        return v
    if isinstance(node, Max):
        best, where = -math.inf, None
        for values in itertools.product(*(range(extents[i]) for i in node.indices)):
            inner = dict(env, **dict(zip(node.indices, values)))
            v = _value(node.arg, inner, arrays, symbols, extents, masks)
            if v > best:  # strict: the first maximum in C order wins, as the compiled code
                best, where = v, values
        free = [i for i in free_indices([node.arg]) if i not in node.indices]
        shape = tuple(extents[i] for i in free) + tuple(extents[i] for i in node.indices)
        key = (node.span, id(node))
        if key not in masks:
            masks[key] = (node.span[0], np.zeros(shape))
        masks[key][1][tuple(env[i] for i in free) + tuple(where)] = 1.0
        return best
    raise TypeError(f"unexpected node {node!r}")
