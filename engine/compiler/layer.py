"""A layer, activation or loss compiled for one input shape: forward and Jacobian runs, buffers.

Compiling binds the kind's sizes (input axes, hyperparameters, padding, symbols), compiles
each forward equation and each Jacobian once with opt_einsum, orders the Jacobians so each
runs after the gradients it reads, and allocates every result buffer once.  Running then only
fills buffers.

A block is compiled for a mode: in "train" it draws its random masks and updates its state
after the forward equations; in "eval" it runs the kind's `eval:` equations where it has
them (their Jacobians derived).  A forward of several equations derives its Jacobians by
reverse mode over the chain, summing a tensor's gradient over the equations that read it.
"""
from __future__ import annotations

import copy
from typing import NamedTuple

import numpy as np

from notation import Equation, NotationError, Run
from notation.constants import CONSTANTS
from notation.derive import derive, grad, grad_of

from . import arith
from .padding import pads
from .spec import Kind

# The modelled cost `auto` ranks algorithms by (engine.layer.modelled_seconds): FLOPs at the rate
# of the road each pairwise step takes, plus the bytes each product reads and writes.  Rough
# figures for this kind of machine; only their ratios matter, and they are not measured at load,
# so a given spec and shape always choose the same algorithm (a resume stays bit for bit).
RATES = {"blas": 90e9, "other": 2e9}  # FLOP/s
BANDWIDTH = 10e9  # bytes/s


class ForwardStep(NamedTuple):
    """One forward equation, compiled: the tensor it writes, where its max keeps its positions
    (or None), the run, and the tensors it reads."""

    result: str
    mask: str | None
    run: Run
    reads: tuple


class UpdateStep(NamedTuple):
    """One state update of the training forward (a running mean): the state it writes, run, reads."""

    state: str
    run: Run
    reads: tuple


class BackwardStep(NamedTuple):
    """One Jacobian equation, compiled: the tensor whose gradient it serves (`target`, e.g. "x"),
    the tensor it writes (`dx`, or an intermediate), the run, and the tensors it reads."""

    target: str
    result: str
    run: Run
    reads: tuple


def _whole(value):
    """A hyperparameter as given, with whole numbers written as floats (YAML's 1.0e+8) or as text
    YAML does not read as a number (1e8, 4e6) made ints, so they can be sizes."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if number.is_integer() and abs(number) < 2 ** 62 else value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 62:
        return int(value)
    return value


class Block:
    """One kind compiled for an input shape; `forward(env)` and `backward(env)` fill env."""

    def __init__(self, spec, kind: Kind, hyper: dict, in_shapes: dict, where: str, optimize="auto",
                 needs=None, dtype=np.float32, algorithm=None, mode="train"):
        self.kind, self.where, self.spec, self.dtype = kind, where, spec, np.dtype(dtype)
        self.mode = mode
        self.equations = kind.eval if mode == "eval" and kind.eval is not None else kind.forward
        self.hyper = dict(hyper)
        self.sizes = self._sizes(in_shapes)
        self.symbols = self._symbols()
        self.param_shapes = {p: self._shape(shape, f"param {p!r}") for p, (shape, _) in kind.params.items()}
        self.state_shapes = {n: self._shape(shape, f"state {n!r}") for n, (shape, _) in kind.state.items()}
        self.random = self._random() if mode == "train" else []
        self.shapes = dict(in_shapes)
        self.shapes.update(self.param_shapes)
        self.shapes.update(self.state_shapes)
        self.shapes.update({n: shape for n, shape, _ in self.random})
        self.derived_shapes = {}  # the terms of a gradient summed at a fan-out: name -> shape
        self.forward_runs = self._compile_forward(optimize)
        self.update_runs = self._compile_update(optimize) if mode == "train" else []
        self.out_shape = self.shapes.get(kind.out_name)
        wanted = set(needs) if needs is not None else set(self.param_shapes) | set(kind.in_names)
        self.wanted = wanted
        self.backward_runs = self._compile_backward(optimize, wanted)
        self.buffers = {}
        self.uniform = {}  # the random masks' uniform draws, float64 whatever the dtype
        # the definition's runs stay, to check the algorithm against and to cost it in plans
        self.definition = (self.forward_runs, self.backward_runs)
        self.algorithm, self.chain, self.constants, self.costs = None, None, {}, {}
        choice = algorithm or self.hyper.get("algorithm")
        if kind.algorithms and choice not in (None, "definition"):
            self._use(self._choose(optimize) if choice == "auto" else self._chain(choice, optimize))

    # -- sizes -------------------------------------------------------------------
    def error(self, field, message):
        return self.spec.error(f"{self.where}, {field}" if field else self.where, message)

    def _input_sizes(self, in_shapes):
        """Each input axis's size, from every input that names it; inputs that disagree are refused."""
        sizes, first = {}, {}
        for name in self.kind.in_names:
            axes = self.kind.input_axes.get(name, self.kind.inputs)
            shape = in_shapes.get(name)
            if shape is None:
                continue
            field = "input" if len(self.kind.in_names) == 1 else f"input {name!r}"
            if len(shape) != len(axes):
                raise self.error(field, f"expects an input [{', '.join(axes)}] but gets shape {tuple(shape)}")
            for axis, n in zip(axes, shape):
                if axis in sizes and sizes[axis] != n:
                    raise self.error(field, f"has {axis} = {n} (shape {tuple(shape)}) but input {first[axis]!r} "
                                            f"has {axis} = {sizes[axis]}; the inputs' shapes must agree")
                sizes[axis] = n
                first.setdefault(axis, name)
        return sizes

    def _sizes(self, in_shapes):
        sizes = self._input_sizes(in_shapes)
        for k, v in list(self.hyper.items()):
            v = self.hyper[k] = _whole(v)
            if v is None:
                raise self.error(f"field {k!r}", f"is empty (null); give {k} a value")
            if isinstance(v, (list, dict)):
                raise self.error(f"field {k!r}", f"{k} must be a number or a name, not a "
                                                 f"{'list' if isinstance(v, list) else 'mapping'} ({v!r})")
            if k in self.kind.bounds:  # a real number such as a rate or a momentum, not a size
                continue
            if isinstance(v, float) and not isinstance(v, bool):
                raise self.error(f"field {k!r}", f"{k} = {v!r} must be a positive whole number")
            if isinstance(v, int) and not isinstance(v, bool):
                if v <= 0:
                    raise self.error(f"field {k!r}", f"{k} = {v} must be a positive whole number")
                sizes[k] = v
        if "padding" in self.hyper:
            try:
                k, s = self.hyper["kernel"], self.hyper["stride"]
                sizes["pt"], sizes["pb"] = pads(self.hyper["padding"], sizes["height"], k, s)
                sizes["pl"], sizes["pr"] = pads(self.hyper["padding"], sizes["width"], k, s)
            except ValueError as e:
                raise self.error("field 'padding'", str(e)) from None
            except KeyError as e:
                raise self.error("field 'padding'", f"padding needs {e.args[0]!r} (kernel, stride, height, "
                                                    "width)") from None
        return sizes

    def _names(self, *more):
        """What a size expression may name: hyperparameters (non-sizes too, so a message can say
        'filters = 'abc' is not a whole number'), input sizes, padding, then `more`."""
        names = {k: v for k, v in self.hyper.items() if k not in self.sizes}
        names.update(self.sizes)
        for m in more:
            names.update(m)
        return names

    def _symbols(self):
        out = {k: v for k, v in self.sizes.items() if k in ("pt", "pb", "pl", "pr")}
        reals = {k: float(v) for k, v in self.hyper.items()  # eps, momentum, rate: scalars of the equations
                 if isinstance(v, float) or (k in self.kind.bounds and isinstance(v, int) and not isinstance(v, bool))}
        out.update(reals)
        for name, expr in self.kind.symbols.items():
            try:
                out[name] = arith.size(expr, self._names())
            except ValueError as e:
                try:
                    out[name] = arith.number(expr, {**self.sizes, **out})
                except ValueError:
                    raise self.error(f"symbol {name!r}", str(e)) from None
        return out

    def _random(self):
        """[(name, shape, p)]: the Bernoulli masks drawn before each training forward."""
        out = []
        for name, (shape, p) in self.kind.random.items():
            try:
                value = float(arith.number(p, {**self.sizes, **self.symbols}))
            except ValueError as e:
                raise self.error(f"random {name!r}", str(e)) from None
            if not 0 <= value <= 1:
                raise self.error(f"random {name!r}", f"bernoulli: {p} = {value} is not a probability in [0, 1]")
            out.append((name, self._shape(shape, f"random {name!r}"), value))
        return out

    def _shape(self, exprs, field):
        """A declared shape's sizes: expressions in the input's axes, hyperparameters and symbols."""
        try:
            shape = tuple(arith.size(e, self._names(self.symbols)) for e in exprs)
        except ValueError as e:
            raise self.error(field, str(e)) from None
        if any(n < 1 for n in shape):
            raise self.error(field, f"has shape {shape}; every size must be at least 1")
        return shape

    # -- compile -----------------------------------------------------------------
    def _compile(self, equation, field, optimize, result_shape=None, known=None, symbols=None):
        known = self.shapes if known is None else known
        symbols = self.symbols if symbols is None else symbols
        names = set(equation.operands)
        unknown = names - set(known)
        if unknown:
            name = sorted(unknown)[0]
            if name in self.kind.random and self.mode == "eval":
                raise self.error(field, f"reads the random mask {name!r}, which eval mode does not draw; "
                                        "write the kind's eval: equations without it")
            raise self.error(field, f"reads {name!r}, which is not the input "
                                    f"{self.kind.in_name!r}, a parameter or an earlier result; "
                                    "declare it under params: or compute it first")
        shapes = {n: known[n] for n in names}
        if result_shape is not None:
            shapes[equation.result] = result_shape
        try:
            return equation.compile(shapes=shapes, symbols=symbols, optimize=optimize)
        except NotationError as e:
            if result_shape is not None:
                shapes.pop(equation.result)
                try:
                    free = equation.compile(shapes=shapes, symbols=symbols, optimize=optimize)
                    if free.result_shape != tuple(result_shape):
                        raise self.error(field, f"gives {equation.result} the shape {free.result_shape} but "
                                                f"it must have the shape {tuple(result_shape)} of what it "
                                                "differentiates") from None
                except NotationError:
                    pass
            raise self.error(field, e.one_line()) from None

    def _compile_forward(self, optimize):
        runs = []
        section = "eval" if self.equations is not self.kind.forward else "forward"
        for n, eq in enumerate(self.equations):
            field = f"{section}[{n}]"
            given = None
            if eq.result in self.kind.shapes:
                given = self._shape(self.kind.shapes[eq.result], f"shapes {eq.result!r}")
            run = self._compile(eq, field, optimize, given)
            self.shapes[eq.result] = run.result_shape
            mask = self.kind.positions.get(eq.result)
            if mask is not None:
                if not run.has_max:
                    raise self.error(f"positions {eq.result!r}", "this equation has no max[...] to take "
                                                                  "positions from")
                self.shapes[mask] = run.positions_shape
            runs.append(ForwardStep(eq.result, mask, run, tuple(run.shapes)))
        unused = set(self.param_shapes) - {n for eq in self.kind.forward for n in eq.operands}
        if unused:
            raise self.error(f"param {sorted(unused)[0]!r}", "is declared but no forward equation uses it; "
                                                              "remove it or use it")
        return runs

    def _compile_update(self, optimize):
        """[(state, run, reads)]: each state's new value from the training forward's tensors."""
        runs = []
        for n, eq in enumerate(self.kind.update):
            # rm[k] = (1 - momentum) * rm[k] + ... reads what it writes: computed aside, then copied over
            rhs = eq.source.split("=", 1)[1] if "=" in eq.source else None
            if rhs is None or eq.result not in eq.operands:
                aside = eq
            else:
                aside = Equation(f"{eq.lhs.name}_new[{','.join(str(a) for a in eq.lhs.axes)}] = {rhs.strip()}")
                if eq.source in self.spec.comments:
                    self.spec.comments.setdefault(aside.source, self.spec.comments[eq.source])
            run = self._compile(aside, f"update[{n}]", optimize, self.state_shapes[eq.result])
            runs.append(UpdateStep(eq.result, run, tuple(run.shapes)))
        return runs

    def jacobians(self, wanted):
        """{target: [Equation, ...]}: the declared Jacobians, or derived ones for `backward: derive`
        (and in eval mode, for a kind whose eval: differs from its forward)."""
        if self.kind.backward == "derive" or self.equations is not self.kind.forward:
            return self.derived(wanted)
        declared = dict(self.kind.backward)
        extra = set(declared) - (set(self.param_shapes) | {self.kind.in_name} | set(self.shapes))
        if extra:
            raise self.error(f"backward {sorted(extra)[0]!r}", "differentiates something that is not the input, "
                                                                "a parameter or an intermediate; remove it")
        for t in sorted(set(self.param_shapes) | ({self.kind.in_name} & set(wanted))):
            if t not in declared and self.kind.forward:
                raise self.error("backward", f"has no Jacobian for {t!r}; add '{t}: d{t}[...] = ...' or use "
                                             "'backward: derive'")
        return declared

    def derived(self, wanted):
        """Reverse mode over the forward equations: for each input, parameter and intermediate, the
        gradient rule applied to every equation that reads it, the terms summed where there are
        several (a fan-out, as batch normalisation's x feeds both its mean and its centring)."""
        differentiable = set(self.param_shapes) | set(self.kind.in_names) | {e.result for e in self.equations}
        uses = {}
        for eq in self.equations:
            for name in dict.fromkeys(eq.operands):
                if name in differentiable:
                    uses.setdefault(name, []).append(eq)
        out = {}
        for name, eqs in uses.items():
            if len(eqs) == 1:
                eq = eqs[0]
                out[name] = [Equation(derive(eq, name, self.kind.positions.get(eq.result)))]
                continue
            parts = []
            for n, eq in enumerate(eqs, 1):
                term = f"{grad(name)}_{n}"
                parts.append(Equation(derive(eq, name, self.kind.positions.get(eq.result), name=term)))
                self.derived_shapes[term] = self.shapes[name]
            axes = ",".join("ijklmnopqr"[:len(self.shapes[name])])
            total = " + ".join(f"{grad(name)}_{n}[{axes}]" for n in range(1, len(eqs) + 1))
            out[name] = parts + [Equation(f"{grad(name)}[{axes}] = {total}")]
        return out

    def _compile_backward(self, optimize, wanted):
        """[(target, result, run, reads)] in an order where each run follows the gradients it reads."""
        if not self.kind.forward:
            return []
        try:
            jac = self.jacobians(wanted)
        except NotationError as e:
            raise self.error("backward", e.one_line()) from None
        for t in list(jac):
            self.shapes[grad(t)] = self.shapes[t]
        self.shapes[grad(self.kind.out_name)] = self.out_shape
        # what each Jacobian reads from outside its own list of equations
        reads = {}
        for t, eqs in jac.items():
            own = {eq.result for eq in eqs[:-1]}
            reads[t] = {n for eq in eqs for n in eq.operands} - own
        # a gradient is needed if wanted, or if a needed Jacobian reads it
        need = set(wanted)
        changed = True
        while changed:
            changed = False
            for t in jac:
                if t in need:
                    for n in reads[t]:
                        if grad_of(n) in jac and grad_of(n) not in need:
                            need.add(grad_of(n))
                            changed = True
        ready = {grad(self.kind.out_name)}
        order, pending = [], [t for t in jac if t in need]
        while pending:
            progress = False
            for t in list(pending):
                if {n for n in reads[t] if grad_of(n) in jac} <= ready:
                    order += self._compile_jacobian(t, jac[t], optimize)
                    ready.add(grad(t))
                    pending.remove(t)
                    progress = True
            if not progress:
                raise self.error("backward", f"the Jacobians for {sorted(pending)} read each other's results; "
                                             "break the cycle")
        return order

    def _compile_jacobian(self, t, eqs, optimize):
        """One Jacobian's runs: its intermediates (shapes from `shapes:` or inferred), then d<t>."""
        runs = []
        for n, eq in enumerate(eqs):
            last = n == len(eqs) - 1
            field = f"backward {t!r}" + ("" if len(eqs) == 1 else f"[{n}]")
            result = grad(t) if last else eq.result
            if not last and eq.result in self.shapes:
                raise self.error(field, f"writes {eq.result!r}, which already names a tensor of this kind; "
                                        "give the intermediate a name of its own")
            given = self.shapes[t] if last else self.derived_shapes.get(eq.result)
            if not last and eq.result in self.kind.shapes:
                given = self._shape(self.kind.shapes[eq.result], f"shapes {eq.result!r}")
            run = self._compile(eq, field, optimize, given)
            self.shapes[result] = run.result_shape
            runs.append(BackwardStep(t, result, run, tuple(run.shapes)))
        return runs

    # -- algorithms --------------------------------------------------------------
    def applies(self, name):
        """None if the algorithm applies to this layer, else why not (a hyperparameter it needs)."""
        alg = self.kind.algorithms[name]
        for h, want in alg.requires.items():
            if h not in self.hyper:
                raise self.error(f"algorithm {name!r}, field 'requires'", f"{h!r} is not a hyperparameter of "
                                                                          f"kind {self.kind.name!r}")
            if self.hyper[h] != want:
                return f"it needs {h} = {want} and this layer has {h} = {self.hyper[h]}"
        return None

    def _choose(self, optimize):
        """`auto`: of the algorithms that apply, the one of least modelled cost (see RATES)."""
        chains = [self._chain(n, optimize) for n in self.kind.algorithms if self.applies(n) is None]
        if not chains:
            return None
        for c in chains:
            c["modelled_s"] = modelled_seconds(c["forward"] + c["backward"], self.dtype.itemsize)
        costs = {c["name"]: c["modelled_s"] for c in chains}
        best = min(chains, key=lambda c: c["modelled_s"])
        best["auto"] = dict(costs, batch=self.shapes[self.kind.in_name][0])
        return best

    def _use(self, chain):
        if chain is None:
            return
        self.algorithm, self.chain = chain["name"], chain
        self.forward_runs, self.backward_runs = chain["forward"], chain["backward"]
        self.constants = chain["constants"]

    def _chain(self, name, optimize):
        """An algorithm's chain compiled for this layer: its runs, constants and the tensors' shapes."""
        alg = self.kind.algorithms[name]
        why = self.applies(name)
        if why is not None:
            others = ", ".join(["auto", "definition"] + [n for n in self.kind.algorithms if n != name])
            raise self.error("field 'algorithm'", f"algorithm {name!r} does not apply here: {why}; "
                                                  f"choose another ({others})")
        where = f"algorithm {name!r}"
        names, symbols, masters = self._chain_constants(alg, where)
        shapes = {self.kind.in_name: self.shapes[self.kind.in_name], **self.param_shapes}
        shapes.update({c: v.shape for c, v in masters.items()})
        declared = {**self.kind.shapes, **alg.shapes}

        def compile_all(eqs, part, shape_of):
            out = []
            for n, eq in enumerate(eqs):
                field = f"{where}, {part}[{n}]"
                if part == "backward" and eq.result in shapes:
                    raise self.error(field, f"writes {eq.result!r}, which already names a tensor; give it a name "
                                            "of its own")
                want = shape_of(eq.result)
                if want is None and eq.result in declared:
                    try:
                        want = tuple(arith.size(e, names) for e in declared[eq.result])
                    except ValueError as e:
                        raise self.error(field, str(e)) from None
                run = self._compile(eq, field, optimize, want, shapes, symbols)
                shapes[eq.result] = run.result_shape
                out.append((eq.result, run))
            return out

        forward = [ForwardStep(r, None, run, tuple(run.shapes)) for r, run in compile_all(
            alg.forward, "forward", lambda r: self.out_shape if r == self.kind.out_name else None)]
        if alg.forward[-1].result != self.kind.out_name:
            raise self.error(f"{where}, forward", f"must end with the equation that writes {self.kind.out_name!r}")
        grads = {grad(t): t for t in [self.kind.in_name, *self.param_shapes]}
        shapes[grad(self.kind.out_name)] = self.out_shape
        compiled = compile_all(alg.backward, "backward", lambda r: shapes[grads[r]] if r in grads else None)
        backward = self._needed(compiled, grads, where)
        constants = {c: v.astype(self.dtype) for c, v in masters.items()}
        return {"name": name, "cites": alg.cites, "forward": forward, "backward": backward,
                "constants": constants, "masters": masters, "shapes": shapes}

    def _chain_constants(self, alg, where):
        """The chain's sizes and symbols, and its constants built in float64."""
        names = {**self.sizes, **self.symbols}
        symbols = dict(self.symbols)
        for sym, expr in alg.symbols.items():
            try:
                symbols[sym] = names[sym] = arith.size(expr, names)
            except ValueError as e:
                raise self.error(f"{where}, symbol {sym!r}", str(e)) from None
        masters = {}
        for cname, (form, args) in alg.constants.items():
            try:
                values = [arith.size(a, names) for a in args]
            except ValueError as e:
                raise self.error(f"{where}, constant {cname!r}", str(e)) from None
            masters[cname] = CONSTANTS[form](*values)
        return names, symbols, masters

    def _needed(self, compiled, grads, where):
        """The backward steps the wanted gradients need, each once, in the chain's order, as
        (the gradient it serves, result, run, reads)."""
        need = {grad(t) for t in self.wanted if grad(t) in grads}
        missing = need - {r for r, _ in compiled}
        if missing:
            raise self.error(f"{where}, backward", f"no equation writes {sorted(missing)[0]!r}; add it")
        serves = {}
        for result, run in reversed(compiled):
            if result in need:
                serves.setdefault(result, grads.get(result))
                for r in run.shapes:
                    need.add(r)
                    serves.setdefault(r, serves[result])
        return [BackwardStep(serves[r], r, run, tuple(run.shapes)) for r, run in compiled if r in need]

    def retyped(self, dtype):
        """The same compiled block running in another dtype: its own buffers, constants cast anew."""
        other = copy.copy(self)
        other.dtype, other.buffers = np.dtype(dtype), {}
        if self.chain is not None:
            other.constants = {c: v.astype(dtype) for c, v in self.chain["masters"].items()}
        return other

    def as_definition(self):
        """The same block running the definition's equations (what the Jacobian checks judge)."""
        if self.algorithm is None:
            return self
        other = copy.copy(self)
        other.forward_runs, other.backward_runs = self.definition
        other.algorithm, other.chain, other.constants, other.buffers = None, None, {}, {}
        return other

    # -- run ---------------------------------------------------------------------
    def _buffer(self, name, shape):
        buf = self.buffers.get(name)
        if buf is None or buf.dtype != self.dtype:
            buf = self.buffers[name] = np.empty(shape, dtype=self.dtype)
        return buf

    def forward(self, env, keep_positions=True):
        """Run the forward equations, writing each result (and max positions) into env."""
        if self.constants:
            env.update(self.constants)
        for result, mask, run, reads in self.forward_runs:
            out = self._buffer(result, run.result_shape)
            if mask is not None and keep_positions:
                z, m = run(out=out, positions=True, **{n: env[n] for n in reads})
                env[mask] = m
            else:
                run(out=out, **{n: env[n] for n in reads})
            env[result] = out
        return env

    def draw(self, env, rng):
        """Fill the random masks from the generator: 1 with probability p, else 0 (training only)."""
        for name, shape, p in self.random:
            u = self.uniform.get(name)
            if u is None:
                u = self.uniform[name] = np.empty(shape)
            rng.random(out=u)
            env[name] = np.less(u, p, out=self._buffer(name, shape))
        return env

    def update(self, env):
        """Write each state's new value (running statistics) into its array in env, in place."""
        for name, run, reads in self.update_runs:
            new = self._buffer(name + "'", run.result_shape)
            run(out=new, **{n: env[n] for n in reads})
            np.copyto(env[name], new)
        return env

    def backward(self, env):
        """Run the Jacobian contractions in order; env must hold d<out> and the forward tensors."""
        if self.constants:
            env.update(self.constants)
        for _, result, run, reads in self.backward_runs:
            out = self._buffer(result, run.result_shape)
            env[result] = run(out=out, **{n: env[n] for n in reads})
        return env


BLAS_ROADS = ("GEMM", "batched GEMM", "TDOT")


def modelled_seconds(runs, itemsize) -> float:
    """A run list's modelled time: each product's FLOPs at the rate of its road (a GEMM or batched
    GEMM on BLAS, or not), plus writing its result and reading it back once (RATES, BANDWIDTH)."""
    total = 0.0
    for run in (r[2] for r in runs):
        for p in run.describe()["products"]:
            blas = any((s["kind"] or s["blas"]) in BLAS_ROADS for s in p["steps"])
            total += p["optimized_flops"] / RATES["blas" if blas else "other"]
            total += 2 * int(np.prod(p["fold"]["shape"])) * itemsize / BANDWIDTH
    return total
