"""A block's algorithms: which apply, `auto`'s choice by modelled cost, and each chain compiled for
the layer's shapes with its constants, keeping only the backward steps the wanted gradients need."""
from __future__ import annotations

import numpy as np

from notation.mathematics.constants import CONSTANTS
from notation.mathematics.derive import grad

from . import arith
from .cost import keep, measuring, modelled_seconds, recall, timed_seconds
from .steps import BackwardStep, ForwardStep


class Algorithms:
    """Block's algorithm chains (a mixin): reads the kind, hyper, sizes, symbols and shapes; _compile() is Block's."""

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
        """`auto`: of the algorithms that apply, the fastest, timed on this machine (kept in the user's
        cache folder per layer shape and dtype), or modelled under the reference rates (cost.py)."""
        chains = [self._chain(n, optimize) for n in self.kind.algorithms if self.applies(n) is None]
        if not chains:
            return None
        how = "modelled"
        if measuring():
            how, costs = "timed", recall(self)
            if costs is None or set(costs) != {c["name"] for c in chains}:
                costs = timed_seconds(self, chains)
                keep(self, costs)
        else:
            costs = {c["name"]: modelled_seconds(c["forward"] + c["backward"], self.dtype.itemsize) for c in chains}
        best = min(chains, key=lambda c: costs[c["name"]])
        best["auto"] = dict(costs, batch=self.shapes[self.kind.in_name][0], how=how)
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
        read = {n for step in forward + backward for n in step.reads}
        masters = {c: v for c, v in masters.items() if c in read}  # a constant only folded into others goes
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
            if form == "=":  # a product of the constants above, folded once here in float64
                run = self._compile(args, f"{where}, constant {cname!r}", "auto",
                                    known={c: v.shape for c, v in masters.items()}, symbols=symbols)
                masters[cname] = run(out=np.empty(run.result_shape), **{c: masters[c] for c in run.shapes})
                continue
            try:
                values = [arith.size(a, names) for a in args]
                masters[cname] = CONSTANTS[form](*values)
            except ValueError as e:
                raise self.error(f"{where}, constant {cname!r}", str(e)) from None
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
