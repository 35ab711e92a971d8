"""Max-reductions over windows (eq. 18) and the positions of their first maxima, which route the
gradient back (eq. 19): one strided slice per window offset, no copy of the windows."""
from __future__ import annotations

import numpy as np


def window_max(inner, k, positions=False, out=None, planes=None):
    """The maximum over the k trailing (window) axes, one strided slice per window offset, and
    with positions=True a one-hot mask of the first maximum in C order (eq. 18, 19), written
    into `planes` (window axes first) when given."""
    window = inner.shape[inner.ndim - k:]
    offsets = list(np.ndindex(*window))
    slices = [inner[(Ellipsis,) + o] for o in offsets]
    if out is None:
        values = slices[0].copy()
    else:
        values = out
        np.copyto(values, slices[0])
    for v in slices[1:]:
        np.maximum(values, v, out=values)
    if not positions:
        return values, None
    # window axes outermost in memory, so each offset's plane is written contiguously
    if planes is None or planes.shape != window + values.shape or planes.dtype != inner.dtype:
        planes = np.empty(window + values.shape, dtype=inner.dtype)
    open_ = np.not_equal(slices[0], values)  # no maximum found yet in this window
    np.equal(slices[0], values, out=planes[offsets[0]])
    hit = np.empty(values.shape, dtype=bool)
    for n, v in enumerate(slices[1:], 1):
        np.equal(v, values, out=hit)
        np.logical_and(hit, open_, out=planes[offsets[n]])
        if n < len(slices) - 1:
            np.greater(open_, hit, out=open_)  # open and not hit
    n = values.ndim
    return values, planes.transpose(tuple(range(k, k + n)) + tuple(range(k)))


class Masks(dict):
    """The positions masks of one evaluation, keyed by each max's place in the source.  With
    reuse=True they are written into buffers the run keeps, as `out` is: overwritten next run."""

    def __init__(self, reuse=False):
        super().__init__()
        self.reuse = reuse
