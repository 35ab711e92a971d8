"""What `auto` ranks a kind's algorithms by: each chain timed on this machine, once per layer shape and
dtype, the choice kept in the user's cache folder (FFTW's wisdom, cuDNN's benchmark mode); where the
rates are the fixed reference ones (NOTATION_RATES=reference, as the tests run), the modelled time of
each product's road instead (notation/lowering/cost.py), so that the choice never depends on the machine."""
from __future__ import annotations

import hashlib
import json
import time

import numpy as np

from notation.lowering import cost

BLAS_ROADS = ("GEMM", "batched GEMM", "stacked GEMM", "TDOT")


def modelled_seconds(runs, itemsize) -> float:
    """A run list's modelled time: each product's road on this machine's rates (notation/lowering/cost.py)."""
    return sum(run.modelled_seconds(itemsize) for run in (r[2] for r in runs))


def measuring() -> bool:
    """Whether `auto` times the chains (the machine's own rates) or models them (the reference rates)."""
    return cost.rates().source != "reference"


def timed_seconds(block, chains, rounds=5) -> dict:
    """{algorithm: seconds} of each chain's forward and backward on random values in the block's dtype:
    the chains timed in turn, round after round (a machine busy for a moment slows them all alike),
    each its fastest pass after an untimed one."""
    rng = np.random.default_rng(0)
    env = {n: rng.standard_normal(s).astype(block.dtype) for n, s in block.shapes.items()}
    env[f"d{block.kind.out_name}"] = rng.standard_normal(block.out_shape).astype(block.dtype)
    trials = {c["name"]: _trial(block, c) for c in chains}
    best = dict.fromkeys(trials, float("inf"))
    for n in range(rounds + 1):
        for name, trial in trials.items():
            work = dict(env)
            t = time.perf_counter()
            trial.forward(work)
            trial.backward(work)
            if n:
                best[name] = min(best[name], time.perf_counter() - t)
    return best


def _trial(block, chain):
    """The block running `chain`, with buffers of its own."""
    trial = block.retyped(block.dtype)
    trial.algorithm, trial.chain, trial.constants = chain["name"], chain, {
        c: v.astype(block.dtype) for c, v in chain["masters"].items()}
    trial.forward_runs, trial.backward_runs = chain["forward"], chain["backward"]
    trial.buffers, trial.memo, trial.kept = {}, {}, (None, {})
    return trial


def _wisdom_file():
    return cost.cache_file().with_name("algorithms.json")


def wisdom_key(block) -> str:
    """The machine, the kind (its equations), the layer's hyperparameters and shapes, and the dtype."""
    text = json.dumps([cost.machine_key(), block.kind.name, repr(block.kind.algorithms.keys()),
                       sorted((k, repr(v)) for k, v in block.hyper.items()),
                       sorted((k, list(v)) for k, v in block.shapes.items()), block.dtype.name], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def recall(block) -> dict | None:
    """The timings kept for this layer on this machine, if any ({algorithm: seconds})."""
    try:
        entry = json.loads(_wisdom_file().read_text())[wisdom_key(block)]
        return {str(k): float(v) for k, v in entry.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def keep(block, timings: dict) -> None:
    """Keep the timings in the cache, beside the rates (notation/lowering/cost.py writes it)."""
    cost.keep(_wisdom_file(), wisdom_key(block), timings)
