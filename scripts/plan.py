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

JSON schema (`--format json`; "einsum-plan/1"):

    {
      "schema": "einsum-plan/1",
      "spec": str, "network": str, "batch": int, "optimize": str,
      "dtype": str, "itemsize": int,          # bytes per element of the compiled buffers
      "flops": str,                           # the FLOP convention, in words
      "blocks": [{                            # in the order training runs them
        "name": str,                          # "conv1", "conv1.relu" (its activation), "loss"
        "role": "layer" | "activation" | "loss",
        "kind": str, "cites": str,            # the kind and its report equations
        "where": str, "dtype": str,
        "contractions": [{
          "id": str,                          # "<block>/<pass>/<writes>", e.g. "conv2/backward/dxu"
          "pass": "forward" | "backward",
          "writes": str,                      # the tensor it fills: "z", "xc", "dw", ...
          "source": str,                      # the equation as written in the spec
          "equation": str,                    # as the parser prints it
          "cite": str,                        # the comment beside it: "(15), plus (2)"
          "result_shape": [int],
          "in_training_step": bool,           # false: compiled but not run by loss_and_grads
          "naive_flops": int, "optimized_flops": int,           # summed over products
          "largest_intermediate": {"elements": int, "bytes": int},
          "products": [{                      # one per term of the right side's sum
            "einsum": str,                    # the lowering's subscripts, operands in spec order
            "runs": str | null,               # the string opt_einsum contracts (PathInfo.eq)
            "path": [[int]],                  # opt_einsum's contraction path
            "scale": float,                   # the term's constant factor (sign, 1/B, ...)
            "views": [{"tensor": str, "indices": [str], "shape": [int],
                       "kind": str}],         # "whole array", "window", "flip+offset", "reshape", ...
            "nested": [{"kind": "call" | "max" | "eye", "function": str | null,
                        "indices": [str], "shape": [int]}],   # evaluated before the einsum
            "fold": {"kind": "in place" | "strided add" | "slice-add", "indices": [str],
                     "shape": [int], "loop": [str], "adds": int},   # how the result is written
            "steps": [{"einsum": str, "kind": str,  # "GEMM", "TDOT", "DOT", ..., or "einsum"
                       "contracted": [str], "scaling": int,
                       "flops": int | null,   # this step's cost; the steps sum to optimized_flops
                       "elements": int}],     # the step's output size
            "naive_flops": int, "optimized_flops": int, "speedup": float,
            "largest_intermediate": {"elements": int, "bytes": int}}]}]}],
      "totals": {
        "forward_flops": int, "backward_flops": int, "step_flops": int,   # one training step
        "per_image": {"forward": float, "backward": float, "step": float},
        "by_block": [{"block": str, "forward_flops": int, "backward_flops": int, "share": float}],
        "largest": [{"id": str, "source": str, "cite": str, "optimized_flops": int,
                     "share": float}],        # the five costliest contractions, share of a step
        "dominant": str | null,               # the id of the costliest
        "not_in_step": [{"id": str, "optimized_flops": int, "reason": str}]},
      "compare": {                            # only with --compare
        "optimize": [str, str], "products": int, "same": int,
        "step_flops": [int, int],
        "differences": [{"id": str, "term": int, "terms": int, "source": str, "runs": str,
                         "a": SIDE, "b": SIDE}]}
    }
    SIDE = {"path": [[int]], "steps": [{"einsum": str, "kind": str, "flops": int | null}],
            "optimized_flops": int, "largest_intermediate": {"elements": int, "bytes": int}}
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

try:  # Ctrl-C while numpy and opt_einsum load: one line, not a traceback
    from opt_einsum.paths import get_path_fn

    import engine
    from engine import plans
    from notation import NotationError
except KeyboardInterrupt:
    print("plan.py: interrupted while starting", file=sys.stderr)
    sys.exit(130)


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block) and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


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
    args = ap.parse_args(argv)
    if args.batch < 1:
        ap.error(f"--batch {args.batch}: the batch size must be at least 1")
    try:
        # the same load-time checks as training: a plan of a wrong Jacobian is no plan
        net = engine.load(_shown(args.spec), network=args.network, optimize=args.optimize)
        doc = plans.collect(net, args.batch)
        if args.compare:
            other = engine.load(net.spec, network=net.name, optimize=args.compare, check=False)
            doc["compare"] = plans.compare(doc, plans.collect(other, args.batch))
    except engine.SpecError as e:
        print(f"plan.py: {e}", file=sys.stderr)
        return 2
    except NotationError as e:
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
