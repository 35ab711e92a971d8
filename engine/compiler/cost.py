"""The modelled cost `auto` ranks a kind's algorithms by: FLOPs at the rate of the road each pairwise
step takes, plus the bytes each product reads and writes."""
from __future__ import annotations

import numpy as np

# Rough figures for this kind of machine; only their ratios matter, and they are not measured at load,
# so a given spec and shape always choose the same algorithm (a resume stays bit for bit).
RATES = {"blas": 90e9, "other": 2e9}  # FLOP/s
BANDWIDTH = 10e9  # bytes/s

BLAS_ROADS = ("GEMM", "batched GEMM", "stacked GEMM", "TDOT")


def modelled_seconds(runs, itemsize) -> float:
    """A run list's modelled time: each product's FLOPs at the rate of its road (a GEMM or batched
    GEMM on BLAS, or not), plus writing its result and reading it back once (RATES, BANDWIDTH)."""
    total = 0.0
    for run in (r[2] for r in runs):
        for p in run.describe()["products"]:
            blas = any((s["kind"] or s["blas"]) in BLAS_ROADS for s in p["steps"])
            total += p["optimized_flops"] / RATES["blas" if blas else "other"]
            total += 2 * int(np.prod(p["fold"]["shape"])) * itemsize / BANDWIDTH
    return total
