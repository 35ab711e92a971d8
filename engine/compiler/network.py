"""The network of a spec: layers, activations and the loss, compiled once per batch size.

Forward is eq. (1)-(2) layer by layer; backward runs each block's Jacobian contractions from
the loss down (eq. 3-5, 26), giving batch-mean parameter gradients (eq. 6-9).  The layers form
a graph (a layer reads the previous one unless it names its `inputs:`); where an output feeds
several layers, their gradients are summed.  Training and evaluation compile apart only for a
network with a kind that runs differently in the two modes (batch norm, dropout).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import opt_einsum as oe

from notation.mathematics.derive import grad
from notation.runtime import environment, parallel

from ..errors import InputError
from . import memory
from . import reorder as reordering
from .checks import LoadChecks
from .init import INITIALISERS
from .layer import Block
from .records import fits
from .spec import INPUT, Spec, read
from .threads import Threads, untraced

PATH_OPTIONS = set(oe.paths._PATH_OPTIONS) | {"auto", "auto-hq"}  # opt_einsum's registry of path optimizers


@dataclasses.dataclass
class Stage:
    """One layer compiled for a batch size: its block, its activation's block, their tensors."""

    name: str
    layer: Block
    activation: Block | None  # None for identity
    env: dict
    act_env: dict
    sources: tuple = ()  # (input name, source layer or "input") for each of the kind's inputs
    grad_sum: np.ndarray | None = None  # where the gradients of layers reading this one's output are summed
    relu_of: str | None = None  # a max pool running the ReLU of the layer before it (engine/compiler/reorder.py)
    views: dict = dataclasses.field(default_factory=dict)  # what: (array, its reshaped view), see shaped()

    def shaped(self, what: str, a: np.ndarray, shape: tuple) -> np.ndarray:
        """a reshaped to shape, the same view object while a is the same array: the layers' runs keep what
        they make of the arrays they are given (views, matrices) for as long as they get the same ones."""
        if a.shape == shape:
            return a
        kept = self.views.get(what)
        if kept is None or kept[0] is not a:
            kept = self.views[what] = (a, a.reshape(shape))
        return kept[1]


class Network(LoadChecks):
    """A network built from a spec; see engine.load."""

    def __init__(self, spec: Spec, network: str | None = None, dtype=None, optimize=None, check=True,
                 seed=None, reorder=True, algorithms=None):
        self.spec = spec
        self.name = network or spec.network
        if not isinstance(self.name, str):
            raise spec.error("network", f"must be the name of a network, not {self.name!r}; valid options are "
                                        f"{sorted(spec.networks)}")
        if self.name not in spec.networks:
            raise spec.error("network", f"{self.name!r} not found, valid options are {sorted(spec.networks)}")
        self.net = spec.networks[self.name]
        self.dtype = np.dtype(dtype or spec.training["dtype"])
        if self.dtype not in (np.float32, np.float64):
            raise spec.error("training, field 'dtype'", f"{self.dtype} is not float32 or float64")
        self.optimize = optimize or spec.training["optimize"]
        if isinstance(self.optimize, str) and self.optimize not in PATH_OPTIONS:
            raise spec.error("training, field 'optimize'" if optimize is None else "optimize (given)",
                             f"path optimizer {self.optimize!r} not found, valid options are {sorted(PATH_OPTIONS)}")
        self.loss_kind = spec.losses[self.net.loss]
        self.input_shape = tuple(self.net.input)
        self._compiled, self._auto = {}, {}
        self._targets = {}  # batch -> the one-hot labels' buffer, the same array every step (_labels)
        self.modal = any(self.spec.kinds[layer.kind].modal for layer in self.net.layers)
        self.random = any(self.spec.kinds[layer.kind].random for layer in self.net.layers)
        # {layer: the max pool after it that runs its ReLU}: same forward, quarter of the ReLU's work
        self.reordered = reordering.pairs(spec, self.net.layers) if reorder else {}
        layers = {layer.name: layer for layer in self.net.layers}
        self._relu_of = {pool: layers[layer] for layer, pool in self.reordered.items()}  # pool -> its ReLU's layer
        self.algorithms = self._resolve_algorithms(algorithms)  # layer -> the algorithm it runs (or "definition")
        stages = self._build(2, np.float64)  # shapes, names and parameters; also the load-time checks
        if len(stages[-2].layer.out_shape) != 2:  # a dense layer over [b, ..., features] keeps the leading axes
            raise spec.error(self._where(self.net.layers[-1]),
                             f"gives shape {stages[-2].layer.out_shape}, but the loss {self.net.loss!r} reads "
                             "[b, classes]; end the network with one vector per example (a flatten, a pooling "
                             "or a mean over the tokens before the last dense layer)")
        self.classes = stages[-2].layer.out_shape[-1]
        self.param_shapes = {s.name: dict(s.layer.param_shapes) for s in stages[:-1]}
        self.state_shapes = {s.name: dict(s.layer.state_shapes) for s in stages[:-1] if s.layer.state_shapes}
        self._check_memory()
        seed = spec.training["seed"] if seed is None else seed
        self.params = self.init(seed)
        self.state = self.init_state()
        self.rng = np.random.default_rng([seed, 1])  # the random masks' generator (dropout); a trainer sets its own
        self.threads = Threads()  # whose threads run each pass's products, chosen by timing both
        if check:
            self.check(stages)

    def __repr__(self) -> str:
        size = sum(int(np.prod(s)) for ps in self.param_shapes.values() for s in ps.values())
        return (f"<Network {self.name!r} of {self.spec.file}: {len(self.net.layers)} layers, {size:,} parameters, "
                f"{self.dtype.name}, input {self.input_shape}>")

    # -- building ----------------------------------------------------------------------
    def _where(self, layer):
        return f"network {self.name!r}, layer {layer.name!r} ({layer.kind})"

    def _resolve_algorithms(self, given=None) -> dict:
        """Each layer's algorithm, `auto` decided once at the training batch size (timed on this machine,
        engine/compiler/cost.py), so that every batch size and the load-time check use the same one;
        `given` ({layer: algorithm}, as a checkpoint recorded them) decides instead, so that a resumed
        run computes what the interrupted one did, on any machine."""
        auto = [layer for layer in self.net.layers
                if self.spec.kinds[layer.kind].algorithms and layer.hyper.get("algorithm") == "auto"]
        if not auto:
            return {}
        if given is not None:
            return self._given_algorithms(auto, given)
        batch = int(self.spec.training_for(self.name).get("batch_size") or 64)
        self.algorithms, self._auto = {}, {}
        stages = self._build(batch, self.dtype)
        self._compiled[(batch, self.dtype, "train")] = stages
        self._auto = {s.name: dict(s.layer.chain["auto"], batch=batch) for s in stages[:-1]
                      if s.layer.chain is not None and "auto" in s.layer.chain}
        return {s.name: s.layer.algorithm or "definition" for s in stages[:-1] if s.layer.kind.algorithms}

    def _given_algorithms(self, auto, given) -> dict:
        """The recorded choice of every `auto` layer, each one the kind has; else one line naming it."""
        chosen = {}
        for layer in auto:
            name = given.get(layer.name) if isinstance(given, dict) else None
            valid = ["definition", *self.spec.kinds[layer.kind].algorithms]
            if name not in valid:
                raise self.spec.error(f"{self._where(layer)}, field 'algorithm'",
                                      f"the recorded algorithm {name!r} is not one of {valid}")
            chosen[layer.name] = name
        return chosen

    def _build(self, batch, dtype, mode="train"):
        shapes = {INPUT: (batch,) + self.input_shape}
        stages = []
        train = mode == "train"
        for layer in self.net.layers:  # in an order where each layer follows its sources
            kind = self.spec.kinds[layer.kind]
            in_shapes = {}
            for in_name, src in zip(kind.in_names, layer.inputs):
                shape, axes = shapes[src], kind.input_axes.get(in_name, kind.inputs)
                if not fits(axes, shape):
                    before = f"layer {src!r} gives" if src != INPUT else "the network's input is"
                    more = " or more" if axes[0] == "..." else ""
                    field = "" if len(kind.in_names) == 1 else f" {in_name!r}"
                    raise self.spec.error(f"{self._where(layer)}, input{field}",
                                          f"expects an input [{', '.join(axes)}] but {before} shape {shape}: "
                                          f"{len(shape)} axes, not {len(axes)}{more}; make them chain (e.g. a flatten "
                                          "layer between an image layer and a dense one)")
                in_shapes[in_name] = shape
            needs = (set(kind.params) | {i for i, src in zip(kind.in_names, layer.inputs) if src != INPUT}
                     if train else set())
            block = Block(self.spec, kind, layer.hyper, in_shapes, self._where(layer),
                          self.optimize, needs=needs, dtype=dtype, algorithm=self.algorithms.get(layer.name),
                          mode=mode)
            if layer.name in self._auto and block.chain is not None:
                block.chain.setdefault("auto", self._auto[layer.name])  # how `auto` decided, for the plans
            out = block.out_shape
            act_kind = self.spec.activations[layer.activation]
            where = f"{self._where(layer)}, activation {act_kind.name!r}"
            relu_of = self._relu_of.get(layer.name)
            if relu_of is not None:
                act_kind = self.spec.activations[relu_of.activation]
                where = (f"{self._where(layer)}, activation {act_kind.name!r} of layer {relu_of.name!r}, run "
                         "after the pool ((18) and (20) commute)")
            act = None
            if act_kind.forward and layer.name not in self.reordered:
                flat = (out[0], int(np.prod(out[1:])))
                act = Block(self.spec, act_kind, {}, {"z": flat}, where, self.optimize,
                            needs={"z"} if train else set(), dtype=dtype)
            stages.append(Stage(layer.name, block, act, {}, {}, tuple(zip(kind.in_names, layer.inputs)),
                                relu_of=relu_of.name if relu_of else None))
            shapes[layer.name] = out
        last = stages[-1]
        loss_shapes = dict(last.activation.shapes if last.activation else {"z": last.layer.out_shape})
        loss_shapes["y"] = loss_shapes["z"]
        loss_shapes["dJ"] = ()
        loss = Block(self.spec, self.loss_kind, self.net.loss_hyper, loss_shapes, f"network {self.name!r}, loss "
                     f"{self.loss_kind.name!r}", self.optimize, needs={"z"} if train else set(), dtype=dtype)
        return stages + [Stage("loss", loss, None, {}, {})]

    def compiled(self, batch: int, mode: str = "train"):
        """The stages for a batch size, compiled on first use and kept: nothing is re-planned.  A network
        whose kinds run alike in training and evaluation compiles once for both."""
        key = (batch, self.dtype, mode if self.modal else "train")
        if key not in self._compiled:
            self._compiled[key] = self._build(batch, self.dtype, key[2])
        return self._compiled[key]

    def _check_memory(self):
        """Refuse parameters that cannot fit in memory before drawing them (a layer of 10^8 units)."""
        count = memory.parameter_count(self.param_shapes)
        biggest = memory.largest_parameters(self.param_shapes)
        need = count * self.dtype.itemsize + int(np.prod(biggest[0][2], dtype=object)) * 8  # drawn in float64
        have = memory.available()
        if have is not None and need > have:
            most = ", ".join(f"{layer}.{p} {'x'.join(map(str, shape))}" for layer, p, shape in biggest[:2])
            raise self.spec.error(f"network {self.name!r}",
                                  f"its {count:,} parameters need about {memory.human(need)} of memory (the "
                                  f"largest: {most}), but {memory.human(have)} are available; make those layers "
                                  "smaller (units, filters, kernel, or the input they get)")

    def init(self, seed):
        """Fresh parameters by each kind's named initialiser, from one seeded generator."""
        rng = np.random.default_rng(seed)
        params = {}
        for layer in self.net.layers:
            kind = self.spec.kinds[layer.kind]
            params[layer.name] = {}
            for p, shape in self.param_shapes[layer.name].items():
                init = kind.params[p][1]
                init = layer.hyper.get(init, init)
                if init not in INITIALISERS:
                    raise self.spec.error(f"{self._where(layer)}, param {p!r}",
                                          f"init {init!r} not found, valid options are {sorted(INITIALISERS)}")
                params[layer.name][p] = INITIALISERS[init](rng, shape).astype(self.dtype)
        return params

    def init_state(self):
        """Fresh state (running statistics) by each kind's initialiser: {layer: {name: array}}."""
        state = {}
        for layer in self.net.layers:
            kind = self.spec.kinds[layer.kind]
            for name, shape in self.state_shapes.get(layer.name, {}).items():
                state.setdefault(layer.name, {})[name] = INITIALISERS[kind.state[name][1]](None, shape).astype(
                    self.dtype)
        return state

    def set_state(self, state):
        """Load state (running statistics), shape-checked, copied into the network's own arrays."""
        _check_arrays("set_state", self.state_shapes, state)
        for layer, shapes in self.state_shapes.items():
            for name in shapes:
                np.copyto(self.state[layer][name], np.asarray(state[layer][name], dtype=self.dtype))
    def set_params(self, params):
        """Load weights: every layer and parameter present, each of the right shape."""
        _check_arrays("set_params", self.param_shapes, params)
        for layer, shapes in self.param_shapes.items():
            for p in shapes:
                self.params[layer][p] = np.array(params[layer][p], dtype=self.dtype)

    # -- running -----------------------------------------------------------------------
    def _input(self, x):
        x = np.asarray(x)
        given = x.shape
        if x.ndim == len(self.input_shape) and x.shape == self.input_shape:
            x = x[None]  # one example
        if x.shape[1:] != self.input_shape:
            hint = ""
            if given[1:] + (1,) == self.input_shape:
                hint = f"; add the channel axis: x[..., None] has shape {given + (1,)}"
            raise InputError(f"network {self.name!r} takes inputs of shape (B, "
                             f"{', '.join(map(str, self.input_shape))}), got {given}{hint}")
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise InputError(f"network {self.name!r} takes numbers, got an array of {x.dtype}")
        return np.ascontiguousarray(x, dtype=self.dtype)

    def _forward(self, x, keep_positions=False, train=False):
        stages = self.compiled(x.shape[0], "train" if train else "eval")
        outs = {INPUT: x}
        a = x
        for s in stages[:-1]:
            env, block = s.env, s.layer
            for in_name, src in s.sources:
                env[in_name] = outs[src]
            env.update(_held("params", s.name, self.params[s.name], block.param_shapes))
            if block.state_shapes:
                env.update(_held("state", s.name, self.state[s.name], block.state_shapes))
            if block.random:
                block.draw(env, self.rng)
            block.forward(env, keep_positions=keep_positions)
            if block.update_runs:
                block.update(env)
            z = env[block.kind.out_name]
            if s.activation is None:
                a = z
            else:
                s.act_env["z"] = s.shaped("z", z, (z.shape[0], z.size // z.shape[0]))
                s.activation.forward(s.act_env)
                a = s.shaped("a", s.act_env["a"], z.shape)
            outs[s.name] = a
        return stages, a

    def forward(self, x, train=False):
        """Class probabilities for a batch x of shape (B, *input).  train=False (inference, evaluation)
        uses running statistics and no dropout; train=True runs as a training step does: it draws
        the random masks from `rng` and updates the running statistics."""
        ours = train or self.threads.ours(("inference", len(x)), lambda: untraced(
            self, lambda: self._forward(self._input(x))))
        with parallel.threads(ours), parallel.serial_blas():
            _, a = self._forward(self._input(x), train=train)
            return a.copy()

    def _labels(self, labels, batch):
        """The one-hot targets y[b,i] of (24), in a buffer kept per batch size: the loss's runs then see the
        same array every step and reuse what they worked out for it (a chain's arguments, its views)."""
        labels = np.asarray(labels)
        y = self._targets.get(batch)
        if y is None or y.dtype != self.dtype:
            y = self._targets[batch] = np.zeros((batch, self.classes), dtype=self.dtype)
        if labels.shape == (batch, self.classes):
            np.copyto(y, labels, casting="unsafe")
            return y
        if labels.shape != (batch,):
            raise InputError(f"labels must be {batch} class numbers or a ({batch}, {self.classes}) one-hot "
                             f"array, got shape {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f"labels must be whole class numbers 0..{self.classes - 1}, got {labels.dtype} values; "
                             "convert them with labels.astype(int), or give a one-hot array")
        if labels.min() < 0 or labels.max() >= self.classes:
            raise InputError(f"labels must lie in 0..{self.classes - 1}, got {labels.min()}..{labels.max()}")
        y.fill(0)
        y[np.arange(batch), labels] = 1
        return y

    def loss_and_grads(self, x, labels, copy=True):
        """(J, {layer: {param: dJ/dparam}}) for a batch, gradients averaged over it (eq. 24, 8-9).

        With copy=False the gradients are the engine's own buffers, valid until the next call.
        """
        ours = self.threads.ours(("training", len(x)), lambda: untraced(
            self, lambda: self._loss_and_grads(x, labels, False)))
        with parallel.threads(ours), parallel.serial_blas():  # whose threads: engine/compiler/threads.py
            return self._loss_and_grads(x, labels, copy)

    def _loss_and_grads(self, x, labels, copy):
        x = self._input(x)
        y = self._labels(labels, x.shape[0])
        stages, _ = self._forward(x, keep_positions=True, train=True)
        loss, env = stages[-1].layer, stages[-1].env
        last = stages[-2]
        env.update(last.act_env if last.activation else {"z": last.env[last.layer.kind.out_name]})
        env["y"] = y
        env["dJ"] = np.ones((), dtype=self.dtype)
        loss.forward(env)
        J = float(env["J"])
        loss.backward(env)
        dz = env["dz"]
        try:
            self._backward(stages, dz)
        finally:
            parallel.finish()  # the weights' gradients handed to a helper (_backward)
        grads = {s.name: {p: (s.env[grad(p)].copy() if copy else s.env[grad(p)]) for p in s.layer.param_shapes}
                 for s in stages[:-1]}
        return J, grads

    def _backward(self, stages, dz):
        """(23)-(25) through every layer from the last: each layer's Jacobians, the gradients of an output
        read by several layers summed.  Where a layer has both, the steps of its weights' gradients run
        on a helper thread (parallel.start) while this one goes on with its inputs' and the layers below."""
        douts, by_name = {}, None
        for n in range(len(stages) - 2, -1, -1):
            s = stages[n]
            if n != len(stages) - 2:  # the gradient of this layer's output, through its activation
                da = douts.pop(s.name)
                if s.activation is None:
                    dz = da
                else:
                    s.act_env["da"] = s.shaped("da", da, (da.shape[0], da.size // da.shape[0]))
                    s.activation.backward(s.act_env)
                    dz = s.act_env["dz"]
                    if s.relu_of is not None:
                        reordering.at_zero_maxima(s.layer, s.env[s.sources[0][0]], s.act_env["z"], dz)
            out = s.layer.out_shape
            s.env[grad(s.layer.kind.out_name)] = s.shaped("dz", dz, out)
            shared, weights, inputs = s.layer.lanes()
            if s.layer.apart() >= parallel.ASIDE_SECONDS and parallel.aside():
                s.layer.backward(s.env, shared)
                parallel.start(s.layer.backward, s.env, weights)
                s.layer.backward(s.env, inputs)
            else:
                s.layer.backward(s.env)
            for in_name, src in s.sources:
                if src == INPUT:
                    continue
                dx = s.env[grad(in_name)]
                if src not in douts:
                    douts[src] = dx
                    continue
                # an output read by several layers: its gradient is the sum of theirs
                if by_name is None:
                    by_name = {t.name: t for t in stages}
                t = by_name[src]
                if douts[src] is not t.grad_sum:
                    if t.grad_sum is None:
                        t.grad_sum = np.empty(dx.shape, dtype=dx.dtype)
                    np.add(douts[src], dx, out=t.grad_sum)
                    douts[src] = t.grad_sum
                else:
                    t.grad_sum += dx

    def plans(self, batch: int = 64) -> str:
        """Every compiled contraction of the network at a batch size: strategy, views, einsum, path, cost,
        totals (the text of scripts/plan.py; in a notebook its markdown tables; `.document` the data)."""
        from .plans import PlanText, collect
        return PlanText(collect(self, batch))


def load(source="layers.yaml", network=None, dtype=None, optimize=None, check=True, seed=None,
         reorder=True, algorithms=None) -> Network:
    """A Network from a spec file, YAML string or dict (see README: the spec format).  reorder=False
    runs each ReLU before the max pool after it, in the definition's order (engine/compiler/reorder.py);
    algorithms={layer: name} fixes what `auto` would choose (as `net.algorithms` and checkpoints record it).
    A project environment variable set to a bad value is one UserError line (notation/runtime/environment.py)."""
    environment.check()
    spec = source if isinstance(source, Spec) else read(source)
    return Network(spec, network, dtype=dtype, optimize=optimize, check=check, seed=seed, reorder=reorder,
                   algorithms=algorithms)


def _held(what, layer, arrays, shapes) -> dict:
    """arrays ({name: array}, net.params or net.state of one layer), or an InputError naming one that is not an
    array of its compiled shape: the layers run their equations on them unchecked (a step's only check)."""
    for name, shape in shapes.items():
        a = arrays.get(name)
        if not isinstance(a, np.ndarray) or a.shape != shape:
            got = f"shape {a.shape}" if isinstance(a, np.ndarray) else "no array" if a is None else type(a).__name__
            raise InputError(f"net.{what}[{layer!r}][{name!r}] holds {got}, the network needs shape {shape}; "
                             f"load arrays with net.set_{what}(...)")
    return arrays


def _check_arrays(what, expected, given):
    """Every {layer: {name: array}} that `expected` names is in `given`, with its shape; else an
    InputError naming the first that is missing or wrong, before anything is changed."""
    for layer, shapes in expected.items():
        for name, shape in shapes.items():
            try:
                value = np.asarray(given[layer][name])
            except (KeyError, TypeError):
                raise InputError(f"{what}: missing {layer}.{name} (shape {shape})") from None
            if value.shape != shape:
                raise InputError(f"{what}: {layer}.{name} has shape {value.shape}, expected {shape}")
