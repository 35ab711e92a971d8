"""Memory a network needs, estimated from its compiled shapes, against the memory available.

A size that cannot fit (a layer of 10^8 units, a batch of 10^9) is refused before anything is
allocated, with the figure and what the machine has, rather than a MemoryError an epoch later.
"""
from __future__ import annotations

import numpy as np

from ..machine import available, human  # noqa: F401 (re-exported: what estimates are read against)

OPTIMIZER_SLOTS = {"sgd": 0, "momentum": 1, "adam": 2}  # arrays an optimizer keeps per parameter


def parameter_count(param_shapes: dict) -> int:
    return sum(int(np.prod(s, dtype=object)) for ps in param_shapes.values() for s in ps.values())


def largest_parameters(param_shapes: dict) -> list:
    """[(layer, param, shape)], the largest parameter first."""
    return sorted(((layer, p, s) for layer, ps in param_shapes.items() for p, s in ps.items()),
                  key=lambda t: -int(np.prod(t[2], dtype=object))) or [(None, None, ())]


def buffers(stages, itemsize: int, backward: bool = True) -> tuple[int, int]:
    """(bytes of every result buffer the compiled stages keep, bytes of the largest transient
    intermediate one contraction makes), from the compiled shapes: nothing is allocated."""
    kept, transient = 0, 0
    for s in stages:
        for block in (s.layer, s.activation):
            if block is None:
                continue
            runs = [f.run for f in block.forward_runs] + ([b.run for b in block.backward_runs] if backward else [])
            for run in runs:
                kept += int(np.prod(run.result_shape, dtype=object)) * itemsize
                if run.has_max and run.positions_shape is not None:
                    kept += int(np.prod(run.positions_shape, dtype=object)) * itemsize
                infos = run.path_info
                for info in infos if isinstance(infos, list) else [infos]:
                    if info is not None:
                        transient = max(transient, int(info.largest_intermediate) * itemsize)
    return kept, transient


def training_need(net, batch: int, optimizer: str | None) -> int:
    """Bytes a training step at `batch` needs: parameters, gradients and optimizer state, every
    compiled buffer, the largest intermediate and the batch itself (optimizer None: inference)."""
    itemsize = net.dtype.itemsize
    params = parameter_count(net.param_shapes) * itemsize
    kept, transient = buffers(net.compiled(batch), itemsize, backward=optimizer is not None)
    inputs = batch * int(np.prod(net.input_shape)) * itemsize
    copies = 1 if optimizer is None else 2 + OPTIMIZER_SLOTS.get(optimizer, 2)
    return params * copies + kept + transient + inputs


def inference_need(net, batch: int) -> int:
    """Bytes a forward pass at `batch` needs: parameters, forward buffers, the batch."""
    return training_need(net, batch, None)
