"""layers.yaml read and checked: kinds, activations, losses, networks, training defaults.

Everything here is structure: names, fields, types.  Sizes and equations are checked when
a network is built for an input shape (engine.layer), where their values are known.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from notation import Equation, NotationError

from .errors import SpecError
from .init import INITIALISERS

TRAINING_DEFAULTS = {"dataset": "fashion-mnist", "optimizer": "adam", "lr": 0.001, "batch_size": 64,
                     "epochs": 5, "seed": 0, "dtype": "float32", "optimize": "auto"}
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

    @property
    def where(self) -> str:
        return f"{self.section[:-1] if self.section != 'activations' else 'activation'} {self.name!r}"


@dataclass
class LayerSpec:
    name: str
    kind: str
    hyper: dict
    activation: str


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


def read(source) -> Spec:
    """A Spec from a path, a YAML string or a dict; SpecError names the file, place and fix."""
    if isinstance(source, dict):
        return _build("<dict>", source)
    text, file = source, "<string>"
    if isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source
                                           and source.strip().endswith((".yaml", ".yml"))):
        file = str(source)
        try:
            text = Path(source).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SpecError(file, None, "no such file; give the path of a spec such as layers.yaml") from None
        except (OSError, UnicodeDecodeError) as e:
            raise SpecError(file, None, f"cannot read it ({e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(file, where, f"YAML syntax error: {problem}; fix the YAML there") from None
    if not isinstance(data, dict):
        raise SpecError(file, None, "the spec must be a mapping with kinds:, activations:, losses: and networks:")
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
            target[name] = _kind(spec, section, name, body, io)
    networks = data.get("networks") or {}
    if not isinstance(networks, dict) or not networks:
        raise spec.error("networks", "define at least one network (a mapping of names to networks)")
    for name, body in networks.items():
        spec.networks[name] = _network(spec, name, body)
    spec.network = data.get("network") or next(iter(spec.networks))
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
               "activation"}
    extra = set(body) - allowed
    if extra:
        raise spec.error(where, f"unknown field(s) {sorted(extra)}; valid are {sorted(allowed)}")
    if not body.get("cites"):
        raise spec.error(where, "field 'cites' is missing; cite the report's equation numbers, e.g. \"(12)-(14)\"")
    inputs = tuple(body.get("input") or (("b", "features") if section != "losses" else ()))
    params = {}
    for pname, pbody in (body.get("params") or {}).items():
        if not isinstance(pbody, dict) or "shape" not in pbody or not isinstance(pbody["shape"], list):
            raise spec.error(f"{where}, param {pname!r}", "needs {shape: [...], init: ...}")
        params[pname] = (tuple(pbody["shape"]), pbody.get("init", "zeros"))
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
        backward = {t: _jacobian(spec, f"{where}, backward {t!r}", src) for t, src in backward.items()}
    hyper = dict(body.get("hyper") or {})
    for pname, (_, init) in params.items():
        if init not in INITIALISERS and init not in hyper:
            raise spec.error(f"{where}, param {pname!r}", f"init {init!r} not found, valid options are "
                                                          f"{sorted(INITIALISERS)} or a hyperparameter name")
    return Kind(name, section, str(body["cites"]), inputs, hyper, dict(body.get("symbols") or {}),
                dict(body.get("shapes") or {}), params, forward, backward, dict(body.get("positions") or {}),
                body.get("activation"), io[0], io[1])


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
    if body["loss"] not in spec.losses:
        raise spec.error(f"{where}, field 'loss'", f"loss {body['loss']!r} not found, valid options are "
                                                   f"{sorted(spec.losses)}")
    layers, names = [], set()
    if not isinstance(body["layers"], list) or not body["layers"]:
        raise spec.error(f"{where}, field 'layers'", "must be a non-empty list of layers")
    for n, layer in enumerate(body["layers"]):
        if not isinstance(layer, dict) or "kind" not in layer:
            raise spec.error(f"{where}, layers[{n}]", "needs at least {name: ..., kind: ...}")
        lname = str(layer.get("name", f"layer{n}"))
        lwhere = f"{where}, layer {lname!r}"
        if lname in names:
            raise spec.error(lwhere, "two layers have this name; names must be unique")
        names.add(lname)
        kind = layer["kind"]
        if kind not in spec.kinds:
            raise spec.error(f"{lwhere}, field 'kind'", f"kind {kind!r} not found, valid options are "
                                                        f"{sorted(spec.kinds)}")
        act = layer.get("activation", "identity")
        if act not in spec.activations:
            raise spec.error(f"{lwhere}, field 'activation'", f"activation {act!r} not found, valid options "
                                                              f"are {sorted(spec.activations)}")
        hyper = {k: v for k, v in layer.items() if k not in ("name", "kind", "activation")}
        extra = set(hyper) - set(spec.kinds[kind].hyper)
        if extra:
            raise spec.error(f"{lwhere}, field {sorted(extra)[0]!r}",
                             f"kind {kind!r} takes no such field; its fields are {sorted(spec.kinds[kind].hyper)}")
        merged = dict(spec.kinds[kind].hyper)
        merged.update(hyper)
        missing = [k for k, v in merged.items() if v == REQUIRED]
        if missing:
            raise spec.error(f"{lwhere}, field {missing[0]!r}", f"is required by kind {kind!r}; give it a value")
        layers.append(LayerSpec(lname, kind, merged, act))
    loss = spec.losses[body["loss"]]
    if loss.activation and layers[-1].activation != loss.activation:
        raise spec.error(f"{where}, layer {layers[-1].name!r}, field 'activation'",
                         f"loss {loss.name!r} needs the last layer's activation to be {loss.activation!r}")
    training = body.get("training") or {}
    if not isinstance(training, dict) or set(training) - set(TRAINING_DEFAULTS):
        raise spec.error(f"{where}, field 'training'", f"must be a mapping of training defaults "
                                                       f"({', '.join(sorted(TRAINING_DEFAULTS))})")
    return NetworkSpec(name, str(body.get("cites", "")), tuple(shape), body["loss"], layers, dict(training))
