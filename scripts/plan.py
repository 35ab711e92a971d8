#!/usr/bin/env python3
"""Contraction plans people can read: every contraction a network runs, in the report's terms.

    python3 scripts/plan.py                                   # seven-layer, batch 64, text
    python3 scripts/plan.py --network softmax-regression --format markdown
    python3 scripts/plan.py --optimize greedy --compare optimal --format json > plan.json

For each layer, activation and the loss, and for each contraction it runs (forward and each
Jacobian): the equation as written in the spec with its report equation number; the lowering
(views with their kind and shape, functions and maxima computed first, how the result is
written or scattered); the einsum string opt_einsum runs, its path, each pairwise step's kind
(GEMM, TDOT, DOT, ... via BLAS, or einsum); naive vs optimised FLOPs, speed-up, largest
intermediate in elements and bytes; then totals.  Every figure is opt_einsum's own (PathInfo).

FLOPs follow opt_einsum's convention: a step costs the product of the extents of every index it
touches, times (operands - 1, at least 1), plus 1 when it sums an index away.  A GEMM
z[b,j] = x[b,i] * w[i,j] counts 2*B*I*J; an elementwise product B*I; a one-operand reduction
db[k] = dz[b,k] 2*B*K as optimised, but B*K as "naive" (opt_einsum's naive count sees no summed
index there), hence the speed-ups of 0.5.

Each product also names its strategy: the road that actually runs it, chosen once when the
network is compiled (GEMM into the result, GEMM, turned, batched GEMM, gather copy, elementwise ufunc, scatter
in batch slices, sum as GEMV, opt_einsum path, ...), and each path step says what runs it (np.matmul,
batched or not, or np.einsum).

JSON (`--format json`) follows the schema "einsum-plan/2", defined once in engine/plan_schema.py;
`python3 scripts/plan.py --schema` prints it, field by field with what each means.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from _shared import Parser, starting  # noqa: E402

with starting("plan.py"):  # Ctrl-C while numpy and opt_einsum load: one line, not a traceback
    from opt_einsum.paths import get_path_fn

    import engine
    from engine.compiler import memory, plan_schema, plans
    from notation.runtime import environment


def optimizer(name: str) -> str:
    """An opt_einsum path optimiser by name; checked here, since opt_einsum only looks it up for
    three or more operands and most of our contractions have two."""
    try:
        get_path_fn(name)
    except KeyError as e:
        raise argparse.ArgumentTypeError(e.args[0]) from None
    return name


def _shown(path: str) -> str:
    """The spec's path relative to the working directory where it lies below it (for the header)."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def check_batch(net, batch: int) -> None:
    """Refuse a batch whose compiled buffers cannot fit in memory, from the sizes at batch 1 and 2 (the
    buffers grow linearly with the batch), before compiling for it: a plan's time grows with the batch."""
    have = memory.available()
    if have is None or batch <= 2:
        return
    one, two = memory.training_need(net, 1, None), memory.training_need(net, 2, None)
    need = one + (batch - 1) * (two - one)
    if need > have:
        fits = 1 + max(0, (have - one) // max(two - one, 1))
        raise engine.UserError(f"--batch {batch}: compiling {net.name!r} for {batch:,} examples takes about "
                               f"{memory.human(need)} of memory, {memory.human(have)} are available here; give "
                               f"--batch {fits} or less")


def main(argv=None) -> int:
    ap = Parser(prog="plan.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=str(ROOT / "layers.yaml"), help="the spec file (default: layers.yaml)")
    ap.add_argument("--network", help="which network of the spec (default: the spec's `network:`)")
    ap.add_argument("--batch", type=int, default=64, help="batch size to compile for (default 64)")
    ap.add_argument("--optimize", type=optimizer, help="opt_einsum path optimiser (default: the spec's)")
    ap.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    ap.add_argument("--compare", type=optimizer, metavar="OPT",
                    help="a second optimiser: show where it chooses a different path")
    ap.add_argument("--schema", action="store_true", help="print the JSON document's schema and exit")
    args = ap.parse_args(argv)
    if args.schema:
        print(plan_schema.render())
        return 0
    if args.batch < 1:
        ap.error(f"--batch {args.batch}: the batch size must be at least 1")
    try:
        # the same load-time checks as training: a plan of a wrong Jacobian is no plan
        environment.check()
        net = engine.load(_shown(args.spec), network=args.network, optimize=args.optimize)
        check_batch(net, args.batch)
        doc = plans.collect(net, args.batch)
        if args.compare:
            other = engine.load(net.spec, network=net.name, optimize=args.compare, check=False)
            doc["compare"] = plans.compare(doc, plans.collect(other, args.batch))
    except engine.UserError as e:  # a bad spec or equation
        print(f"plan.py: {e.one_line()}", file=sys.stderr)
        return 2
    if args.format == "json":
        text = json.dumps(doc, indent=2)
    elif args.format == "markdown":
        text = plans.render_markdown(doc)
    else:
        text = plans.render_text(doc)
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:  # piped into `head` and the like: stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("plan.py: interrupted", file=sys.stderr)
        sys.exit(130)
