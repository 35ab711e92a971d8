"""Whose threads run a network's products, chosen by timing both on this machine, as cuDNN's
benchmark mode chooses a convolution: ours (notation/runtime/parallel.py: each large product split
between two threads of single-threaded BLAS, elementwise passes too) or OpenBLAS's own.

OpenBLAS's threads cost little a call on a large 2-d product but spin between calls, so the two do
not mix; which wins depends on the network (a transformer's many 1024 x 64 GEMMs: BLAS's; a
CNN's stacks of small blocks and long elementwise chains: ours).  Either gives the same bits
(parallel.choosable), so the choice is made afresh in every process and never recorded.

Each (pass, batch size) of a network runs on ours for its first TRIAL_AT - 1 calls; at the next, if
a call takes LONG or more, both are timed over ROUNDS rounds (the network's state and random
generator put back after each call) and the faster is kept.  Mixed, each slows the other: for a
while after OpenBLAS's threads ran, ours run their parts one after the other (parallel.BLAS_SPIN_S).
"""
from __future__ import annotations

import statistics
import time
from collections import Counter

from notation.runtime import parallel

TRIAL_AT = 3  # the call at which the trial runs: the first two warm the buffers and caches
LONG = 0.004  # seconds: a shorter call gains too little from either to be worth a trial
ROUNDS = 2  # rounds of the trial, each WARM seconds of untimed calls and CALLS timed calls on each side
CALLS = 3
MARGIN = 1.05  # OpenBLAS's threads are taken only when faster by more than this: timings on a shared machine
# wander by a few percent, and ours are what every test runs
WARM = 0.1  # seconds of untimed calls before each side's: OpenBLAS's threads spin some 80 ms after a call


class Threads:
    """The choice for each (pass, batch) of one network, and the figures it was made from."""

    def __init__(self, clock=time.perf_counter):
        self.chosen = {}  # (pass, batch) -> True (ours) or False (BLAS's)
        self.figures = {}  # (pass, batch) -> {"ours": seconds, "blas": seconds}, the trial's medians
        self.calls = Counter()
        self.clock = clock

    def ours(self, key, make) -> bool:
        """Whether `key`'s calls run on our threads; make() gives a function that runs one such call
        and leaves no trace (the trial times it)."""
        chosen = self.chosen.get(key)
        if chosen is not None:
            return chosen
        if not parallel.choosable():
            self.chosen[key] = chosen = parallel.FORCED is not False
            return chosen
        self.calls[key] += 1
        if self.calls[key] < TRIAL_AT:
            return True
        self.chosen[key] = chosen = self._trial(key, make())
        return chosen

    def _trial(self, key, call) -> bool:
        times = {True: [], False: []}
        for n in range(ROUNDS):
            for ours in (True, False) if n % 2 == 0 else (False, True):  # neither side always first
                with parallel.threads(ours):
                    start = self.clock()
                    call()
                    while self.clock() - start < WARM:  # the other side's threads asleep, the cores up to speed
                        call()
                    for _ in range(CALLS):
                        t = self.clock()
                        call()
                        times[ours].append(self.clock() - t)
                if ours and statistics.median(times[True]) < LONG:
                    return True  # too short to matter: ours, untried
        self.figures[key] = {"ours": statistics.median(times[True]), "blas": statistics.median(times[False])}
        return self.figures[key]["ours"] <= MARGIN * self.figures[key]["blas"]

    def document(self) -> list:
        """Each (pass, batch) chosen so far: {"pass", "batch", "threads": "ours" or "OpenBLAS's"}, with the
        trial's medians ("ours_ms", "openblas_ms") where both were timed."""
        rows = []
        for (what, batch), ours in sorted(self.chosen.items()):
            row = {"pass": what, "batch": batch, "threads": "ours" if ours else "OpenBLAS's"}
            f = self.figures.get((what, batch))
            if f:
                row.update(ours_ms=1e3 * f["ours"], openblas_ms=1e3 * f["blas"])
            rows.append(row)
        return rows

    def describe(self) -> list:
        """A line for each choice made by a trial: pass, batch, whose threads, the two times."""
        lines = []
        for (what, batch), f in sorted(self.figures.items()):
            whose = "the engine's" if self.chosen[what, batch] else "OpenBLAS's"
            lines.append(f"{what} at batch {batch} on {whose} threads ({1e3 * f['ours']:.1f} ms a call on the "
                         f"engine's, {1e3 * f['blas']:.1f} on OpenBLAS's)")
        return lines


def untraced(net, fn):
    """fn as a call that leaves `net` as it found it: its running statistics and its random masks'
    generator put back after each call (the trial's calls are not training steps)."""
    state = {layer: {n: a.copy() for n, a in arrays.items()} for layer, arrays in net.state.items()}
    rng = net.rng.bit_generator.state

    def call():
        try:
            with parallel.serial_blas():
                fn()
        finally:
            for layer, arrays in state.items():
                for n, a in arrays.items():
                    net.state[layer][n][...] = a
            net.rng.bit_generator.state = rng
    return call
