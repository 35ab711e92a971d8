"""The records layers.yaml is read into: kinds (with their algorithms), layers, networks and the spec.

Leaf of the spec reader: kinds.py and spec.py build these; nothing here reads YAML.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from notation import NotationWarning

from ..errors import SpecError


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
    divides: dict = field(default_factory=dict)  # hyperparameter -> the sizes it must divide (heads: [features])
    no_gradient: tuple = ()  # results derive treats as constants (a softmax's shift: it changes nothing)

    @property
    def in_names(self) -> tuple:
        """The kind's inputs, in the order a layer's `inputs:` lists their sources."""
        return tuple(self.input_axes) if self.input_axes else (self.in_name,)

    @property
    def modal(self) -> bool:
        """Whether training and evaluation run this kind differently."""
        return bool(self.eval is not None or self.update or self.random)


def fits(axes, shape) -> bool:
    """Whether a shape has the axes an input names: as many, or with a leading `...` (leading axes,
    the batch at least) as many or more."""
    if axes[:1] == ("...",):
        return len(shape) >= len(axes)
    return len(shape) == len(axes)


def axis_sizes(axes, shape) -> dict:
    """{axis name: size} of a shape that fits the axes: the named ones, counted from the end after `...`."""
    named = axes[1:] if axes[:1] == ("...",) else axes
    return dict(zip(named, shape[len(shape) - len(named):]))


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
    constants: dict  # name -> (registry name, [argument size expressions]) or ("=", Equation over those above)
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
    auto: tuple = ()  # what came from the data: "input" and "<layer>.<field>" of each `classes` value
    body: dict | None = field(default=None, repr=False, compare=False)  # as written, for Spec.fitted
    loss_hyper: dict = field(default_factory=dict)  # the loss's hyperparameters: its defaults, as the network sets them


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

    def warn(self, where, message) -> None:
        """One line, in the form of an error, for what loads but is likely a mistake."""
        warnings.warn(f"{self.file}: {where}: {message}", NotationWarning, stacklevel=2)
