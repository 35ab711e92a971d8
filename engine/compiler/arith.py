"""Size expressions from layers.yaml (`height + pt + pb`, `size - 1`), evaluated without eval.

Python's own parser reads the text; only whole numbers, names and + - * // ( ) are walked.
"""
from __future__ import annotations

import ast

_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
        ast.Mult: lambda a, b: a * b, ast.FloorDiv: lambda a, b: a // b}
MAX_DEPTH = 32  # nested operations in one size expression


def size(expr, names: dict) -> int:
    """The value of a size expression under `names`; ValueError says what is wrong."""
    if isinstance(expr, bool):
        raise ValueError(f"{expr!r} is not a size")
    if isinstance(expr, int):
        return expr
    if not isinstance(expr, str):
        raise ValueError(f"{expr!r} is not a size (use a whole number, a name or a sum such as 'size - 1')")
    if len(expr) > 200:
        raise ValueError(f"{expr[:40]!r}... is {len(expr)} characters long; a size expression is short "
                         "(names, whole numbers, + - * //)")
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, RecursionError, MemoryError):
        raise ValueError(f"{expr!r} is not a size expression (names, whole numbers, + - * //)") from None
    return _walk(tree.body, names, expr)


def _walk(node, names, expr, depth=0):
    if depth > MAX_DEPTH:
        raise ValueError(f"{expr!r} is nested more than {MAX_DEPTH} deep; write it more simply")
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise ValueError(f"unknown size {node.id!r} in {expr!r} (known: {', '.join(sorted(names))})")
        value = names[node.id]
        if isinstance(value, bool) or not isinstance(value, int):
            shown = "" if expr == node.id else f" (in {expr!r})"
            raise ValueError(f"{node.id} = {value!r} is not a whole number{shown}; give {node.id} a size such as 32")
        return value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left = _walk(node.left, names, expr, depth + 1)
        right = _walk(node.right, names, expr, depth + 1)
        if isinstance(node.op, ast.FloorDiv) and right == 0:
            zero = "" if isinstance(node.right, ast.Constant) else f" ({ast.unparse(node.right)} is 0)"
            raise ValueError(f"{expr!r} divides by zero{zero}; fix the expression")
        return _OPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_walk(node.operand, names, expr, depth + 1)
    raise ValueError(f"{expr!r} is not a size expression (names, whole numbers, + - * //)")


def number(expr, names: dict) -> float:
    """A real-valued expression (`1 - rate`, `eps`, `E ** -0.5`): numbers, names, + - * / // **, for scalars
    such as a dropout's keep probability; ValueError says what is wrong."""
    if isinstance(expr, bool):
        raise ValueError(f"{expr!r} is not a number")
    if isinstance(expr, (int, float)):
        return expr
    if not isinstance(expr, str):
        raise ValueError(f"{expr!r} is not a number (use a number, a name or an expression such as '1 - rate')")
    if len(expr) > 200:
        raise ValueError(f"{expr[:40]!r}... is {len(expr)} characters long; write a short expression")
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, RecursionError, MemoryError):
        raise ValueError(f"{expr!r} is not an expression (names, numbers, + - * / // **)") from None
    return _real(tree.body, names, expr)


def _real(node, names, expr, depth=0):
    if depth > MAX_DEPTH:
        raise ValueError(f"{expr!r} is nested more than {MAX_DEPTH} deep; write it more simply")
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name):
        value = names.get(node.id)
        if node.id not in names or isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"unknown number {node.id!r} in {expr!r}")
        return value
    if isinstance(node, ast.BinOp) and (isinstance(node.op, (ast.Div, ast.Pow)) or type(node.op) in _OPS):
        left, right = _real(node.left, names, expr, depth + 1), _real(node.right, names, expr, depth + 1)
        if isinstance(node.op, ast.Pow):  # E ** -0.5: attention's 1/sqrt(d_head)
            if left < 0 or (left == 0 and right <= 0):
                raise ValueError(f"{expr!r} takes a power of {left}; fix the expression")
            return float(left) ** right
        if isinstance(node.op, (ast.Div, ast.FloorDiv)) and right == 0:
            raise ValueError(f"{expr!r} divides by zero; fix the expression")
        return left / right if isinstance(node.op, ast.Div) else _OPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_real(node.operand, names, expr, depth + 1)
    raise ValueError(f"{expr!r} is not an expression (names, numbers, + - * / // **)")
