"""The plan document's shape ("einsum-plan/2"), defined once: engine/plans.py builds it,
scripts/plan.py prints it (its schema option), and the tests check documents against it.

Each field is `Annotated[type, "what it means"]`; `render()` turns the definitions into the text
scripts/plan.py shows, and `check(doc)` walks a document key by key and type by type.
"""
from __future__ import annotations

import types
import typing
from typing import Annotated, Literal, TypedDict, Union

SCHEMA = "einsum-plan/2"


class Size(TypedDict):
    elements: int
    bytes: int


class View(TypedDict):
    tensor: str
    indices: list[str]
    shape: list[int]
    kind: Annotated[str, '"whole array", "window", "flip+offset", "reshape", ...']


class Nested(TypedDict):
    kind: Literal["call", "max", "eye"]
    function: str | None
    indices: list[str]
    shape: list[int]
    strategies: Annotated[list[str], "what runs its argument, or 'view (no copy)'"]


class Fold(TypedDict):
    kind: Literal["in place", "strided add", "strided write", "slice-add"]
    indices: list[str]
    shape: list[int]
    loop: list[str]
    adds: int


class StrategyStep(TypedDict):
    kind: Annotated[str, '"GEMM", "batched GEMM", "stacked GEMM" or "einsum"']
    runs: Annotated[str, '"np.matmul", "np.matmul, batched over (b,h)", "np.matmul over 64 blocks (b) of 448x14 '
                         '@ 14x32, no copy", "np.einsum"']


class Strategy(TypedDict):
    name: Annotated[str, '"GEMM into the result", "GEMM, turned", "batched GEMM", "stacked GEMM", "gather copy", '
                         '"elementwise ufunc", '
                         '"scatter in batch slices", "opt_einsum path", "add of a view", "nested into the result", '
                         '"sum as GEMV", "constant"']
    runs: Annotated[str, "what executes, in words: 'np.matmul, written into the result'"]
    steps: Annotated[list[StrategyStep] | None, "per path step, when the strategy walks opt_einsum's path"]


class Step(TypedDict):
    einsum: str
    kind: Annotated[str, "opt_einsum's BLAS label: GEMM, TDOT, DOT, ..., or einsum"]
    runs: Annotated[str | None, "what runs this step; null when the strategy does not walk the path"]
    contracted: list[str]
    scaling: int
    flops: Annotated[int | None, "this step's cost; the steps sum to optimized_flops"]
    elements: Annotated[int, "the step's output size"]


class Cost(TypedDict):
    modelled_s: Annotated[float, "the road's time modelled on this machine's rates (notation/lowering/cost.py)"]
    bound_s: Annotated[float, "the roofline: FLOPs at the GEMM rate or bytes read and written once"]
    alternatives: Annotated[dict[str, float], "each road weighed for this product, modelled seconds"]


class Product(TypedDict):
    einsum: Annotated[str, "the lowering's subscripts, operands in spec order"]
    runs: Annotated[str | None, "the string opt_einsum plans (PathInfo.eq)"]
    strategy: Annotated[Strategy, "the road this product takes, chosen once at compile time"]
    path: Annotated[list[list[int]], "opt_einsum's contraction path"]
    scale: Annotated[float, "the term's constant factor (sign, 1/B, ...)"]
    views: list[View]
    nested: Annotated[list[Nested], "evaluated before the product"]
    fold: Annotated[Fold, "how the result is written"]
    cost: Annotated[Cost, "the road's modelled time, its roofline bound, the roads weighed"]
    steps: list[Step]
    naive_flops: int
    optimized_flops: int
    speedup: float
    largest_intermediate: Size


class Contraction(TypedDict):
    id: Annotated[str, '"<block>/<pass>/<writes>", e.g. "conv2/backward/dxu"']
    pass_: Annotated[Literal["forward", "backward", "update", "eval"],
                     "key: pass"]
    writes: Annotated[str, 'the tensor it fills: "z", "xc", "dw", ...']
    source: Annotated[str, "the equation as written in the spec"]
    equation: Annotated[str, "as the parser prints it"]
    cite: Annotated[str, 'the comment beside it: "(15), plus (2)"']
    result_shape: list[int]
    in_training_step: Annotated[bool, "false: compiled but not run by loss_and_grads"]
    strategies: Annotated[list[str], "each product's strategy, in order"]
    products: Annotated[list[Product], "one per term of the right side's sum"]
    row_program: Annotated[str | None, "in a network, the consecutive equations it runs with, row by row in one "
                                       "C loop (notation/lowering/rowwise.py): which, and over which rows"]
    modelled_s: Annotated[float, "its products' modelled seconds, summed"]
    bound_s: Annotated[float, "its products' roofline bounds, summed: no road runs faster"]
    naive_flops: int
    optimized_flops: int
    largest_intermediate: Size


class Modelled(TypedDict):
    algorithm: str
    seconds: Annotated[float, "timed on this machine, or modelled from each product's road on the machine's rates"]


class ConstantShape(TypedDict):
    name: str
    shape: list[int]


class Algorithm(TypedDict):
    name: Annotated[str, '"im2col", "fourier"']
    cites: str
    chosen: Annotated[str, '"named in the spec", "auto, by timed cost" or "auto, by modelled cost"']
    modelled: Annotated[list[Modelled], "auto: each algorithm that applies, at modelled_at_batch"]
    modelled_at_batch: int | None
    constants: Annotated[list[ConstantShape], "the named constant tensors it reads"]
    step_flops: Annotated[int, "its contractions in a training step"]
    definition_step_flops: Annotated[int, "those of the definition it replaces"]


class RandomMask(TypedDict):
    name: str
    shape: list[int]
    bernoulli: Annotated[float, "each entry is 1 with this probability, else 0"]


class StateShape(TypedDict):
    name: str
    shape: list[int]


class Block(TypedDict):
    name: Annotated[str, '"conv1", "conv1.relu" (its activation), "loss"']
    role: Literal["layer", "activation", "loss"]
    kind: str
    cites: str
    where: str
    dtype: str
    algorithm: Annotated[Algorithm | None, "null: the block runs its definition"]
    inputs: Annotated[list[str], 'a layer: the blocks it reads ("input": the network\'s); others: []']
    chained: Annotated[bool, "it reads just the block before it"]
    random: Annotated[list[RandomMask], "masks drawn before each training step (dropout)"]
    state: Annotated[list[StateShape], "not trained: updated each training step, read in eval, checkpointed"]
    contractions: Annotated[list[Contraction], "what runs: the algorithm's chain if there is one"]


class PerImage(TypedDict):
    forward: float
    backward: float
    step: float


class BlockTotal(TypedDict):
    block: str
    forward_flops: int
    backward_flops: int
    share: float


class Largest(TypedDict):
    id: str
    source: str
    cite: str
    optimized_flops: int
    share: Annotated[float, "of a training step"]


class NotInStep(TypedDict):
    id: str
    optimized_flops: int
    reason: str


class Totals(TypedDict):
    forward_flops: int
    backward_flops: int
    step_flops: Annotated[int, "one training step"]
    per_image: PerImage
    by_block: list[BlockTotal]
    largest: Annotated[list[Largest], "the five costliest contractions"]
    dominant: Annotated[str | None, "the id of the costliest"]
    not_in_step: list[NotInStep]


class SideStep(TypedDict):
    einsum: str
    kind: str
    flops: int | None


class Side(TypedDict):
    path: list[list[int]]
    steps: list[SideStep]
    optimized_flops: int
    largest_intermediate: Size


class Difference(TypedDict):
    id: str
    term: int
    terms: int
    source: str
    runs: str
    a: Side
    b: Side


class Compare(TypedDict):
    optimize: list[str]
    products: int
    same: int
    step_flops: list[int]
    differences: list[Difference]


class Document(TypedDict):
    schema: Annotated[Literal[SCHEMA], "this schema's name and version"]
    spec: str
    network: str
    batch: int
    optimize: str
    dtype: str
    itemsize: Annotated[int, "bytes per element of the compiled buffers"]
    flops: Annotated[str, "the FLOP convention, in words"]
    blocks: Annotated[list[Block], "in the order training runs them"]
    totals: Totals
    compare: Annotated[Compare, "only when two path optimizers are compared"]


OPTIONAL_KEYS = {Document: {"compare"}}


def _fields(td) -> dict:
    """Field name -> (type, comment); `pass_` is the key "pass" (a Python keyword)."""
    hints = typing.get_type_hints(td, include_extras=True)
    out = {}
    for name, hint in hints.items():
        note = ""
        if typing.get_origin(hint) is Annotated:
            hint, note = typing.get_args(hint)[0], typing.get_args(hint)[1]
            note = "" if note.startswith("key: ") else note
        out[name.rstrip("_")] = (hint, note)
    return out


def _name(t) -> str:
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is list:
        return f"[{_name(args[0])}]"
    if origin is dict:
        return f"{{{_name(args[0])}: {_name(args[1])}}}"
    if origin in (Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _name(a) for a in args)
    if origin is Literal:
        return " | ".join(f'"{a}"' for a in args)
    if typing.is_typeddict(t):
        return t.__name__
    return {str: "str", int: "int", float: "float", bool: "bool"}[t]


def render() -> str:
    """The schema as text: each record's fields with their types and meanings."""
    seen, order = set(), []

    def visit(td):
        if td in seen:
            return
        seen.add(td)
        order.append(td)
        for hint, _ in _fields(td).values():
            for t in _inner(hint):
                visit(t)

    visit(Document)
    lines = []
    for td in order:
        lines.append(f"{td.__name__} = {{")
        for name, (hint, note) in _fields(td).items():
            optional = name in OPTIONAL_KEYS.get(td, ())
            line = f'    "{name}"{"?" if optional else ""}: {_name(hint)},'
            lines.append(f"{line:<52}# {note}" if note else line)
        lines.append("}")
    return "\n".join(lines)


def _inner(t):
    """The TypedDicts a type refers to."""
    if typing.is_typeddict(t):
        yield t
    for a in typing.get_args(t):
        yield from _inner(a)


def check(doc, td=Document, where="document") -> None:
    """Raise AssertionError naming the first place where `doc` departs from the schema."""
    assert isinstance(doc, dict), f"{where}: not an object"
    fields = _fields(td)
    optional = OPTIONAL_KEYS.get(td, set())
    missing = set(fields) - set(doc) - optional
    extra = set(doc) - set(fields)
    assert not missing and not extra, f"{where}: missing {sorted(missing)}, unexpected {sorted(extra)}"
    for name, (hint, _) in fields.items():
        if name in doc:
            _check_value(doc[name], hint, f"{where}.{name}")


def _check_value(value, hint, where):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if typing.is_typeddict(hint):
        check(value, hint, where)
    elif origin is list:
        assert isinstance(value, list), f"{where}: not a list"
        for n, v in enumerate(value):
            _check_value(v, args[0], f"{where}[{n}]")
    elif origin is dict:
        assert isinstance(value, dict), f"{where}: not an object"
        for k, v in value.items():
            _check_value(k, args[0], f"{where} key")
            _check_value(v, args[1], f"{where}[{k!r}]")
    elif origin in (Union, types.UnionType):
        for a in args:
            try:
                _check_value(value, a, where)
                return
            except AssertionError:
                pass
        raise AssertionError(f"{where}: {value!r} is none of {_name(hint)}")
    elif origin is Literal:
        assert value in args, f"{where}: {value!r} is not one of {args}"
    elif hint is type(None):
        assert value is None, f"{where}: not null"
    elif hint is float:
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: not a number"
    else:
        assert isinstance(value, hint) and not (hint is int and isinstance(value, bool)), \
            f"{where}: {value!r} is not {_name(hint)}"
