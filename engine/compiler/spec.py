"""layers.yaml read and checked: kinds, activations, losses, networks, training defaults.

Everything here is structure: names, fields, types.  Sizes and equations are checked when
a network is built for an input shape (engine.layer), where their values are known.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from notation import Equation, NotationError

from ..errors import SpecError
from ..training.settings import SPEC_DEFAULTS
from .init import INITIALISERS

ALGORITHM_CHOICES = ("auto", "definition")  # besides the names of a kind's algorithms

TRAINING_DEFAULTS = SPEC_DEFAULTS  # the training: fields and their defaults (engine/training/settings.py)
REQUIRED = "required"


@dataclass
class Kind:
    """A layer kind, an activation or a loss: equations for forward and backward."""

    name: str
    section: str  # kinds | activations | losses
    cites: str
    inputs: tuple  # names of the axes of the input tensor
    hyper: dict
    symbols: dict
    shapes: dict
    params: dict  # name -> (shape expressions, init name or hyper name)
    forward: list  # Equation
    backward: object  # {target: [Equation, ...]} (the last writes d<target>) or "derive"
    positions: dict
    activation: str | None = None  # losses: the activation they fuse with
    in_name: str = "x"
    out_name: str = "z"
    algorithms: dict = field(default_factory=dict)  # name -> Algorithm: other ways to evaluate it
    input_axes: dict = field(default_factory=dict)  # several named inputs (add, concat): name -> axes
    eval: list | None = None  # forward equations in eval mode, where they differ from training's
    state: dict = field(default_factory=dict)  # name -> (shape, init): kept between steps, not trained
    update: list = field(default_factory=list)  # Equation: each state's new value, after a training forward
    random: dict = field(default_factory=dict)  # name -> (shape, probability): Bernoulli masks, drawn in training
    bounds: dict = field(default_factory=dict)  # hyperparameter -> interval text such as "[0, 1)"

    @property
    def in_names(self) -> tuple:
        """The kind's inputs, in the order a layer's `inputs:` lists their sources."""
        return tuple(self.input_axes) if self.input_axes else (self.in_name,)

    @property
    def modal(self) -> bool:
        """Whether training and evaluation run this kind differently."""
        return bool(self.eval is not None or self.update or self.random)


@dataclass
class Algorithm:
    """Another way to evaluate a kind: how, never what.  The kind's equations stay the definition;
    this chain must agree with them (checked when a network loads).

    `forward` ends by writing the kind's output; `backward` is one ordered list in which the
    equations writing d<input> or d<param> are the gradients and the others intermediates that
    several gradients may share (dz's spectrum for dx and dw); a step no wanted gradient needs is
    not run.  Forward results stay in the layer's tensors for the backward (x's spectrum).
    """

    name: str
    cites: str
    requires: dict  # hyperparameter -> the value this algorithm needs (stride: 1)
    symbols: dict
    shapes: dict
    constants: dict  # name -> (registry name, [argument size expressions])
    forward: list  # Equation
    backward: list  # Equation, in order


@dataclass
class LayerSpec:
    name: str
    kind: str
    hyper: dict
    activation: str
    inputs: tuple = ()  # the layers (or "input", the network's) feeding it; () is the previous layer


@dataclass
class NetworkSpec:
    name: str
    cites: str
    input: tuple
    loss: str
    layers: list
    training: dict = field(default_factory=dict)  # this network's own training defaults


@dataclass
class Spec:
    file: str
    kinds: dict
    activations: dict
    losses: dict
    networks: dict
    network: str
    training: dict = field(default_factory=dict)
    comments: dict = field(default_factory=dict)  # equation text -> its citation comment

    def training_for(self, network: str) -> dict:
        """The training defaults for a network: the spec's training:, then the network's own."""
        out = dict(self.training)
        if network in self.networks:
            out.update(self.networks[network].training)
        return out

    def cite(self, equation) -> str:
        """The comment beside an equation in the spec file (its report equation number)."""
        return self.comments.get(equation.source, "")

    def error(self, where, message) -> SpecError:
        return SpecError(self.file, where, message)


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, refusing a key given twice in one mapping:
    YAML would keep the second silently (a second `seven-layer:` replacing the first)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue  # an unhashable key: SafeLoader's own error says so
                if first is not key_node:
                    raise _DuplicateKey(key, first.start_mark.line + 1, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep)


class _DuplicateKey(Exception):
    def __init__(self, key, first, second):
        super().__init__(key, first, second)
        self.key, self.first, self.second = key, first, second


def _is_path(source) -> bool:
    """A str names a file (rather than holding YAML text) when it is one line naming an existing
    file, ending in .yaml/.yml, or looking like a path with no YAML mapping in it."""
    if isinstance(source, os.PathLike):
        return True
    if not isinstance(source, str) or "\n" in source or not source.strip():
        return False
    text = source.strip()
    if Path(text).is_file() or text.endswith((".yaml", ".yml")):
        return True
    return (os.sep in text or text.endswith((".txt", ".json"))) and ": " not in text and "{" not in text


def read(source) -> Spec:
    """A Spec from a path, a YAML string or a dict; SpecError names the file, place and fix."""
    if isinstance(source, dict):
        return _build("<dict>", source)
    if not isinstance(source, (str, os.PathLike)):
        raise SpecError("engine.load", None, f"the spec must be a path such as 'layers.yaml', YAML text or a "
                                             f"dict, not {_what(source)}")
    text, file = source, "<string>"
    if _is_path(source):
        file = str(source)
        try:
            text = Path(source).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SpecError(file, None, "no such file; give the path of a spec such as layers.yaml") from None
        except (OSError, UnicodeDecodeError) as e:
            raise SpecError(file, None, f"cannot read it ({e})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as e:
        raise SpecError(file, f"lines {e.first} and {e.second}",
                        f"{e.key!r} is given twice in the same mapping (YAML would silently keep the second); "
                        "rename or remove one") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(file, where, f"YAML syntax error: {problem}; fix the YAML there") from None
    except RecursionError:
        raise SpecError(file, None, "the YAML is nested too deeply to read; flatten it") from None
    if not isinstance(data, dict):
        raise SpecError(file, None, "the spec must be a mapping with kinds:, activations:, losses: and networks:, "
                                    f"but this {'file' if file != '<string>' else 'text'} holds {_what(data)}")
    spec = _build(file, data)
    spec.comments = {**trailing_comments(text), **spec.comments}
    return spec


def trailing_comments(text: str) -> dict:
    """{scalar text: the comment after it on its line}: where an equation cites the report."""
    out = {}
    lines = text.splitlines()

    def walk(node):
        if isinstance(node, yaml.ScalarNode):
            line = lines[node.end_mark.line] if node.end_mark.line < len(lines) else ""
            rest = line[node.end_mark.column:].strip()
            if rest.startswith("#"):
                out.setdefault(node.value, rest.lstrip("#").strip())
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                walk(key)
                walk(value)

    walk(yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))  # parse only, libyaml when present
    return out


def _what(value) -> str:
    """A value's kind as a person would say it, for messages: 'a list', 'nothing (null)', "the text 'abc'"."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {value}"
    if isinstance(value, (list, tuple)):
        return f"a list {_short(value)}"
    if isinstance(value, dict):
        return f"a mapping {_short(value)}"
    if isinstance(value, str):
        return f"the text {_short(value)}"
    return f"the number {value!r}" if isinstance(value, (int, float)) else f"a {type(value).__name__}"


def _short(value, width=40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def _name(spec, where, value, what) -> str:
    """A field that names something (a kind, an activation, a loss): a string, or one line saying so."""
    if not isinstance(value, str) or not value:
        raise spec.error(where, f"must be the name of {what}, not {_what(value)}")
    return value


def _mapping(spec, where, value, example) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise spec.error(where, f"must be a mapping such as {example}, not {_what(value)}")
    return value


LAYER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def _build(file, data) -> Spec:
    spec = Spec(file, {}, {}, {}, {}, "")
    known = {"kinds", "activations", "losses", "networks", "network", "training"}
    extra = set(data) - known
    if extra:
        raise spec.error(None, f"unknown top-level field(s) {sorted(extra)}; valid are {sorted(known)}")
    for section, target, io in (("kinds", spec.kinds, ("x", "z")), ("activations", spec.activations, ("z", "a")),
                                ("losses", spec.losses, (None, "J"))):
        entries = data.get(section) or {}
        if not isinstance(entries, dict):
            raise spec.error(section, "must be a mapping of names to definitions")
        for name, body in entries.items():
            _name(spec, f"{section}, {name!r}", name, "a " + section[:-1] + " (a word, as the key)")
            target[name] = _kind(spec, section, name, body, io)
    networks = data.get("networks") or {}
    if not isinstance(networks, dict) or not networks:
        raise spec.error("networks", "define at least one network (a mapping of names to networks)")
    for name, body in networks.items():
        _name(spec, f"networks, {name!r}", name, "a network (a word, as the key)")
        spec.networks[name] = _network(spec, name, body)
    spec.network = data.get("network") or next(iter(spec.networks))
    _name(spec, "network", spec.network, f"one of the networks {sorted(spec.networks)}")
    if spec.network not in spec.networks:
        raise spec.error("network", f"{spec.network!r} not found, valid options are {sorted(spec.networks)}")
    training = dict(TRAINING_DEFAULTS)
    given = data.get("training") or {}
    if not isinstance(given, dict):
        raise spec.error("training", "must be a mapping such as {optimizer: adam, lr: 0.001}")
    extra = set(given) - set(TRAINING_DEFAULTS)
    if extra:
        raise spec.error("training", f"unknown field(s) {sorted(extra)}; valid are {sorted(TRAINING_DEFAULTS)}")
    training.update(given)
    spec.training = training
    return spec


def _kind(spec, section, name, body, io) -> Kind:
    where = f"{section[:-1] if section != 'activations' else 'activation'} {name!r}"
    if not isinstance(body, dict):
        raise spec.error(where, "must be a mapping with forward: and backward:")
    allowed = {"cites", "input", "hyper", "symbols", "shapes", "params", "forward", "backward", "positions",
               "activation", "algorithms", "eval", "state", "update", "random", "bounds"}
    extra = set(body) - allowed
    if extra:
        raise spec.error(where, f"unknown field(s) {sorted(extra)}; valid are {sorted(allowed)}")
    if not body.get("cites"):
        raise spec.error(where, "field 'cites' is missing; cite the report's equation numbers, e.g. \"(12)-(14)\"")
    inputs, input_axes = _kind_input(spec, where, body, section)
    params = _kind_params(spec, where, body)
    forward, backward = _kind_equations(spec, where, body)
    hyper, symbols, shapes, positions, activation = _kind_tables(spec, where, body)
    for pname, (_, init) in params.items():
        if init not in INITIALISERS and init not in hyper:
            raise spec.error(f"{where}, param {pname!r}", f"init {init!r} not found, valid options are "
                                                          f"{sorted(INITIALISERS)} or a hyperparameter name")
    algorithms = _algorithms(spec, where, body.get("algorithms"), section)
    if algorithms:
        hyper.setdefault("algorithm", "auto")
    modes = _modes(spec, where, body, params, hyper)
    kind = Kind(name, section, str(body["cites"]), inputs, hyper, symbols, shapes, params, forward, backward,
                positions, activation, io[0], io[1], algorithms, **modes)
    if input_axes:
        kind.in_name = next(iter(input_axes))
        kind.input_axes = input_axes
    return kind


def _kind_input(spec, where, body, section) -> tuple:
    """(the input's axes, {input name: axes} for a kind of several named inputs, else {})."""
    raw_input = body.get("input")
    input_axes = {}
    if isinstance(raw_input, dict):  # several named inputs: {x1: [b, height, width, c1], x2: [...]}
        if section != "kinds" or not raw_input or not all(
                isinstance(v, list) and all(isinstance(a, str) and a for a in v) for v in raw_input.values()):
            raise spec.error(f"{where}, field 'input'", "names each input's axes, e.g. {x1: [b, features], "
                                                        "x2: [b, features]} (kinds only)")
        input_axes = {str(k): tuple(v) for k, v in raw_input.items()}
        raw_input = next(iter(input_axes.values()))
    inputs = raw_input or (("b", "features") if section != "losses" else ())
    if not isinstance(inputs, (list, tuple)) or not all(isinstance(a, str) and a for a in inputs):
        raise spec.error(f"{where}, field 'input'", f"must list the names of the input's axes, e.g. "
                                                    f"[b, height, width, channels], not {_what(inputs)}")
    return tuple(inputs), input_axes


def _kind_params(spec, where, body) -> dict:
    """{param: (shape expressions, initialiser or hyperparameter name)}."""
    params = {}
    for pname, pbody in _mapping(spec, f"{where}, field 'params'", body.get("params"),
                                 "{w: {shape: [features, units], init: he}}").items():
        if not isinstance(pbody, dict) or "shape" not in pbody or not isinstance(pbody["shape"], list):
            raise spec.error(f"{where}, param {pname!r}", "needs {shape: [...], init: ...}")
        init = _name(spec, f"{where}, param {pname!r}, field 'init'", pbody.get("init", "zeros"),
                     f"an initialiser ({', '.join(sorted(INITIALISERS))}) or a hyperparameter")
        params[pname] = (tuple(pbody["shape"]), init)
    return params


def _kind_equations(spec, where, body) -> tuple:
    """(forward equations, {target: Jacobian equations} or 'derive')."""
    forward = []
    raw = body.get("forward")
    if raw is None or not isinstance(raw, list):
        raise spec.error(where, "field 'forward' must be a list of equations ([] for none)")
    for n, src in enumerate(raw):
        forward.append(_equation(spec, f"{where}, forward[{n}]", src))
    backward = body.get("backward", {} if not forward else None)
    if backward is None:
        raise spec.error(where, "field 'backward' is missing; give one Jacobian per input and parameter, "
                                "or 'backward: derive'")
    if backward != "derive":
        if not isinstance(backward, dict):
            raise spec.error(where, "field 'backward' must map each input and parameter to its Jacobian, "
                                    "or be 'derive'")
        for t in backward:
            _name(spec, f"{where}, field 'backward'", t, "the tensor a Jacobian differentiates (x, w, ...)")
        backward = {t: _jacobian(spec, f"{where}, backward {t!r}", src) for t, src in backward.items()}
    return forward, backward


def _kind_tables(spec, where, body) -> tuple:
    """(hyper, symbols, shapes, positions, activation), each checked for its type."""
    hyper = dict(_mapping(spec, f"{where}, field 'hyper'", body.get("hyper"), "{units: required, init: he}"))
    symbols = dict(_mapping(spec, f"{where}, field 'symbols'", body.get("symbols"), "{s1: stride, P: size - 1}"))
    for sname, expr in symbols.items():
        if not isinstance(sname, str) or isinstance(expr, bool) or not isinstance(expr, (str, int)):
            raise spec.error(f"{where}, symbol {sname!r}", f"must be a size expression such as 'size - 1' or a "
                                                            f"whole number, not {_what(expr)}")
    shapes = dict(_mapping(spec, f"{where}, field 'shapes'", body.get("shapes"), "{xp: [b, height + pt + pb]}"))
    for tname, shape in shapes.items():
        if not isinstance(shape, list):
            raise spec.error(f"{where}, shapes {tname!r}", f"must list sizes such as [b, height + pt + pb], "
                                                           f"not {_what(shape)}")
    positions = dict(_mapping(spec, f"{where}, field 'positions'", body.get("positions"), "{z: m}"))
    for result, mask in positions.items():
        _name(spec, f"{where}, positions {result!r}", mask, "the tensor that keeps the positions of the max")
    activation = body.get("activation")
    if activation is not None:
        _name(spec, f"{where}, field 'activation'", activation, "an activation")
    return hyper, symbols, shapes, positions, activation


def _chain(spec, where, part, raw) -> list:
    if not isinstance(raw, list) or not raw:
        raise spec.error(where, f"field {part!r} must be a non-empty list of equations")
    return [_equation(spec, f"{where}, {part}[{n}]", src) for n, src in enumerate(raw)]


def _constant(spec, where, c) -> tuple:
    """(closed form, [argument size expressions]) from {rdft: [width, nw]}."""
    from notation.constants import CONSTANTS
    if not isinstance(c, dict) or len(c) != 1:
        raise spec.error(where, "must be {closed form: [arguments]}, e.g. {rdft: [width, nw]}")
    (form, args), = c.items()
    if form not in CONSTANTS:
        raise spec.error(where, f"no constant {form!r}; valid options are {sorted(CONSTANTS)}")
    if not isinstance(args, list) or any(isinstance(v, bool) or not isinstance(v, (str, int)) for v in args):
        raise spec.error(where, f"its arguments must be a list of sizes such as [width, nw], not {_what(args)}")
    if len(args) != len(CONSTANTS[form].args):
        raise spec.error(where, f"{form} takes {len(CONSTANTS[form].args)} argument(s) "
                                f"({', '.join(CONSTANTS[form].args) or 'none'}), not {len(args)}")
    return form, args


def _algorithms(spec, where, body, section) -> dict:
    """{name: Algorithm} from a kind's `algorithms:` mapping."""
    if body is None:
        return {}
    if section != "kinds" or not isinstance(body, dict):
        raise spec.error(f"{where}, field 'algorithms'", "must map algorithm names to {forward: [...], "
                                                         "backward: [...]} (layer kinds only)")
    out = {}
    allowed = {"cites", "requires", "symbols", "shapes", "constants", "forward", "backward"}
    for aname, a in body.items():
        _name(spec, f"{where}, field 'algorithms'", aname, "an algorithm's name")
        awhere = f"{where}, algorithm {aname!r}"
        if aname in ALGORITHM_CHOICES:
            raise spec.error(awhere, f"{aname!r} is reserved; give the algorithm another name")
        if not isinstance(a, dict):
            raise spec.error(awhere, "must be a mapping with forward: and backward:")
        extra = set(a) - allowed
        if extra:
            raise spec.error(awhere, f"unknown field(s) {sorted(extra)}; valid are {sorted(allowed)}")
        if not a.get("cites"):
            raise spec.error(awhere, "field 'cites' is missing; say which equations it evaluates, e.g. \"(15)\"")
        given = _mapping(spec, f"{awhere}, field 'constants'", a.get("constants"), "{fw: {rdft: [width, nw]}}")
        constants = {cname: _constant(spec, f"{awhere}, constant {cname!r}", c) for cname, c in given.items()}
        chains = {part: _chain(spec, awhere, part, a.get(part)) for part in ("forward", "backward")}
        requires = _mapping(spec, f"{awhere}, field 'requires'", a.get("requires"), "{stride: 1}")
        symbols = _mapping(spec, f"{awhere}, field 'symbols'", a.get("symbols"), "{nh: height + pb}")
        shapes = _mapping(spec, f"{awhere}, field 'shapes'", a.get("shapes"), "{dzd: [b, height + P, zw, filters]}")
        out[aname] = Algorithm(aname, str(a["cites"]), dict(requires), dict(symbols), dict(shapes), constants,
                               chains["forward"], chains["backward"])
    return out


def _modes(spec, where, body, params, hyper) -> dict:
    """What differs between training and evaluation: eval:, state: with update:, random:, bounds:."""
    out = {}
    if "eval" in body:
        raw = body["eval"]
        if not isinstance(raw, list) or not raw:
            raise spec.error(f"{where}, field 'eval'", "must list the forward equations of eval mode")
        out["eval"] = [_equation(spec, f"{where}, eval[{n}]", src) for n, src in enumerate(raw)]
    out["state"] = _state(spec, where, body, params)
    raw = body.get("update") or []
    if not isinstance(raw, list):
        raise spec.error(f"{where}, field 'update'", "must list equations giving each state's new value")
    out["update"] = [_equation(spec, f"{where}, update[{n}]", src) for n, src in enumerate(raw)]
    for n, eq in enumerate(out["update"]):
        if eq.result not in out["state"]:
            raise spec.error(f"{where}, update[{n}]", f"writes {eq.result!r}, which is not declared under state:")
    random = {}
    for rname, rbody in _mapping(spec, f"{where}, field 'random'", body.get("random"),
                                 "{m: {shape: [b, features], bernoulli: keep}}").items():
        if not isinstance(rbody, dict) or not isinstance(rbody.get("shape"), list) or "bernoulli" not in rbody:
            raise spec.error(f"{where}, random {rname!r}", "needs {shape: [...], bernoulli: p}: entries 1 with "
                                                           "probability p, else 0")
        random[rname] = (tuple(rbody["shape"]), rbody["bernoulli"])
    out["random"] = random
    out["bounds"] = _bounds(spec, where, body, hyper)
    return out


def _state(spec, where, body, params) -> dict:
    """{name: (shape, init)}: tensors kept between steps that are not trained (running statistics)."""
    state = {}
    for sname, sbody in _mapping(spec, f"{where}, field 'state'", body.get("state"),
                                 "{rm: {shape: [channels], init: zeros}}").items():
        if not isinstance(sbody, dict) or not isinstance(sbody.get("shape"), list):
            raise spec.error(f"{where}, state {sname!r}", "needs {shape: [...], init: zeros|ones}")
        init = sbody.get("init", "zeros")
        if not isinstance(init, str) or init not in INITIALISERS:
            raise spec.error(f"{where}, state {sname!r}", f"init {init!r} not found, valid options are "
                                                          f"{sorted(INITIALISERS)}")
        if sname in params:
            raise spec.error(f"{where}, state {sname!r}", "is also a parameter; give it a name of its own")
        state[sname] = (tuple(sbody["shape"]), init)
    return state


def _bounds(spec, where, body, hyper) -> dict:
    """{hyperparameter: interval text}: the real-valued hyperparameters and the range each must lie in."""
    bounds = {}
    for hname, text in _mapping(spec, f"{where}, field 'bounds'", body.get("bounds"), '{rate: "[0, 1)"}').items():
        if hname not in hyper:
            raise spec.error(f"{where}, bounds {hname!r}", "is not a hyperparameter of this kind")
        try:
            interval(text)
        except ValueError as e:
            raise spec.error(f"{where}, bounds {hname!r}", str(e)) from None
        bounds[hname] = str(text)
    return bounds


def interval(text):
    """(low, low closed, high, high closed) from "[0, 1)"; ValueError if it is not an interval."""
    t = str(text).strip()
    try:
        if t[0] not in "[(" or t[-1] not in "])":
            raise ValueError
        lo, hi = (float(v) for v in t[1:-1].split(","))
    except (ValueError, IndexError):
        raise ValueError(f"{text!r} is not an interval such as \"[0, 1)\" or \"(0, inf)\"") from None
    return lo, t[0] == "[", hi, t[-1] == "]"


def within(value, text) -> bool:
    lo, lo_closed, hi, hi_closed = interval(text)
    return ((value >= lo if lo_closed else value > lo) and (value <= hi if hi_closed else value < hi))


def _jacobian(spec, where, src) -> list:
    """A Jacobian: one equation, or a list whose last equation writes the gradient and whose
    earlier ones compute intermediates it reads (a padded or gathered dz, say)."""
    if isinstance(src, list):
        if not src:
            raise spec.error(where, "is an empty list; give the Jacobian's equation(s)")
        return [_equation(spec, f"{where}[{n}]", s) for n, s in enumerate(src)]
    return [_equation(spec, where, src)]


def _equation(spec, where, src) -> Equation:
    """An equation in our notation, or {einsum: "bi,ij->bj", operands: [x, w], result: z, cites: "(12)"}."""
    if isinstance(src, dict):
        extra = set(src) - {"einsum", "operands", "result", "cites"}
        if extra or "einsum" not in src or not isinstance(src.get("operands"), list):
            raise spec.error(where, "an einsum entry is {einsum: 'bi,ij->bj', operands: [x, w], result: z, "
                                    "cites: '(12)'}")
        try:
            eq = Equation(str(src["einsum"]), operands=[str(n) for n in src["operands"]],
                          result=str(src.get("result", "z")))
        except NotationError as e:
            raise spec.error(where, e.one_line()) from None
        if src.get("cites"):
            spec.comments[eq.source] = str(src["cites"])
        return eq
    if not isinstance(src, str):
        raise spec.error(where, f"expected an equation string, found {src!r}")
    try:
        return Equation(src)
    except NotationError as e:
        raise spec.error(where, e.one_line()) from None


def _network(spec, name, body) -> NetworkSpec:
    where = f"network {name!r}"
    if not isinstance(body, dict):
        raise spec.error(where, "must be a mapping with input:, layers: and loss:")
    for key in ("input", "layers", "loss"):
        if key not in body:
            raise spec.error(where, f"field {key!r} is missing")
    shape = body["input"]
    if not isinstance(shape, list) or not all(isinstance(n, int) and n > 0 for n in shape):
        raise spec.error(f"{where}, field 'input'", "must list the input's sizes after the batch, e.g. [28, 28, 1]")
    _name(spec, f"{where}, field 'loss'", body["loss"], f"a loss ({', '.join(sorted(spec.losses))})")
    if body["loss"] not in spec.losses:
        raise spec.error(f"{where}, field 'loss'", f"loss {body['loss']!r} not found, valid options are "
                                                   f"{sorted(spec.losses)}")
    if not isinstance(body["layers"], list) or not body["layers"]:
        raise spec.error(f"{where}, field 'layers'", "must be a non-empty list of layers")
    layers, names = [], set()
    for n, layer in enumerate(body["layers"]):
        layers.append(_layer(spec, where, n, layer, names))
    _graph(spec, where, layers)
    loss = spec.losses[body["loss"]]
    if loss.activation and layers[-1].activation != loss.activation:
        raise spec.error(f"{where}, layer {layers[-1].name!r}, field 'activation'",
                         f"loss {loss.name!r} needs the last layer's activation to be {loss.activation!r}")
    training = body.get("training") or {}
    if not isinstance(training, dict) or set(training) - set(TRAINING_DEFAULTS):
        raise spec.error(f"{where}, field 'training'", f"must be a mapping of training defaults "
                                                       f"({', '.join(sorted(TRAINING_DEFAULTS))})")
    return NetworkSpec(name, str(body.get("cites", "")), tuple(shape), body["loss"], order(layers), dict(training))


def _layer(spec, where, n, layer, names) -> LayerSpec:
    """One entry of a network's layers: its name (unique), kind, activation, hyperparameters, inputs."""
    if not isinstance(layer, dict) or "kind" not in layer:
        raise spec.error(f"{where}, layers[{n}]", "needs at least {name: ..., kind: ...}")
    lname = layer.get("name", f"layer{n}")
    if not isinstance(lname, str) or not LAYER_NAME.fullmatch(lname):
        raise spec.error(f"{where}, layers[{n}], field 'name'",
                         f"must be a word such as 'conv1' (letters, digits, _ . -), not {_what(lname)}")
    lwhere = f"{where}, layer {lname!r}"
    if lname in names:
        raise spec.error(lwhere, "two layers have this name; names must be unique")
    names.add(lname)
    kind = _name(spec, f"{lwhere}, field 'kind'", layer["kind"], f"a kind ({', '.join(sorted(spec.kinds))})")
    if kind not in spec.kinds:
        raise spec.error(f"{lwhere}, field 'kind'", f"kind {kind!r} not found, valid options are "
                                                    f"{sorted(spec.kinds)}")
    act = _name(spec, f"{lwhere}, field 'activation'", layer.get("activation", "identity"),
                f"an activation ({', '.join(sorted(spec.activations))})")
    if act not in spec.activations:
        raise spec.error(f"{lwhere}, field 'activation'", f"activation {act!r} not found, valid options "
                                                          f"are {sorted(spec.activations)}")
    merged = _layer_hyper(spec, lwhere, kind, {k: v for k, v in layer.items()
                                              if k not in ("name", "kind", "activation", "inputs")})
    return LayerSpec(lname, kind, merged, act, _layer_sources(spec, lwhere, kind, layer.get("inputs", [])))


def _layer_hyper(spec, lwhere, kind, hyper) -> dict:
    """The kind's hyperparameters with the layer's values: known fields, none required left, in bounds."""
    extra = set(hyper) - set(spec.kinds[kind].hyper)
    if extra:
        raise spec.error(f"{lwhere}, field {sorted(extra)[0]!r}",
                         f"kind {kind!r} takes no such field; its fields are {sorted(spec.kinds[kind].hyper)}")
    merged = dict(spec.kinds[kind].hyper)
    merged.update(hyper)
    if spec.kinds[kind].algorithms:
        valid = list(ALGORITHM_CHOICES) + sorted(spec.kinds[kind].algorithms)
        if merged["algorithm"] not in valid:
            raise spec.error(f"{lwhere}, field 'algorithm'", f"algorithm {merged['algorithm']!r} not found, "
                                                             f"valid options are {valid}")
    missing = [k for k, v in merged.items() if v == REQUIRED]
    if missing:
        raise spec.error(f"{lwhere}, field {missing[0]!r}", f"is required by kind {kind!r}; give it a value")
    for hname, text in spec.kinds[kind].bounds.items():
        value = merged[hname]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not within(value, text):
            raise spec.error(f"{lwhere}, field {hname!r}", f"{hname} = {value!r} is outside {text}; give a "
                                                           "number in that range")
    return merged


def _layer_sources(spec, lwhere, kind, sources) -> tuple:
    """The layers a layer reads (`inputs:`), as many as its kind takes; () for the previous layer."""
    if isinstance(sources, str):
        sources = [sources]
    if not isinstance(sources, list) or not all(isinstance(v, str) for v in sources):
        raise spec.error(f"{lwhere}, field 'inputs'", "must name the layers feeding this one, e.g. "
                                                      "[conv1, skip] ('input' is the network's input)")
    wanted = len(spec.kinds[kind].in_names)
    if sources and len(sources) != wanted:
        raise spec.error(f"{lwhere}, field 'inputs'", f"names {len(sources)} input(s) but kind {kind!r} takes "
                                                      f"{wanted} ({', '.join(spec.kinds[kind].in_names)})")
    if not sources and wanted > 1:
        raise spec.error(f"{lwhere}, field 'inputs'", f"kind {kind!r} takes {wanted} inputs "
                                                      f"({', '.join(spec.kinds[kind].in_names)}); name the "
                                                      "layers feeding them")
    return tuple(sources)


INPUT = "input"  # the name by which a layer's `inputs:` refers to the network's input


def _graph(spec, where, layers):
    """Fill in default sources (the previous layer); refuse a source that names nothing, a cycle,
    and a layer whose output nothing reads."""
    names = [layer.name for layer in layers]
    if INPUT in names:
        raise spec.error(f"{where}, layer {INPUT!r}", f"{INPUT!r} names the network's input; rename the layer")
    for n, layer in enumerate(layers):
        if not layer.inputs:
            layer.inputs = (names[n - 1] if n else INPUT,)
        for src in layer.inputs:
            if src != INPUT and src not in names:
                raise spec.error(f"{where}, layer {layer.name!r}, field 'inputs'",
                                 f"{src!r} names no layer of this network; valid are {[INPUT] + names}")
            if src == layer.name:
                raise spec.error(f"{where}, layer {layer.name!r}, field 'inputs'", "a layer cannot read its own output")
    read = {src for layer in layers for src in layer.inputs}
    for layer in layers[:-1]:
        if layer.name not in read:
            raise spec.error(f"{where}, layer {layer.name!r}", "its output feeds no layer; name it in a later "
                                                              "layer's inputs: or remove it (the last layer is "
                                                              "the network's output)")
    order(layers, spec, where)


def order(layers, spec=None, where=None) -> list:
    """The layers in an order where each follows its sources (listed order where it allows);
    a cycle is a SpecError naming the layers on it."""
    by_name = {layer.name: layer for layer in layers}
    done, out, visiting = set(), [], []

    def visit(layer):
        if layer.name in done:
            return
        if layer.name in visiting:
            cycle = visiting[visiting.index(layer.name):] + [layer.name]
            raise spec.error(f"{where}, layer {layer.name!r}, field 'inputs'",
                             f"the layers' inputs form a cycle ({' reads '.join(cycle)}); a layer may only "
                             "read layers that do not depend on it")
        visiting.append(layer.name)
        for src in layer.inputs:
            if src in by_name:
                visit(by_name[src])
        visiting.pop()
        done.add(layer.name)
        out.append(layer)

    for layer in layers:
        visit(layer)
    return out
