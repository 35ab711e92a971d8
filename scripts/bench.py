#!/usr/bin/env python3
"""Training and inference throughput of the engine, side by side with PyTorch when installed.

    python3 scripts/bench.py                      # the spec's network; batch 32, 64, 128; 3 rounds
    python3 scripts/bench.py --network all --batch 64 --json > bench.json
    python3 scripts/bench.py --network resnet --batch 64 --breakdown
    python3 scripts/bench.py --checkpoint runs/run.npz --batch 64   # steps on a trained state

The PyTorch side is each network's twin, built from the spec's layers (scripts/twins.py); a
network with a kind that has no twin is timed on the engine alone, and the kind is named.
With --checkpoint the engine steps from the checkpoint's weights and optimizer state (the
denormals of a long run's Adam moments), PyTorch from fresh weights.

Every figure is a median over rounds that alternate engine and PyTorch; speed is measured
here, never asserted in a test.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from _shared import Parser, starting, timed  # noqa: E402

with starting("bench.py"):
    from bench_engine import Engine, batch_of, breakdown, check_memory, flags, restore, step_flops, trained
    from twins import ShapeMismatch, Torch, missing

    import engine
    from notation.runtime import fused

TORCH = "pip install torch==2.13.0"
WARM_S = 0.25  # seconds of untimed calls (and --warmup of them at least) before each side is timed


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gemm_gflops(n=2048, repeats=3) -> float:
    """numpy's own float32 GEMM rate on n x n: the machine's practical ceiling."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = a.copy()
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / min(times) / 1e9


class OutputLost(Exception):
    """Standard output can take no more (a full disk, /dev/full): the report cannot be written."""


def say(*text):
    """A line of the report, written at once: a reader that has gone (`| head`) is noticed now."""
    try:
        print(*text, flush=True)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputLost(exc.strerror or str(exc)) from None


def at_least(least, what, most=None):
    """An argparse type: a whole number of at least `least` (and at most `most`), else one line saying so."""
    def parse(text):
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give {what}") from None
        if n < least:
            raise argparse.ArgumentTypeError(f"{n}: give {what} (at least {least})")
        if most is not None and n > most:
            raise argparse.ArgumentTypeError(f"{n}: give {what} (at most {most}, four per core of this machine)")
        return n
    return parse


def parser() -> Parser:
    p = Parser(prog="bench.py", description=__doc__.splitlines()[0],
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", default=str(ROOT / "layers.yaml"), help="the spec to benchmark (default layers.yaml)")
    p.add_argument("--network", action="append", metavar="NAME",
                   help="a network of the spec, or `all` (repeatable; default: the spec's `network:`, or the "
                        "checkpoint's)")
    p.add_argument("--batch", type=at_least(1, "a batch size"), nargs="+", default=[32, 64, 128],
                   help="batch sizes (default 32 64 128)")
    p.add_argument("--rounds", type=at_least(1, "a number of rounds"), default=3,
                   help="interleaved rounds; the median is reported (default 3)")
    p.add_argument("--repeats", type=at_least(1, "a number of steps"), default=5,
                   help="steps timed per round (median; default 5)")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even when installed")
    p.add_argument("--only", choices=["engine", "pytorch"],
                   help="time one side alone, to compare with its figure in the side-by-side run")
    p.add_argument("--torch-threads", type=at_least(1, "a number of threads", 4 * (os.cpu_count() or 1)),
                   default=2,
                   help="PyTorch's intra-op threads (default 2, the machine's cores; on a busy machine 1 can be "
                        "faster)")
    p.add_argument("--warmup", type=at_least(0, "a number of steps"), default=2,
                   help="untimed steps of each side right before it is timed, every round (default 2): "
                        "BLAS threads left spinning by the other side otherwise slow its first steps")
    p.add_argument("--checkpoint", metavar="RUN.npz",
                   help="time the engine's steps from this training checkpoint's weights and optimizer state "
                        "(PyTorch stays on fresh weights)")
    p.add_argument("--breakdown", action="store_true", help="also time every contraction, view, fold")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    return p


def chosen(p, spec, asked, state) -> list:
    """The networks to time, in the spec's order for `all`; an unknown name is a usage error."""
    if not asked:
        return [state.network if state else spec.network]
    names = []
    for name in asked:
        if name == "all":
            names += list(spec.networks)
        elif name in spec.networks:
            names.append(name)
        else:
            p.error(f"--network {name}: not found, valid options are {sorted(spec.networks)} or all")
    names = list(dict.fromkeys(names))
    if state and state.network not in names:
        p.error(f"--checkpoint {state.path} holds network {state.network!r}, which --network does not name; add "
                f"--network {state.network}")
    return names


def prepare(spec, names, batches, state, torch) -> dict:
    """Before anything is timed: each network loads with its checks, each batch fits in memory, the
    checkpoint fits its network. {network: (its input shape, its classes, what has no PyTorch twin)}."""
    nets = {}
    for name in names:
        net = engine.load(spec, network=name)
        for batch in batches:
            check_memory(net, batch)
        if state and state.network == name:
            restore(net, state)
        nets[name] = (net.input_shape, net.classes, missing(net) if torch else [])
    return nets


def bench(args, spec, name, state, net, torch, gemm) -> dict:
    """One network at every batch: {"batches": [row, ...]} with how its weights began and what has no twin."""
    input_shape, classes, gaps = net
    section = {"weights": "trained" if state else "fresh", "batches": []}
    if state:
        section["checkpoint"] = {"path": state.path, "step": state.step, "optimizer": state.optimizer,
                                 "lr": state.lr}
    if not args.json:
        sides = [] if args.only == "pytorch" else [f"engine on {state.describe() if state else 'fresh weights'}"]
        if state and torch and not gaps and args.only != "engine":
            sides.append("PyTorch on fresh weights")
        say(f"network {name}: {'; '.join(sides) or 'PyTorch alone'}")
    if gaps:
        skipped(args, name, section, f"no twin for {', '.join(gaps)}", gaps)
    if args.only == "pytorch" and (gaps or not torch):
        return section
    rng = np.random.default_rng(0)
    for batch in args.batch:
        x, y = batch_of(input_shape, classes, batch, rng)
        eng = Engine(spec, name, batch, x, y, state)
        fwd, bwd = step_flops(eng.net, batch)
        contenders = [eng] if args.only != "pytorch" else []
        if torch and not gaps and args.only != "engine":
            try:
                contenders.append(Torch(eng.net, batch, x, y, args.torch_threads))
            except ShapeMismatch as exc:  # a kind of the user's own under a shipped kind's name
                gaps = [f"kind {exc.kind!r}"]
                skipped(args, name, section, f"its twin does not match: {exc}", gaps)
        row = time_row(args, contenders, batch)
        if args.only != "pytorch":  # whose threads the engine's passes run on, and the trial's figures
            row["engine"]["threads"] = eng.net.threads.document()
        row.update(flops_forward=fwd, flops_backward=bwd, cold_start_s=eng.cold_start, peak_rss_mib=peak_rss_mib())
        if "train_step_ms" in row["engine"]:
            row["engine"]["gflops"] = (fwd + bwd) / (row["engine"]["train_step_ms"] / 1e3) / 1e9
        if args.breakdown:
            row["breakdown"] = breakdown(eng.net, eng.opt, x, y)
        section["batches"].append(row)
        if not args.json:
            print_row(row, gemm)
        del eng, contenders
    return section


def skipped(args, name, section, why, gaps):
    """Say in one line why a network's PyTorch side is not timed, and record what has no twin."""
    section["no_twin"] = gaps
    print(f"network {name}: PyTorch side skipped: {why}", file=sys.stderr if args.json else sys.stdout, flush=True)


def time_row(args, contenders, batch) -> dict:
    """Rounds alternating the sides, each warmed up before it is timed; medians, the fastest steps and
    each round's own ratio."""
    train, infer, fastest = defaultdict(list), defaultdict(list), defaultdict(list)
    for r in range(args.rounds):
        for c in contenders if r % 2 == 0 else contenders[::-1]:  # neither side always timed first
            # warmed up for WARM_S at least: the other side's threads (OpenBLAS's spin some 80 ms after a
            # call) asleep and the cores up to speed before the timed calls
            train[c.name].append(timed(c.train_step, args.repeats, args.warmup, fastest[c.name], warm_for=WARM_S))
            infer[c.name].append(timed(c.infer, args.repeats, args.warmup, warm_for=WARM_S))
    row = {"batch": batch, "engine": {}}
    for name in train:
        t, i = statistics.median(train[name]), statistics.median(infer[name])
        row[name] = {"train_step_ms": 1e3 * t, "train_images_per_s": batch / t,
                     "infer_images_per_s": batch / i, "fastest_train_step_ms": 1e3 * min(fastest[name])}
    if "pytorch" in row and "train_step_ms" in row["engine"]:
        e, p = row["engine"], row["pytorch"]
        row["ratio_train"] = e["train_images_per_s"] / p["train_images_per_s"]
        row["ratio_infer"] = e["infer_images_per_s"] / p["infer_images_per_s"]
        row["ratio_train_fastest"] = p["fastest_train_step_ms"] / e["fastest_train_step_ms"]
        # each round's own ratio, the two sides timed back to back: steadier where the machine's
        # speed drifts from round to round (a shared host)
        row["ratio_train_paired"] = statistics.median(b / a for a, b in zip(train["engine"], train["pytorch"]))
        row["ratio_infer_paired"] = statistics.median(b / a for a, b in zip(infer["engine"], infer["pytorch"]))
    return row


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    torch = False
    if not args.no_torch:
        import importlib.util
        torch = importlib.util.find_spec("torch") is not None
        if not torch:
            if args.only == "pytorch":
                p.error(f"--only pytorch needs PyTorch: {TORCH}")
            print(f"PyTorch is not installed: engine figures only. For the side-by-side run: {TORCH}",
                  file=sys.stderr)
    elif args.only == "pytorch":
        p.error("--only pytorch and --no-torch leave nothing to time; drop one")
    try:
        spec = engine.read(Path(args.spec))  # a path, never read as YAML text
        state = trained(args.checkpoint, spec, args.spec) if args.checkpoint else None
        names = chosen(p, spec, args.network, state)
        nets = prepare(spec, names, args.batch, state, torch)
        report = {"gemm_gflops": gemm_gflops(), "numpy": np.__version__, "fused": fused.describe()}
        if torch:
            from importlib.metadata import PackageNotFoundError, version
            try:
                found = version("torch")
            except PackageNotFoundError:  # importable without its metadata (a stand-in, a source tree)
                found = "unknown"
            report.update(torch=found, torch_threads=args.torch_threads)
        report["networks"] = {}
        if not args.json:
            say(f"fused loops: {report['fused']}")
        for name in names:
            report["networks"][name] = bench(args, spec, name, state if state and state.network == name else None,
                                             nets[name], torch, report["gemm_gflops"])
    except engine.UserError as exc:  # a bad spec, checkpoint or batch: one line
        print(f"bench.py: {flags(exc.one_line())}", file=sys.stderr)
        return 2
    if args.json:
        say(json.dumps(report, indent=2))
    return 0


def print_row(row, gemm):
    b = row["batch"]
    e = row["engine"]
    if "train_step_ms" in e:
        say(f"batch {b}: engine {e['train_images_per_s']:,.0f} train img/s ({e['train_step_ms']:.1f} ms/step), "
            f"{e['infer_images_per_s']:,.0f} infer img/s; {e['gflops']:.1f} GFLOP/s of the plan's "
            f"{(row['flops_forward'] + row['flops_backward']) / b / 1e6:.0f} MFLOP/image "
            f"(numpy GEMM {gemm:.0f} GFLOP/s)")
    else:
        say(f"batch {b}: engine not timed (--only pytorch)")
    if "pytorch" in row:
        t = row["pytorch"]
        ratio = (f"; ratio engine/pytorch: train {row['ratio_train']:.2f}, infer {row['ratio_infer']:.2f}"
                 f" (round by round: {row['ratio_train_paired']:.2f}, {row['ratio_infer_paired']:.2f}; fastest "
                 f"steps: {row['ratio_train_fastest']:.2f})" if "ratio_train" in row else " (timed alone)")
        say(f"          pytorch {t['train_images_per_s']:,.0f} train img/s ({t['train_step_ms']:.1f} ms/step), "
            f"{t['infer_images_per_s']:,.0f} infer img/s{ratio}")
    say(f"          cold start {row['cold_start_s']:.2f} s, peak RSS {row['peak_rss_mib']:.0f} MiB")
    for t in e.get("threads", []):
        trial = f" ({t['ours_ms']:.1f} ms a call on ours, {t['openblas_ms']:.1f} on OpenBLAS's)" if "ours_ms" in t \
            else ""
        say(f"          threads for {t['pass']}: {t['threads']}{trial}")
    if "breakdown" in row:
        width = max(len("contraction"), *(len(r["contraction"]) for r in row["breakdown"]))
        say(f"          {'contraction':<{width}} {'ms':>7} {'bound':>7} {'reached':>7}  by strategy (ms)")
        for r in row["breakdown"]:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in r.get("strategies", {}).items())
            bound = (f"{r['bound_ms']:7.3f} {r['of_roofline']:7.0%}" if "bound_ms" in r else f"{'':7} {'':7}")
            say(f"          {r['contraction']:<{width}} {r['ms']:7.2f} {bound}  {parts}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BrokenPipeError, OutputLost) as exc:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        if isinstance(exc, BrokenPipeError):  # piped into `head` and the like: stop quietly, as cat does
            sys.exit(0)
        print(f"bench.py: cannot write the report to standard output ({exc}); send it where there is room",
              file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("bench.py: interrupted", file=sys.stderr)
        sys.exit(130)
