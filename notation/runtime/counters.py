"""Counters: time per strategy and per compiled equation, recorded only when asked.

    with notation.counting() as counts:
        run(x=x, w=w)
    counts.strategies      # {"GEMM into the result": 0.0021, "scatter-add (fold)": ...}
    counts.runs[run]       # the same, for one compiled equation; counts.totals[run] its whole time

Off by default: every hook is one test of a module global (like tinygrad's GlobalCounters).
Times are exclusive: a function nested in a product counts under its own strategy, not twice.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from contextlib import contextmanager, nullcontext

ACTIVE = None  # the Counters being recorded, or None
_OFF = nullcontext()


class Counters:
    """Seconds per strategy (exclusive), per run and strategy, and per run in all; calls per strategy."""

    def __init__(self):
        self.strategies = defaultdict(float)
        self.runs = defaultdict(lambda: defaultdict(float))
        self.totals = defaultdict(float)
        self.calls = Counter()
        self._frames = []  # [start, seconds spent in nested frames]
        self._run = []  # the compiled equations being evaluated, innermost last

    @contextmanager
    def _timed(self, name):
        frame = [time.perf_counter(), 0.0]
        self._frames.append(frame)
        try:
            yield
        finally:
            self._frames.pop()
            elapsed = time.perf_counter() - frame[0]
            own = elapsed - frame[1]
            if self._frames:
                self._frames[-1][1] += elapsed
            if name is not None:
                self.strategies[name] += own
                self.calls[name] += 1
                if self._run:
                    self.runs[self._run[-1]][name] += own

    @contextmanager
    def _in_run(self, run):
        self._run.append(run)
        start = time.perf_counter()
        try:
            with self._timed(None):
                yield
        finally:
            self.totals[run] += time.perf_counter() - start
            self._run.pop()


@contextmanager
def counting():
    """Record time per strategy and per compiled equation inside the block (not re-entrant)."""
    global ACTIVE
    if ACTIVE is not None:
        raise RuntimeError("notation.counting() is already active")
    ACTIVE = Counters()
    try:
        yield ACTIVE
    finally:
        ACTIVE = None


def timing(name):
    """A context timing one strategy's own work, or a no-op when nothing is being counted."""
    return _OFF if ACTIVE is None else ACTIVE._timed(name)


def in_run(run):
    """A context marking one compiled equation's evaluation, or a no-op when nothing is counted."""
    return _OFF if ACTIVE is None else ACTIVE._in_run(run)
