"""Max-reductions over windows (eq. 18) and the positions of their first maxima, which route the
gradient back (eq. 19): one strided slice per window offset, no copy of the windows; in one C loop
(notation/runtime/fused.py) where built, numpy's passes otherwise, to the same bits."""
from __future__ import annotations

import numpy as np

from ..runtime import fused, parallel

SPLIT = 1 << 16  # results at least this large are shared between the workers, by their first axis


def window_max(inner, k, positions=False, out=None, planes=None):
    """The maximum over the k trailing (window) axes, one strided slice per window offset, and
    with positions=True a one-hot mask (bool) of the first maximum in C order (eq. 18, 19),
    written into `planes` (window axes first) when given.  A large one runs in two halves of its
    first axis on the workers of notation.runtime.parallel."""
    window = inner.shape[inner.ndim - k:]
    shape = inner.shape[:inner.ndim - k]
    values = np.empty(shape, dtype=inner.dtype) if out is None else out
    if positions and (planes is None or planes.shape != window + shape or planes.dtype != bool):
        planes = np.empty(window + shape, dtype=bool)
    n = values.ndim
    if values.size >= SPLIT and shape[0] >= 2 and parallel.WORKERS >= 2:
        at = (slice(None),) * k
        parallel.spans(lambda start, stop: _window_max(inner[start:stop], window, values[start:stop],
                                                       planes[at + (slice(start, stop),)] if positions else None),
                       shape[0])
    else:
        _window_max(inner, window, values, planes if positions else None)
    if not positions:
        return values, None
    return values, planes.transpose(tuple(range(k, k + n)) + tuple(range(k)))


def _window_max(inner, window, values, planes):
    if fused.window_max(inner, len(window), values, planes):  # one C loop where built, the same bits
        return
    if len(window) == 1 and fused.row_max(inner, values, planes):  # the window each row's contiguous entries
        return
    offsets = list(np.ndindex(*window))
    slices = [inner[(Ellipsis,) + o] for o in offsets]
    if len(slices) == 1:
        np.copyto(values, slices[0])
    else:
        np.maximum(slices[0], slices[1], out=values)
    for v in slices[2:]:
        np.maximum(values, v, out=values)
    if planes is None:
        return
    # window axes outermost in memory, so each offset's plane is written contiguously
    np.equal(slices[0], values, out=planes[offsets[0]])
    if len(slices) == 1:
        return
    open_ = np.logical_not(planes[offsets[0]])  # no maximum found yet in this window
    for n, v in enumerate(slices[1:], 1):
        hit = planes[offsets[n]]
        np.equal(v, values, out=hit)
        hit &= open_
        if n < len(slices) - 1:
            open_ ^= hit  # open and not hit


class Masks(dict):
    """The positions masks of one evaluation, keyed by each max's place in the source.  With
    reuse=True they are written into buffers the run keeps, as `out` is: overwritten next run."""

    def __init__(self, reuse=False):
        super().__init__()
        self.reuse = reuse
