"""layers.yaml read and checked: kinds, activations, losses, networks, training defaults.

Everything here is structure: names, fields, types.  Sizes and equations are checked when
a network is built for an input shape (layer.py), where their values are known.
This module reads the file's top level and its networks' layers; one kind is read in kinds.py,
the layer graph checked in graph.py, YAML parsed in spec_yaml.py, into the records of records.py.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from ..errors import SpecError
from ..settings import NAMED_DATA_CLASSES, NAMED_DATA_INPUT, SPEC_DEFAULTS
from .graph import INPUT, _graph, order
from .kinds import ALGORITHM_CHOICES, _kind, interval, within
from .records import Algorithm, Kind, LayerSpec, NetworkSpec, Spec
from .spec_yaml import _name, _what, load, trailing_comments

__all__ = ["read", "fitted", "AUTO", "CLASSES", "Spec", "Kind", "Algorithm", "LayerSpec", "NetworkSpec", "INPUT",
           "order", "TRAINING_DEFAULTS", "ALGORITHM_CHOICES", "REQUIRED", "LAYER_NAME", "interval", "within",
           "trailing_comments"]

TRAINING_DEFAULTS = SPEC_DEFAULTS  # the training: fields and their defaults (engine/settings.py)
REQUIRED = "required"
AUTO, CLASSES = "auto", "classes"  # input: auto and a hyperparameter's `classes` come from the data


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


MOST_BYTES = 16 << 20  # a spec file is read up to this size (layers.yaml is some 30 KB)


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
            with open(source, "rb") as f:
                data = f.read(MOST_BYTES + 1)  # bounded: a 3 GiB file, or /dev/zero, is no spec
            if len(data) > MOST_BYTES:
                raise SpecError(file, None, f"more than {MOST_BYTES >> 20} MiB: not a spec; give the path of a spec "
                                            "such as layers.yaml")
            text = data.decode("utf-8")
        except FileNotFoundError:
            raise SpecError(file, None, "no such file; give the path of a spec such as layers.yaml") from None
        except (OSError, UnicodeDecodeError) as e:
            raise SpecError(file, None, f"cannot read it ({e})") from None
    data = load(text, file)
    if not isinstance(data, dict):
        raise SpecError(file, None, "the spec must be a mapping with kinds:, activations:, losses: and networks:, "
                                    f"but this {'file' if file != '<string>' else 'text'} holds {_what(data)}")
    spec = _build(file, data)
    spec.comments = {**trailing_comments(text), **spec.comments}
    return spec


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


def fitted(spec: Spec, network: str, input_shape, classes: int) -> Spec:
    """The spec with `network`'s `input: auto` and `classes` values taken from the data: its input's
    shape (after the batch) and its number of classes.  A fixed input stays as written."""
    body = spec.networks[network].body
    if body is None or not spec.networks[network].auto:
        return spec
    out = dataclasses.replace(spec, networks=dict(spec.networks))
    out.networks[network] = _network(out, network, body, (tuple(int(n) for n in input_shape), int(classes)))
    return out


def _network(spec, name, body, data=(NAMED_DATA_INPUT, NAMED_DATA_CLASSES)) -> NetworkSpec:
    """One network; `input: auto` and `classes` values take `data`'s (input shape, number of classes)."""
    where = f"network {name!r}"
    if not isinstance(body, dict):
        raise spec.error(where, "must be a mapping with input:, layers: and loss:")
    for key in ("input", "layers", "loss"):
        if key not in body:
            raise spec.error(where, f"field {key!r} is missing")
    shape, auto = body["input"], []
    if shape == AUTO:
        shape = list(data[0])
        auto.append("input")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n > 0 for n in shape):
        raise spec.error(f"{where}, field 'input'", "must list the input's sizes after the batch, e.g. [28, 28, 1], "
                                                    "or say auto (the data's shape)")
    loss_name, loss_hyper = _loss(spec, where, body["loss"])
    if not isinstance(body["layers"], list) or not body["layers"]:
        raise spec.error(f"{where}, field 'layers'", "must be a non-empty list of layers")
    layers, names = [], set()
    for n, layer in enumerate(body["layers"]):
        layers.append(_layer(spec, where, n, layer, names, data[1], auto))
    _graph(spec, where, layers)
    loss = spec.losses[loss_name]
    if loss.activation and layers[-1].activation != loss.activation:
        raise spec.error(f"{where}, layer {layers[-1].name!r}, field 'activation'",
                         f"loss {loss.name!r} needs the last layer's activation to be {loss.activation!r}")
    training = body.get("training") or {}
    if not isinstance(training, dict) or set(training) - set(TRAINING_DEFAULTS):
        raise spec.error(f"{where}, field 'training'", f"must be a mapping of training defaults "
                                                       f"({', '.join(sorted(TRAINING_DEFAULTS))})")
    return NetworkSpec(name, str(body.get("cites", "")), tuple(shape), loss_name, order(layers), dict(training),
                       tuple(auto), body, loss_hyper)


def _loss(spec, where, given) -> tuple:
    """(the loss's name, its hyperparameters): `loss: name`, or `{kind: name, smoothing: 0.1}` as a layer
    gives its kind's fields, checked against the loss's own fields and bounds."""
    lwhere = f"{where}, field 'loss'"
    hyper = {}
    if isinstance(given, dict):
        hyper = {k: v for k, v in given.items() if k != "kind"}
        given = given.get("kind")
    _name(spec, lwhere, given, f"a loss ({', '.join(sorted(spec.losses))}), or {{kind: loss, field: value}}")
    if given not in spec.losses:
        raise spec.error(lwhere, f"loss {given!r} not found, valid options are {sorted(spec.losses)}")
    return given, _hyper(spec, lwhere, spec.losses[given], hyper)


def _layer(spec, where, n, layer, names, classes=NAMED_DATA_CLASSES, auto=None) -> LayerSpec:
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
    given = {k: v for k, v in layer.items() if k not in ("name", "kind", "activation", "inputs")}
    for k, v in given.items():
        if v == CLASSES:  # the data's number of classes (the last dense layer's units)
            given[k] = classes
            if auto is not None:
                auto.append(f"{lname}.{k}")
    merged = _layer_hyper(spec, lwhere, kind, given)
    return LayerSpec(lname, kind, merged, act, _layer_sources(spec, lwhere, kind, layer.get("inputs", [])))


def _layer_hyper(spec, lwhere, kind, hyper) -> dict:
    """The kind's hyperparameters with the layer's values: known fields, none required left, in bounds."""
    merged = _hyper(spec, lwhere, spec.kinds[kind], hyper)
    if spec.kinds[kind].algorithms:
        valid = list(ALGORITHM_CHOICES) + sorted(spec.kinds[kind].algorithms)
        if merged["algorithm"] not in valid:
            raise spec.error(f"{lwhere}, field 'algorithm'", f"algorithm {merged['algorithm']!r} not found, "
                                                             f"valid options are {valid}")
    return merged


def _hyper(spec, lwhere, kind: Kind, hyper) -> dict:
    """A kind's (or loss's) hyperparameters with the given values: known fields, none required left, in bounds."""
    what = "loss" if kind.section == "losses" else "kind"
    extra = set(hyper) - set(kind.hyper)
    if extra:
        raise spec.error(f"{lwhere}, field {sorted(extra)[0]!r}",
                         f"{what} {kind.name!r} takes no such field; its fields are {sorted(kind.hyper)}")
    merged = dict(kind.hyper)
    merged.update(hyper)
    missing = [k for k, v in merged.items() if v == REQUIRED]
    if missing:
        raise spec.error(f"{lwhere}, field {missing[0]!r}", f"is required by {what} {kind.name!r}; give it a value")
    for hname, text in kind.bounds.items():
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
