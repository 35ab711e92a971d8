"""A block's backward compiled: its Jacobians, declared or derived by reverse mode over the forward
chain, ordered so each runs after the gradients it reads."""
from __future__ import annotations

from notation import Equation, NotationError
from notation.mathematics.derive import derive, grad, grad_of

from .steps import BackwardStep


class Jacobians:
    """Block's backward (a mixin): reads the kind, shapes and param_shapes; _compile() and error() are Block's."""

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
        several (a fan-out, as batch normalisation's x feeds both its mean and its centring): as one
        equation of several terms where each writes the gradient alike, else each term apart, then summed."""
        differentiable = set(self.param_shapes) | set(self.kind.in_names) | {e.result for e in self.equations}
        differentiable -= set(self.kind.no_gradient)  # constants for the gradient (a softmax's shift)
        uses = {}
        for eq in self.equations:
            if eq.result in self.kind.no_gradient:  # a constant passes no gradient to what it is computed from
                continue
            for name in dict.fromkeys(eq.operands):
                if name in differentiable:
                    uses.setdefault(name, []).append(eq)
        out = {}
        for name, eqs in uses.items():
            texts = [derive(eq, name, self.kind.positions.get(eq.result)) for eq in eqs]
            written = {t.split(" = ", 1)[0] for t in texts}
            if len(written) == 1:  # every term writes the gradient at the same index terms: one equation
                body = " + ".join(t.split(" = ", 1)[1] for t in texts).replace("+ -", "- ")
                out[name] = [Equation(f"{written.pop()} = {body}")]  # its sum made in one result, no temporaries
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
