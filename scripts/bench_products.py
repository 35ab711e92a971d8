#!/usr/bin/env python3
"""Batched products in the notation against np.matmul written by hand (float32, medians).

    python3 scripts/bench_products.py                # attention's two products, a per-bin product
    python3 scripts/bench_products.py --json

Each equation is compiled once and run with out= (as the engine runs it); the hand-written
np.matmul is what a user would write.  Rounds alternate the two, each warmed up first (threads
left spinning by one side slow the other's first calls); the ratio is taken per round.
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import timed  # noqa: E402

from notation import Equation  # noqa: E402

CASES = [  # (name, equation, shapes, the same with np.matmul)
    ("attention scores, 16x8 heads, 128x64",
     "s[b,h,i,j] = q[b,h,i,d] * k[b,h,j,d]", {"q": (16, 8, 128, 64), "k": (16, 8, 128, 64)},
     lambda a: np.matmul(a["q"], a["k"].swapaxes(-1, -2))),
    ("attention output, 16x8 heads, 128x128 @ 128x64",
     "o[b,h,i,d] = p[b,h,i,j] * v[b,h,j,d]", {"p": (16, 8, 128, 128), "v": (16, 8, 128, 64)},
     lambda a: np.matmul(a["p"], a["v"])),
    ("per-frequency channel mixing, 144 bins, 64x32 @ 32x64",
     "z[v,u,b,k] = x[v,u,b,r] * w[v,u,r,k]", {"x": (12, 12, 64, 32), "w": (12, 12, 32, 64)},
     lambda a: np.matmul(a["x"], a["w"])),
]


SETTLE = 0.5  # seconds for the other side's spinning BLAS threads to go to sleep


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    ap.add_argument("--repeats", type=int, default=10, help="calls timed per round (default 10)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed calls before each round (default 5)")
    ap.add_argument("--shrink", type=int, default=1, help="divide the leading axis by this (for a smoke test)")
    ap.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    for name, source, shapes, by_hand in CASES:
        shapes = {k: (max(1, s[0] // args.shrink),) + s[1:] for k, s in shapes.items()}
        arrays = {k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}
        run = Equation(source).compile(shapes=shapes)
        out = np.empty(run.result_shape, np.float32)
        np.testing.assert_allclose(run(out=out, **arrays), by_hand(arrays), rtol=1e-4, atol=1e-4)
        ours, hand, ratios = [], [], []
        notation = functools.partial(run, out=out, **arrays)
        numpy = functools.partial(by_hand, arrays)
        for _ in range(args.rounds):
            ours.append(timed(notation, args.repeats, args.warmup, settle=SETTLE))
            hand.append(timed(numpy, args.repeats, args.warmup, settle=SETTLE))
            ratios.append(ours[-1] / hand[-1])
        rows.append({"product": name, "equation": source, "strategy": run.strategies[0],
                     "notation_ms": 1e3 * statistics.median(ours), "matmul_ms": 1e3 * statistics.median(hand),
                     "ratio": statistics.median(ratios)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'equation':<40} {'strategy':<14} {'notation ms':>11} {'np.matmul ms':>12} {'ratio':>6}")
    for r in rows:
        print(f"{r['equation']:<40} {r['strategy']:<14} {r['notation_ms']:11.2f} {r['matmul_ms']:12.2f} "
              f"{r['ratio']:6.2f}")


if __name__ == "__main__":
    main()
