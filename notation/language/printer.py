"""One printer for the parsed equation, in two dialects: our notation (TEXT) and the report's
typesetting (LATEX).  The tree is walked once here; a dialect only says how each piece is spelt.

    render(node, TEXT)    # x[b, s1*i + p, r]
    render(node, LATEX)   # x_{b(s_{1}i+p)r}
"""
from __future__ import annotations

from fractions import Fraction

_GREEK = {"eta", "delta", "sigma", "alpha", "beta", "gamma", "epsilon", "lambda", "mu", "theta"}


class Text:
    """Our notation, as people type it: `z[b,j] = x[b,i] * w[i,j]`."""

    plus, minus, lead_minus = " + ", " - ", "-"  # between the terms of a sum
    term_plus, term_minus, times = " + ", " - ", "*"  # inside an index term
    dots = "..."  # the ellipsis: leading axes

    @staticmethod
    def index(name):
        return name

    @staticmethod
    def symbol(name):
        return name

    @staticmethod
    def group(text):
        return f"({text})"

    @staticmethod
    def tensor(name, axes, plain):
        if not axes:
            return f"{name}[]"
        return f"{name}[{','.join(axes)}]" if all(plain) else f"{name}[{', '.join(axes)}]"

    @staticmethod
    def delta(i, j):
        return f"delta[{i},{j}]"

    @staticmethod
    def call(func, arg):
        return f"{func}({arg})"

    @staticmethod
    def max(indices, arg):
        return f"max[{','.join(indices)}] {arg}"

    @staticmethod
    def number(value: Fraction):
        return str(value.numerator) if value.denominator == 1 else str(float(value))

    @staticmethod
    def factors(out, op, text, first):
        return text if first else f"{out} {op} {text}"

    @staticmethod
    def grouped(node, op, last):
        """Whether a factor needs parentheses: a sum, or a product divided by."""
        return node.kind == "sum" or (op == "/" and node.kind == "mul")


class Latex:
    """The report's typesetting: `z_{bj} = \\sum_{i} x_{bi} w_{ij}` (the sums are added by Equation)."""

    plus, minus, lead_minus = " + ", " - ", "-"
    term_plus, term_minus, times = "+", "-", ""
    dots = r"\ldots "

    @staticmethod
    def index(name):
        return name.replace("'", "^{\\prime}")

    @staticmethod
    def symbol(name):
        base = name.rstrip("0123456789")
        digits = name[len(base):]
        if base.startswith("d") and len(base) > 1 and base not in _GREEK:  # dz -> \partial z
            return rf"\partial {Latex.symbol(base[1:] + digits)}"
        text = rf"\{base}" if base in _GREEK else base
        return f"{text}_{{{digits}}}" if digits else text

    @staticmethod
    def group(text):
        return rf"\left({text}\right)"

    @staticmethod
    def tensor(name, axes, plain):
        name = Latex.symbol(name)
        if not axes:
            return name
        subs = "".join(a if p else f"({a})" for a, p in zip(axes, plain))
        return f"{name}_{{{subs}}}"

    @staticmethod
    def delta(i, j):
        return rf"\delta_{{{i}{j}}}"

    @staticmethod
    def call(func, arg):
        from ..mathematics.functions import FUNCTIONS
        return rf"{FUNCTIONS[func].latex}\left({arg}\right)"

    @staticmethod
    def max(indices, arg):
        return rf"\max_{{{','.join(indices)}}} {arg}"

    @staticmethod
    def number(value: Fraction):
        if value.denominator == 1:
            return str(value.numerator)
        return rf"\tfrac{{{value.numerator}}}{{{value.denominator}}}"

    @staticmethod
    def factors(out, op, text, first):
        if op == "/":
            return rf"\frac{{{out or '1'}}}{{{text}}}"
        return text if first else f"{out} {text}"

    @staticmethod
    def grouped(node, op, last):
        """Whether a factor needs parentheses: a sum, or a max with factors after it."""
        return node.kind == "sum" or (node.kind == "max" and not last)


TEXT, LATEX = Text(), Latex()


def render(node, d=TEXT) -> str:
    """The node in dialect d: each node of notation/language/ast.py says how it is spelt from its parts, so
    this module knows none of their classes (the tree imports the printer, never the reverse)."""
    return node.render(d)


def signed(terms, d=TEXT) -> str:
    """Terms [(sign, text, is a sum)] joined with their signs; a subtracted sum in parentheses."""
    out = ""
    for n, (sign, text, is_sum) in enumerate(terms):
        if is_sum and sign < 0:
            text = d.group(text)
        op = (d.lead_minus if sign < 0 else "") if n == 0 else (d.minus if sign < 0 else d.plus)
        out += op + text
    return out


def affine(term, d) -> str:
    """An index term, monomial by monomial: `s1*i + p`, `P - p`."""
    parts = []
    for n, m in enumerate(term.monos):
        body = [str(abs(m.coef))] if abs(m.coef) != 1 or (not m.symbols and m.index is None) else []
        body += [d.symbol(s) for s in m.symbols] + ([d.index(m.index)] if m.index else [])
        sign = (d.lead_minus if m.coef < 0 else "") if n == 0 else (d.term_minus if m.coef < 0 else d.term_plus)
        parts.append(sign + d.times.join(body))
    return "".join(parts) if parts else "0"
