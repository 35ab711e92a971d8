"""Jacobians checked numerically: declared against derived, or against central differences.

A Jacobian contraction is right when, for a random upstream gradient g = dJ/dout, the
gradient it gives for t matches d/dh <g, out(t + h v)> for a random direction v.  The
derived equations are the first judge; central differences judge what cannot be derived.
"""
from __future__ import annotations

import numpy as np

from notation.mathematics.derive import grad


def random_inputs(rng, shapes, dtype=np.float64):
    """Tie-free random values (ties make a max's derivative undefined)."""
    return {n: rng.standard_normal(s).astype(dtype) for n, s in shapes.items()}


def relative_error(got, want) -> float:
    scale = max(float(np.max(np.abs(want))) if np.size(want) else 0.0, 1e-12)
    return float(np.max(np.abs(got - want))) / scale if np.size(want) else 0.0


def pipeline_value(blocks, env, upstream):
    """<g, out>: the forward of every block in turn, then the upstream-weighted sum of the last output."""
    env = dict(env)
    for block in blocks:
        block.forward(env)
        env = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in env.items()}
    out = env[blocks[-1].kind.out_name]
    return float(np.sum(upstream * out))


def directional(blocks, env, name, upstream, direction, h=1e-6) -> float:
    """Central difference of <g, out> along `direction` in the input or parameter `name`."""
    plus, minus = dict(env), dict(env)
    plus[name] = env[name] + h * direction
    minus[name] = env[name] - h * direction
    return (pipeline_value(blocks, plus, upstream) - pipeline_value(blocks, minus, upstream)) / (2 * h)


def check_block(blocks, targets, rng, derived_block=None):
    """{target: (how, relative error)} for the Jacobians of the last block, run through `blocks`.

    With `derived_block` (the same kind compiled on derived equations), declared and derived
    gradients are compared entry by entry; otherwise along a random direction by central
    differences of the composed forward.
    """
    last = blocks[-1]
    inputs = {}
    for block in blocks:
        for name, shape in block.shapes.items():
            if name in block.param_shapes or name in block.kind.in_names or name == "y":
                inputs.setdefault(name, shape)
    env = random_inputs(rng, {n: s for n, s in inputs.items() if n != "y"})
    for block in blocks:  # running statistics (variances positive) and random masks, held fixed
        env.update({n: rng.uniform(0.5, 1.5, s) for n, s in getattr(block, "state_shapes", {}).items()})
        if getattr(block, "random", None):
            block.draw(env, rng)
            env.update({n: env[n].astype(np.float64) for n, _, _ in block.random})
    if "y" in inputs:
        y = np.zeros(inputs["y"])
        y[np.arange(y.shape[0]), rng.integers(0, y.shape[1], y.shape[0])] = 1.0
        env["y"] = y
    work = dict(env)
    for block in blocks:
        block.forward(work)
    # a scalar output is the loss itself: its Jacobians assume dJ/dJ = 1 (eq. 26)
    upstream = rng.standard_normal(last.out_shape) if last.out_shape else np.asarray(1.0)
    work[grad(last.kind.out_name)] = np.asarray(upstream, dtype=np.float64)
    declared = dict(last.backward(dict(work)))
    results = {}
    if derived_block is not None:
        other = dict(work)
        derived_block.forward(other)
        other[grad(last.kind.out_name)] = work[grad(last.kind.out_name)]
        other = derived_block.backward(other)
        for t in targets:
            results[t] = ("derived", relative_error(declared[grad(t)], other[grad(t)]))
        return results
    for t in [t for t in targets if t in env]:
        v = rng.standard_normal(env[t].shape)
        numeric = directional(blocks, env, t, upstream, v)
        analytic = float(np.sum(declared[grad(t)] * v))
        results[t] = ("finite differences", abs(numeric - analytic) / max(abs(numeric), abs(analytic), 1e-8))
    return results
