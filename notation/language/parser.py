"""A single-pass scanner and recursive-descent parser for one equation; never `eval`.

Grammar (whitespace is free):

    equation := ref '=' expr
    expr     := ['+'|'-'] mul (('+'|'-') mul)*
    mul      := unary (('*'|'/') unary)*
    unary    := '-' unary | atom
    atom     := NUMBER | '(' expr ')' | 'max' '[' index (',' index)* ']' unary
              | 'delta' '[' index ',' index ']' | FUNC '(' expr ')' | NAME '[' axes ']' | NAME
    axes     := ['...' [',']] [term (',' term)*]           (the ellipsis first: the leading axes)
    term     := ['+'|'-'] mono (('+'|'-') mono)*        (an affine index term)
    mono     := (INT | NAME) ('*' (INT | NAME))*        (at most one index per monomial)
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import NamedTuple

from ..mathematics.functions import FUNCTIONS
from .ast import Affine, Call, Delta, Dots, Max, Mono, Mul, Num, Ref, Sum, Sym, is_extent_name, is_index_name, walk
from .errors import NotationError

_TOKEN = re.compile(r"\s*(?:(?P<num>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*'*)"
                    r"|(?P<op>->|\.\.\.|[\[\](),=+\-*/]))")

MAX_DEPTH = 64  # nested parentheses, calls and signs: deeper is a mistake, and Python's recursion limit

TERM_FORMS = ("accepted index terms: i, c*i + p + d, s1*i + p, P - p, P + s1*i - t, "
              "i*J*K + j*K + k (c, d integers; s1 a stride symbol; P, J upper-case extents)")


class Token(NamedTuple):
    """One token: its kind ('num', 'name', 'op' or 'end'), its text and where it stands."""

    kind: str
    text: str
    start: int
    end: int


def tokenize(source: str) -> list:
    """Tokens of the source, ending with Token('end', '', n, n)."""
    tokens, pos = [], 0
    while True:
        while pos < len(source) and source[pos].isspace():
            pos += 1
        if pos >= len(source):
            tokens.append(Token("end", "", pos, pos))
            return tokens
        m = _TOKEN.match(source, pos)
        if not m or m.end() == pos:
            raise NotationError(f"unexpected character {source[pos]!r}", source, (pos, pos + 1),
                                "equations use names, numbers, [ ] ( ) , = + - * / and ...")
        kind = m.lastgroup
        tokens.append(Token(kind, m.group(kind), m.start(kind), m.end(kind)))
        pos = m.end()


class Parser:
    def __init__(self, source: str):
        self.source = source
        self.tokens = tokenize(source)
        self.pos = 0
        self.depth = 0

    def nested(self, parse):
        """parse() one level deeper; refuse nesting beyond MAX_DEPTH with one line, not a RecursionError."""
        if self.depth >= MAX_DEPTH:
            raise self.error(f"parentheses, functions and signs are nested more than {MAX_DEPTH} deep here",
                             hint="write the expression with fewer levels, or split it into equations")
        self.depth += 1
        try:
            return parse()
        finally:
            self.depth -= 1

    # -- token helpers -------------------------------------------------
    @property
    def tok(self):
        return self.tokens[self.pos]

    def error(self, message, span=None, hint=None):
        t = self.tok
        return NotationError(message, self.source, span or (t.start, max(t.end, t.start + 1)), hint)

    def take(self, text=None, kind=None):
        k, t, s, e = self.tok
        if (text is not None and t != text) or (kind is not None and k != kind):
            want = repr(text) if text else {"name": "a name", "num": "a number"}.get(kind, kind)
            got = "the end of the equation" if k == "end" else repr(t)
            raise self.error(f"expected {want}, found {got}")
        self.pos += 1
        return self.tokens[self.pos - 1]

    def at(self, text):
        return self.tok.text == text and self.tok.kind == "op"

    # -- grammar -------------------------------------------------------
    def equation(self):
        lhs = self.ref_or_name(allow_scalar=True)
        self.take("=")
        rhs = self.expr()
        if self.tok.kind != "end":
            raise self.error(f"unexpected {self.tok.text!r} after the end of the right side",
                             hint="join factors with '*' and terms with '+' or '-'")
        return lhs, rhs

    def expr(self):
        start = self.tok.start
        terms = []
        sign = 1
        if self.at("+") or self.at("-"):
            sign = -1 if self.take().text == "-" else 1
        terms.append((sign, self.mul()))
        while self.at("+") or self.at("-"):
            sign = -1 if self.take().text == "-" else 1
            terms.append((sign, self.mul()))
        if len(terms) == 1 and terms[0][0] == 1:
            return terms[0][1]
        return Sum(tuple(terms), (start, self.tokens[self.pos - 1].end))

    def mul(self):
        start = self.tok.start
        factors = [("*", self.unary())]
        while self.at("*") or self.at("/"):
            op = self.take().text
            factors.append((op, self.unary()))
        if len(factors) == 1:
            return factors[0][1]
        return Mul(tuple(factors), (start, self.tokens[self.pos - 1].end))

    def unary(self):
        if self.at("-"):
            start = self.take().start
            node = self.nested(self.unary)
            return Sum(((-1, node),), (start, node.span[1]))
        return self.atom()

    def atom(self):
        kind, text, start, end = self.tok
        if kind == "num":
            self.pos += 1
            return Num(Fraction(text), (start, end))
        if self.at("("):
            self.take("(")
            node = self.nested(self.expr)
            self.take(")")
            return node
        if kind != "name":
            got = "the end of the equation" if kind == "end" else repr(text)
            raise self.error(f"expected a tensor, number or function, found {got}")
        if text == "max":
            return self.max_()
        if text == "delta":
            return self.delta()
        nxt = self.tokens[self.pos + 1]
        if nxt.text == "(":
            if text not in FUNCTIONS:
                raise self.error(f"unknown function {text!r}",
                                 hint=f"known functions are {sorted(FUNCTIONS)}")
            self.pos += 2
            arg = self.nested(self.expr)
            close = self.take(")")
            return Call(text, arg, (start, close.end))
        if nxt.text == "[":
            return self.ref_or_name()
        self.pos += 1
        if is_index_name(text):
            raise NotationError(f"index {text!r} stands outside brackets", self.source, (start, end),
                                "indices go inside a tensor's brackets; scalar symbols have two or "
                                "more letters (eta, s1) or are upper-case counts (B)")
        return Sym(text, (start, end))

    def max_(self):
        start = self.take("max").start
        self.take("[")
        names = [self.index_name()]
        while self.at(","):
            self.take(",")
            names.append(self.index_name())
        self.take("]")
        arg = self.nested(self.unary)
        return Max(tuple(names), arg, (start, arg.span[1]))

    def delta(self):
        start = self.take("delta").start
        self.take("[")
        i = self.index_name()
        self.take(",")
        j = self.index_name()
        close = self.take("]")
        return Delta(i, j, (start, close.end))

    def index_name(self):
        kind, text, start, end = self.tok
        if kind != "name" or not is_index_name(text):
            raise self.error(f"expected an index (one lower-case letter), found {text!r}")
        self.pos += 1
        return text

    def ref_or_name(self, allow_scalar=False):
        kind, name, start, end = self.take(kind="name")
        if name in FUNCTIONS or name in ("max", "delta"):
            raise NotationError(f"{name!r} is a reserved name and cannot name a tensor",
                                self.source, (start, end), "rename the tensor")
        if not self.at("["):
            if allow_scalar:
                return Ref(name, (), (start, end))
            raise self.error(f"expected '[' after tensor {name!r}")
        self.take("[")
        axes = []
        if not self.at("]"):
            axes.append(self.axis(name, axes))
            while self.at(","):
                self.take(",")
                axes.append(self.axis(name, axes))
        close = self.take("]")
        return Ref(name, tuple(axes), (start, close.end))

    def axis(self, name, before):
        """One axis of a tensor: an index term, or the ellipsis `...` standing first for the leading axes."""
        if not self.at("..."):
            return self.term()
        t = self.take()
        if any(isinstance(a, Dots) for a in before):
            raise NotationError(f"{name} has two ellipses; one ... stands for all its leading axes",
                                self.source, (t.start, t.end), "write a single ... first, as in x[...,i]")
        if before:
            raise NotationError(f"the ellipsis of {name} stands after an axis; ... stands for the leading "
                                "axes", self.source, (t.start, t.end), "write it first, as in x[...,i]")
        return Dots((t.start, t.end))

    def term(self):
        start = self.tok.start
        monos = []
        sign = 1
        if self.at("+") or self.at("-"):
            sign = -1 if self.take().text == "-" else 1
        monos.append(self.mono(sign))
        while self.at("+") or self.at("-"):
            sign = -1 if self.take().text == "-" else 1
            monos.append(self.mono(sign))
        return Affine(tuple(monos), (start, self.tokens[self.pos - 1].end))

    def mono(self, sign):
        start = self.tok.start
        coef, symbols, index, names = sign, [], None, []
        while True:
            kind, text, s, e = self.tok
            if kind == "num":
                if "." in text or "e" in text.lower():
                    raise self.error(f"index terms take whole numbers, not {text}", hint=TERM_FORMS)
                coef *= int(text)
            elif kind == "name":
                if is_index_name(text):
                    if index is not None:
                        raise NotationError(f"the product {index}*{text} of two indices is not affine",
                                            self.source, (start, e), TERM_FORMS)
                    index = text
                else:
                    symbols.append(text)
                names.append((text, (s, e)))
            elif self.at("("):
                raise self.error("parentheses are not accepted inside an index term", hint=TERM_FORMS)
            else:
                got = "the end of the equation" if kind == "end" else repr(text)
                raise self.error(f"expected an index, a number or a symbol, found {got}", hint=TERM_FORMS)
            self.pos += 1
            if self.at("/"):
                raise self.error("division is not accepted inside an index term", hint=TERM_FORMS)
            if not self.at("*"):
                break
            self.take("*")
        return Mono(coef, tuple(symbols), index, (start, self.tokens[self.pos - 1].end), tuple(names))


def parse(source: str):
    """(lhs Ref, rhs node) of one equation, or a NotationError pointing at the fault."""
    if not isinstance(source, str) or not source.strip():
        raise NotationError("an equation must be a non-empty string such as 'z[b,j] = x[b,i] * w[i,j]'")
    if "=" not in source:
        raise NotationError("an equation needs '=' between its result and its right side", source,
                            (0, len(source)), "write it as 'z[b,j] = x[b,i] * w[i,j]', or give "
                            "operands= and result= with an einsum string 'bi,ij->bj'")
    lhs, rhs = Parser(source).equation()
    _check_symbols(lhs, source)
    if lhs.dotted and not any(isinstance(n, Ref) and n.dotted for n in walk(rhs)):
        raise NotationError(f"the ellipsis of {lhs.name} stands for no axes: no tensor on the right side has one",
                            source, lhs.axes[0].span, "give a tensor read on the right its ... too, as in "
                                                      "z[...,j] = x[...,i] * w[i,j]")
    return lhs, rhs


def _check_symbols(lhs, source):
    for axis in lhs.axes:
        for m in axis.monos:
            for s in m.symbols:
                if not (is_extent_name(s) or s.isidentifier()):
                    raise NotationError(f"bad symbol {s!r}", source, m.span, TERM_FORMS)


def parse_einsum(subscripts: str, operands, result: str):
    """An equation string from a numpy-style subscript string and the operands' names; a part may
    start with numpy's ellipsis ('...i,ij->...j')."""
    src = subscripts.replace(" ", "")
    if "->" not in src:
        raise NotationError("an einsum string needs an explicit output ('bi,ij->bj')", subscripts)
    ins, out = src.split("->")
    parts = [[*(["..."] if p.startswith("...") else []), *p.removeprefix("...")] for p in ins.split(",") + [out]]
    operands = list(operands)
    if len(parts) - 1 != len(operands):
        raise NotationError(f"the einsum string has {len(parts) - 1} operand(s) but {len(operands)} name(s) "
                            f"were given: {operands}", subscripts)
    for part in parts:
        for ch in part:
            if ch != "..." and (not ch.isalpha() or not ch.islower()):
                raise NotationError(f"einsum subscripts are lower-case letters; found {ch!r}", subscripts,
                                    (src.find(ch), src.find(ch) + 1))
    refs = " * ".join(f"{name}[{','.join(sub)}]" for name, sub in zip(operands, parts))
    return f"{result}[{','.join(parts[-1])}] = {refs}"
