"""The checks a network runs when it loads: every declared Jacobian against the derived one (or
central differences), every algorithm against its definition, every ReLU moved after its pool."""
from __future__ import annotations

import dataclasses

import numpy as np

from notation.mathematics.derive import grad

from ..errors import SpecError
from . import gradcheck
from . import reorder as reordering
from .layer import Block


class LoadChecks:
    """Network's load-time checks (a mixin): reads spec, optimize, dtype and the reordered pairs."""

    def check(self, stages, tolerance=1e-6):
        """Each block's declared Jacobians against the derived ones, else central differences; then
        each layer's algorithm against its definition."""
        rng = np.random.default_rng(0)
        for s in stages[:-1]:
            if s.relu_of is not None:
                reordering.verify(self, s, self._relu_of[s.name], rng)
            self._check_one([self._small(s.layer)], rng, tolerance)
            if s.layer.algorithm is not None:
                self.verify(s.layer, rng)
            if s.activation is not None:
                self._check_one([self._small(s.activation)], rng, tolerance)
        last = stages[-2]
        chain = ([last.activation] if last.activation else []) + [stages[-1].layer]
        self._check_one(chain, rng, tolerance)

    def _small(self, block, cap=13):
        """The block rebuilt on an input cut to at most `cap` entries per axis (odd, so odd sizes are
        exercised), at the layer's own hyperparameters: the check then costs milliseconds.  Where
        the kind cannot take the smaller input, the block itself."""
        shape = block.shapes[block.kind.in_name]
        small = shape[:1] + tuple(min(n, cap) for n in shape[1:])
        if small == shape or len(block.kind.in_names) > 1 or block.kind.backward == "derive":
            return block.as_definition()
        try:
            return Block(self.spec, block.kind, block.hyper, {block.kind.in_name: small}, block.where,
                         self.optimize, dtype=np.float64, algorithm="definition")
        except SpecError:
            return block.as_definition()

    def _check_one(self, blocks, rng, tolerance):
        block = blocks[-1]
        if block.kind.backward == "derive" or not block.backward_runs:
            return
        targets = list(dict.fromkeys(step.target for step in block.backward_runs))
        derived = None
        if len(blocks) == 1:
            kind = dataclasses.replace(block.kind, backward="derive")
            try:
                derived = Block(self.spec, kind, block.hyper, {n: block.shapes[n] for n in block.kind.in_names},
                                block.where, self.optimize, needs=targets, dtype=np.float64, algorithm="definition")
            except SpecError:  # no derivation for this kind (softmax): finite differences judge it
                derived = None
        # a derived set that does not cover the targets falls back to finite differences
        if derived is not None and {step.target for step in derived.backward_runs} < set(targets):
            derived = None
        results = gradcheck.check_block(blocks, targets, rng, derived)
        for t, (how, err) in results.items():
            if not err <= tolerance:
                against = "the derived one" if how == "derived" else "central finite differences"
                raise self.spec.error(f"{block.where}, backward {t!r}",
                                      f"the declared Jacobian disagrees with {against} by {err:.2e} (relative); "
                                      "fix the equation")


    def verify(self, block, rng, exact=1e-10, rounded=1e-5):
        """A layer's algorithm against its definition on a random batch: the output and every
        gradient it gives, in float64 (equal up to rounding: `exact`) and in the run's dtype."""
        ref = block.as_definition()
        names = [block.kind.in_name] + list(block.param_shapes)
        env = gradcheck.random_inputs(rng, {n: block.shapes[n] for n in names})
        upstream = rng.standard_normal(block.out_shape)
        outputs = [block.kind.out_name] + [grad(t) for t in names if t in block.wanted]

        def run(b, dtype):
            work = {n: v.astype(dtype) for n, v in env.items()}
            b.forward(work)
            work[grad(b.kind.out_name)] = upstream.astype(dtype)
            b.backward(work)
            return {n: np.array(work[n], dtype=np.float64) for n in outputs}

        want = run(ref, np.float64)
        checks = [(np.dtype(np.float64), exact)] + ([(self.dtype, rounded)] if self.dtype != np.float64 else [])
        for dtype, tolerance in checks:
            got = run(block if dtype == block.dtype else block.retyped(dtype), dtype)
            for n in outputs:
                err = gradcheck.relative_error(got[n], want[n])
                if not err <= tolerance:
                    what = "its output" if n == block.kind.out_name else f"its gradient {n!r}"
                    raise self.spec.error(f"{block.where}, algorithm {block.algorithm!r}",
                                          f"{what} disagrees with the definition by {err:.2e} (relative, "
                                          f"{dtype.name}; at most {tolerance:g} allowed); fix the chain or "
                                          "choose another algorithm")
