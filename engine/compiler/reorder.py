"""ReLU after max pooling: where a layer's ReLU feeds a max pool, the ReLU runs after the pool.

max and ReLU commute, relu(max[p,q] z) = max[p,q] relu(z) ((18), (20)), so the forward is the
same to the bit and the ReLU and its Jacobian (21) touch a quarter of the entries (2 x 2
windows).  The gradient is the definition's too, with one exception this module mends: a
window whose maximum is exactly 0.  There the definition's relu(z) is all zeros, so (19) sends
the gradient to the window's first entry, times (21)'s value there (1/2 if it is 0, else 0);
the reordered chain sends 1/2 of it to the first exact zero.  The two agree when the first
entry is itself 0, so where it is not, the pooled gradient is set to 0 (`at_zero_maxima`).
Every such pair is checked against the definition's order when the network loads (`verify`).
This is an algorithm, not a new meaning: `engine.load(..., reorder=False)` runs the definition.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from notation.mathematics.derive import grad

from . import gradcheck
from .layer import Block


def pairs(spec, layers) -> dict:
    """{layer: the max pool after it} where the layer's ReLU can run after that pool: the pool is
    the next layer, reads only this one, has no activation of its own, and nothing else reads the
    layer; the pool is not the network's last layer (the loss reads that one's activation)."""
    readers = Counter(src for layer in layers for src in layer.inputs)
    found = {}
    for layer, pool in zip(layers[:-2], layers[1:-1]):
        if (spec.activations[layer.activation].name == "relu" and spec.kinds[pool.kind].name == "maxpool"
                and not spec.activations[pool.activation].forward and tuple(pool.inputs) == (layer.name,)
                and readers.get(layer.name) == 1):
            found[layer.name] = pool.name
    return found


def at_zero_maxima(pool, x, pooled, dz) -> None:
    """Where a window's maximum is exactly 0 and its first entry is not, the gradient of the pooled
    value (dz, from the ReLU's Jacobian) is 0, as the definition's order gives it (module doc)."""
    if pooled.all():  # no exact zero: nothing to mend (the common case after the first steps)
        return
    s = pool.hyper["stride"]
    shape = pool.out_shape
    first = x[:, ::s, ::s][:, :shape[1], :shape[2]]  # each window's first entry, (p, q) = (0, 0)
    dz = dz.reshape(shape)
    dz[(pooled.reshape(shape) == 0) & (first != 0)] = 0


def verify(net, stage, layer, rng, tolerance=1e-12) -> None:
    """A pool stage running the ReLU of the layer before it, against the definition's order (that
    ReLU, then the pool), in float64 on a random input rich in exact zeros and ties: the output and
    the input's gradient; `layer` is the one whose ReLU the pool runs.  A disagreement stops the load,
    naming the pool and the ReLU."""
    pool, relu = stage.layer, stage.activation
    x_name, z_name = pool.kind.in_name, pool.kind.out_name
    shape = pool.shapes[x_name]
    flat_in, flat_out = (shape[0], int(np.prod(shape[1:]))), relu.shapes["z"]
    relu_definition = Block(net.spec, net.spec.activations[layer.activation], {}, {"z": flat_in}, relu.where,
                            net.optimize, needs={"z"}, dtype=np.float64)
    z = rng.integers(-2, 3, size=shape).astype(np.float64) / 2  # zeros and ties in most windows
    upstream = rng.standard_normal(pool.out_shape)

    act = {"z": z.reshape(flat_in)}
    relu_definition.forward(act)
    env = {x_name: act["a"].reshape(z.shape)}
    pool.forward(env, keep_positions=True)
    want_out = env[z_name].copy()
    env[grad(z_name)] = upstream
    pool.backward(env)
    act["da"] = env[grad(x_name)].reshape(flat_in)
    relu_definition.backward(act)
    want_dx = act["dz"].reshape(z.shape).copy()

    env = {x_name: z}
    pool.forward(env, keep_positions=True)
    act = {"z": env[z_name].reshape(flat_out)}
    relu.forward(act)
    got_out = act["a"].reshape(pool.out_shape).copy()
    act["da"] = upstream.reshape(flat_out)
    relu.backward(act)
    at_zero_maxima(pool, z, act["z"], act["dz"])
    env[grad(z_name)] = act["dz"].reshape(pool.out_shape)
    pool.backward(env)
    got_dx = env[grad(x_name)]

    for what, got, want in (("its output", got_out, want_out), ("its input's gradient", got_dx, want_dx)):
        err = gradcheck.relative_error(got, want)
        if not err <= tolerance:
            raise net.spec.error(relu.where, f"{what} disagrees with the definition's order (the ReLU before the "
                                             f"pool) by {err:.2e} (relative, float64); load with reorder=False "
                                             "to run that order")
