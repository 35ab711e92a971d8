"""A layer, activation or loss compiled for one input shape: forward and Jacobian runs, buffers.

Compiling binds the kind's sizes (input axes, hyperparameters, padding, symbols), compiles
each forward equation and each Jacobian once with opt_einsum, orders the Jacobians so each
runs after the gradients it reads, and allocates every result buffer once.  Running then only
fills buffers.

A block is compiled for a mode: in "train" it draws its random masks and updates its state
after the forward equations; in "eval" it runs the kind's `eval:` equations where it has
them (their Jacobians derived).  A forward of several equations derives its Jacobians by
reverse mode over the chain, summing a tensor's gradient over the equations that read it.

Block keeps the forward, the state updates and running; its sizes (sizes.py), Jacobians
(jacobians.py) and algorithm chains (algorithms.py) are mixins, its steps in steps.py.
"""
from __future__ import annotations

import copy

import numpy as np

from notation import Equation, NotationError
from notation.lowering import rowwise
from notation.mathematics.derive import grad

from .algorithms import Algorithms
from .cost import BLAS_ROADS, modelled_seconds
from .jacobians import Jacobians
from .records import Kind
from .sizes import Sizes
from .steps import BackwardStep, ForwardStep, UpdateStep

__all__ = ["Block", "ForwardStep", "UpdateStep", "BackwardStep", "modelled_seconds", "BLAS_ROADS"]


class Block(Sizes, Jacobians, Algorithms):
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
        self.memo = {}  # result -> (its buffer, copies of the parameters it was last computed from)
        self.kept = (None, {})  # (the runs it was worked out for, _from_params())
        self.kept_lanes = (None, (), 0.0)  # (the runs they were worked out for, lanes(), apart())
        self.programs = {}  # id(a list of runs) -> (that list, rowwise.find() of it)
        self.uniform = {}  # the random masks' uniform draws, float64 whatever the dtype
        # the definition's runs stay, to check the algorithm against and to cost it in plans
        self.definition = (self.forward_runs, self.backward_runs)
        self.algorithm, self.chain, self.constants, self.costs = None, None, {}, {}
        choice = algorithm or self.hyper.get("algorithm")
        if kind.algorithms and choice not in (None, "definition"):
            self._use(self._choose(optimize) if choice == "auto" else self._chain(choice, optimize))

    def error(self, field, message):
        return self.spec.error(f"{self.where}, {field}" if field else self.where, message)

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

    def retyped(self, dtype):
        """The same compiled block running in another dtype: its own buffers, constants cast anew."""
        other = copy.copy(self)
        other.dtype, other.buffers, other.memo = np.dtype(dtype), {}, {}
        if self.chain is not None:
            other.constants = {c: v.astype(dtype) for c, v in self.chain["masters"].items()}
        return other

    def as_definition(self):
        """The same block running the definition's equations (what the Jacobian checks judge)."""
        if self.algorithm is None:
            return self
        other = copy.copy(self)
        other.forward_runs, other.backward_runs = self.definition
        other.algorithm, other.chain, other.constants, other.buffers, other.memo = None, None, {}, {}, {}
        return other

    # -- run ---------------------------------------------------------------------
    def _buffer(self, name, shape):
        """The buffer of a result, made on first use (and again for another dtype)."""
        buf = self.buffers.get(name)
        if buf is None or buf.dtype != self.dtype:
            buf = self.buffers[name] = np.empty(shape, dtype=self.dtype)
        return buf

    def _programs(self, steps) -> dict:
        """rowwise.find() of these forward or Jacobian steps, found once per list: consecutive equations
        over the same rows, run row by row in one C loop (a max's, or one computed from parameters alone
        and kept between calls, runs on its own)."""
        found = self.programs.get(id(steps))
        if found is None or found[0] is not steps:
            alone = set(self._from_params()) if steps is self.forward_runs else set()
            pairs = [(s.result, None if getattr(s, "mask", None) or s.result in alone else s.run) for s in steps]
            found = self.programs[id(steps)] = (steps, rowwise.find(pairs))
        return found[1]

    def _singles(self, steps, env):
        """The steps to run one by one, in order; each row program among them run in its place instead of
        its equations (where it declines, its equations are among those yielded)."""
        programs, k = self._programs(steps), 0
        while k < len(steps):
            found = programs.get(k)
            if found is not None and found[0].run(env, self._buffer):
                k = found[1]
                continue
            yield steps[k]
            k += 1

    def row_programs(self, forward=None, backward=None) -> dict:
        """{(pass, result): the row program that computes it} in the forward and the Jacobians, in any lane
        they run in (lanes()): what plans and a checkpoint's roads report."""
        own = backward is None or backward is self.backward_runs
        lanes = (self.backward_runs, *self.lanes()) if own else (backward,)
        lists = [("forward", self.forward_runs if forward is None else forward)] + [("backward", s) for s in lanes]
        return {(what, r): program for what, steps in lists for program, _ in self._programs(steps).values()
                for r in program.results}

    def _from_params(self) -> dict:
        """{result: the parameters it depends on} for the forward results computed from parameters and
        constants alone, directly or through such results (the kernel's spectrum and its blocks),
        worked out once per list of runs."""
        if self.kept[0] is not self.forward_runs:
            known, found = set(self.param_shapes) | set(self.constants), {}
            for r, _, _, reads in self.forward_runs:
                if set(reads) <= known | set(found):
                    params = {n for n in reads if n in self.param_shapes}.union(*(found.get(n, ()) for n in reads))
                    if params:
                        found[r] = sorted(params)
            self.kept = (self.forward_runs, found)
        return self.kept[1]

    def _unchanged(self, result, env):
        """Whether such a result is still in its buffer from parameters equal to these: then it is not
        computed again (inference, evaluation).  Otherwise notes the parameters it is computed from."""
        params = self._from_params().get(result)
        if params is None:
            return False
        buf, seen = self.memo.get(result, (None, None))
        if buf is self.buffers[result] and all(np.array_equal(env[n], seen[n]) for n in params):
            return True
        if seen is None:
            seen = {n: env[n].copy() for n in params}
        else:  # the copies kept, refilled: nothing allocated per step
            for n in params:
                np.copyto(seen[n], env[n])
        self.memo[result] = (self.buffers[result], seen)
        return False

    def forward(self, env, keep_positions=True):
        """Run the forward equations, writing each result (and max positions) into env."""
        if self.constants:
            env.update(self.constants)
        from_params = self._from_params()
        for result, mask, run, _ in self._singles(self.forward_runs, env):
            if run.copies and _aliased(run, env, result):
                continue
            out = self._buffer(result, run.result_shape)
            if result in from_params and self._unchanged(result, env):
                env[result] = out
                continue
            # env holds arrays of the compiled shapes (the network checks what a user gives): unchecked
            if mask is not None and keep_positions:
                z, m = run.evaluate(env, out, positions=True)
                env[mask] = m
            else:
                run.evaluate(env, out)
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
        for name, run, _ in self.update_runs:
            new = self._buffer(name + "'", run.result_shape)
            run.evaluate(env, new)
            np.copyto(env[name], new)
        return env

    def lanes(self) -> tuple:
        """The Jacobian steps as (shared, weights, inputs), each in its order: the steps that the
        gradients of both the parameters and the inputs read, then those of the parameters' alone, and
        those of the inputs' alone.  The last two never read each other's results, so after the first
        they may run side by side (engine/compiler/network.py)."""
        if self.kept_lanes[0] is not self.backward_runs:
            steps = self.backward_runs
            weights = {grad(p) for p in self.param_shapes}
            finals = {grad(n) for n in self.wanted}
            serves = [set() for _ in steps]  # the gradients each step's result goes into
            for i in range(len(steps) - 1, -1, -1):
                serves[i] = {steps[i].result} & finals
                for j in range(i + 1, len(steps)):
                    if steps[i].result in steps[j].reads:
                        serves[i] |= serves[j]
            lanes = ([], [], [])
            if len({s.result for s in steps}) == len(steps):  # each result written once (else all shared)
                for step, to in zip(steps, serves):
                    lanes[0 if not to or (to & weights and to - weights) else 1 if to <= weights else 2].append(step)
            else:
                lanes[0].extend(steps)
            size = self.dtype.itemsize
            apart = min(modelled_seconds(lanes[1], size), modelled_seconds(lanes[2], size))
            self.kept_lanes = (steps, tuple(tuple(lane) for lane in lanes), apart)
        return self.kept_lanes[1]

    def apart(self) -> float:
        """The modelled seconds of the shorter of lanes()' last two: what running them side by side saves."""
        self.lanes()
        return self.kept_lanes[2]

    def backward(self, env, steps=None):
        """Run the Jacobian contractions (or those `steps` of them) in order; env must hold d<out> and
        the forward tensors."""
        if self.constants:
            env.update(self.constants)
        for _, result, run, _ in self._singles(self.backward_runs if steps is None else steps, env):
            if run.copies and _aliased(run, env, result):
                continue
            out = self._buffer(result, run.result_shape)
            env[result] = run.evaluate(env, out)
        return env


def _aliased(run, env, result) -> bool:
    """Whether env[result] is now the operand the run only copies (flatten's (10) and (11), a residual's
    dx1 = dz), its own memory where C-ordered (Run.alias): no pass over it, no buffer of the block's."""
    same = run.alias(env)
    if same is None:
        return False
    env[result] = same
    return True
