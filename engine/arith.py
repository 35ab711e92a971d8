"""Size expressions from layers.yaml (`height + pt + pb`, `size - 1`), evaluated without eval.

Python's own parser reads the text; only whole numbers, names and + - * // ( ) are walked.
"""
from __future__ import annotations

import ast

_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
        ast.Mult: lambda a, b: a * b, ast.FloorDiv: lambda a, b: a // b}


def size(expr, names: dict) -> int:
    """The value of a size expression under `names`; ValueError says what is wrong."""
    if isinstance(expr, bool):
        raise ValueError(f"{expr!r} is not a size")
    if isinstance(expr, int):
        return expr
    if not isinstance(expr, str):
        raise ValueError(f"{expr!r} is not a size (use a whole number, a name or a sum such as 'size - 1')")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        raise ValueError(f"{expr!r} is not a size expression (names, whole numbers, + - * //)") from None
    return _walk(tree.body, names, expr)


def _walk(node, names, expr):
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise ValueError(f"unknown size {node.id!r} in {expr!r} (known: {', '.join(sorted(names))})")
        value = names[node.id]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{node.id!r} = {value!r} is not a whole number, in {expr!r}")
        return value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_walk(node.left, names, expr), _walk(node.right, names, expr))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_walk(node.operand, names, expr)
    raise ValueError(f"{expr!r} is not a size expression (names, whole numbers, + - * //)")
