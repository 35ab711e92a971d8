#!/usr/bin/env python3
"""Training and inference throughput of the engine, side by side with PyTorch when installed.

    python3 scripts/bench.py                      # batch 32, 64, 128; 3 interleaved rounds
    python3 scripts/bench.py --batch 64 --breakdown
    python3 scripts/bench.py --json > bench.json

Every figure is a median over rounds that alternate engine and PyTorch; speed is measured
here, never asserted in a test.
"""
from __future__ import annotations

import argparse
import json
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

from _shared import starting, timed  # noqa: E402

with starting("bench.py"):
    import engine
    from engine.training.optim import make
    from notation import counting, fused


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


def step_flops(net, batch) -> tuple:
    """(forward, backward) FLOPs of one training step, as scripts/plan.py counts them (PathInfo)."""
    from engine.compiler.plans import collect
    totals = collect(net, batch)["totals"]
    return totals["forward_flops"], totals["backward_flops"]


def start_report(as_json: bool) -> dict:
    """The figures every row is read against: numpy's GEMM rate, and whether the fused loops of
    notation/fused.c (Adam's update, a pool's (18) and (19)) run or numpy's passes."""
    report = {"gemm_gflops": gemm_gflops(), "numpy": np.__version__, "fused": fused.describe(), "batches": []}
    if not as_json:
        print(f"fused loops: {report['fused']}")
    return report


class Engine:
    name = "engine"

    def __init__(self, spec, batch, rng):
        t = time.perf_counter()
        self.net = engine.load(spec)
        self.opt = make("adam", self.net.params, 1e-3)
        self.x = rng.random((batch, 28, 28, 1), dtype=np.float32)
        self.y = rng.integers(0, 10, batch)
        self.train_step()
        self.cold_start = time.perf_counter() - t

    def train_step(self):
        _, grads = self.net.loss_and_grads(self.x, self.y, copy=False)
        self.opt.step(self.net.params, grads)

    def infer(self):
        self.net.forward(self.x)


class Torch:
    name = "pytorch"

    def __init__(self, batch, rng, threads=2):
        import torch
        from torch import nn
        torch.set_num_threads(threads)
        self.torch = torch
        self.model = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(7 * 7 * 64, 1024), nn.ReLU(), nn.Linear(1024, 10),
        ).to(memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(self.model.parameters(), 1e-3)
        self.loss = nn.CrossEntropyLoss()
        x = rng.random((batch, 28, 28, 1), dtype=np.float32)
        self.x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        self.y = torch.from_numpy(rng.integers(0, 10, batch))
        self.train_step()

    def train_step(self):
        self.opt.zero_grad()
        self.loss(self.model(self.x), self.y).backward()
        self.opt.step()

    def infer(self):
        with self.torch.no_grad():
            self.model(self.x)


def breakdown(net, batch, rng, repeats=5) -> list:
    """Milliseconds per contraction of one training step, split by the strategy that runs each part
    (notation.counting(): exclusive times, so a nested function counts under its own strategy); each
    figure the median over `repeats` steps, each step counted on its own, so one disturbed step on a
    shared machine does not skew a row."""
    labels = {}
    for stage in net.compiled(batch):
        for block in [stage.layer] + ([stage.activation] if stage.activation else []):
            where = block.where.split(", ", 1)[-1]
            for f in block.forward_runs:
                labels[f.run] = f"{where}: {f.result} (forward)"
            for b in block.backward_runs:
                labels[b.run] = f"{where}: {b.result}"
    x = rng.random((batch, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    # Adam on the network's own weights, as training runs it: what is made from them (conv2's kernel
    # spectrum) is made again every step, as in training, not kept as in inference
    opt = make("adam", net.params, 1e-3)
    steps, whole, update = [], [], []
    for _ in range(2 + repeats):  # two untimed; Adam after each
        with counting() as counts:
            t = time.perf_counter()
            _, grads = net.loss_and_grads(x, y, copy=False)
            whole.append(time.perf_counter() - t)
        t = time.perf_counter()
        opt.step(net.params, grads)
        update.append(time.perf_counter() - t)
        steps.append(counts)
    steps, whole, update = steps[2:], whole[2:], update[2:]

    def ms(values):
        return 1e3 * statistics.median(values)

    totals = {run: ms([c.totals.get(run, 0.0) for c in steps]) for run in steps[0].totals}
    rows = []
    for run, total in sorted(totals.items(), key=lambda kv: -kv[1]):
        parts = {name: ms([c.runs[run].get(name, 0.0) for c in steps]) for name in steps[0].runs[run]}
        rows.append({"contraction": labels.get(run, str(run.equation)), "ms": total,
                     "strategies": dict(sorted(parts.items(), key=lambda kv: -kv[1]))})
    strategies = {name: ms([c.strategies.get(name, 0.0) for c in steps]) for name in steps[0].strategies}
    for name, value in sorted(strategies.items(), key=lambda kv: -kv[1]):
        rows.append({"contraction": f"(all {name})", "ms": value})
    rows.append({"contraction": "(whole step, excluding the update)", "ms": ms(whole)})
    rows.append({"contraction": "(the update: adam)", "ms": ms(update)})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", default=str(ROOT / "layers.yaml"), help="the spec to benchmark (default layers.yaml)")
    p.add_argument("--batch", type=int, nargs="+", default=[32, 64, 128], help="batch sizes (default 32 64 128)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported (default 3)")
    p.add_argument("--repeats", type=int, default=5, help="steps timed per round (median; default 5)")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even when installed")
    p.add_argument("--only", choices=["engine", "pytorch"],
                   help="time one side alone, to compare with its figure in the side-by-side run")
    p.add_argument("--torch-threads", type=int, default=2,
                   help="PyTorch's intra-op threads (default 2, the machine's cores; on a busy machine 1 can be "
                        "faster)")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed steps of each side right before it is timed, every round (default 2): "
                        "BLAS threads left spinning by the other side otherwise slow its first steps")
    p.add_argument("--breakdown", action="store_true", help="also time every contraction, view, fold")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    args = p.parse_args(argv)

    rng = np.random.default_rng(0)
    have_torch = False
    if not args.no_torch:
        import importlib.util
        have_torch = importlib.util.find_spec("torch") is not None
        if not have_torch:
            print("PyTorch is not installed: engine figures only. For the side-by-side run: "
                  "pip install torch==2.13.0", file=sys.stderr)
    report = start_report(args.json)
    for batch in args.batch:
        eng = Engine(args.spec, batch, rng)
        fwd, bwd = step_flops(eng.net, batch)
        contenders = [eng] + ([Torch(batch, rng, args.torch_threads)] if have_torch and args.only != "engine" else [])
        if args.only == "pytorch":
            if not have_torch:
                p.error("--only pytorch needs PyTorch: pip install torch==2.13.0")
            contenders = contenders[1:]
        train, infer, fastest = defaultdict(list), defaultdict(list), defaultdict(list)
        for r in range(args.rounds):
            for c in contenders if r % 2 == 0 else contenders[::-1]:  # neither side always timed first
                train[c.name].append(timed(c.train_step, args.repeats, args.warmup, fastest[c.name]))
                infer[c.name].append(timed(c.infer, args.repeats, args.warmup))
        row = {"batch": batch, "flops_forward": fwd, "flops_backward": bwd,
               "cold_start_s": eng.cold_start, "peak_rss_mib": peak_rss_mib()}
        row.setdefault("engine", {})
        for name in train:
            t, i = statistics.median(train[name]), statistics.median(infer[name])
            row[name] = {"train_step_ms": 1e3 * t, "train_images_per_s": batch / t,
                         "infer_images_per_s": batch / i, "fastest_train_step_ms": 1e3 * min(fastest[name])}
        if "train_step_ms" in row["engine"]:
            row["engine"]["gflops"] = (fwd + bwd) / (row["engine"]["train_step_ms"] / 1e3) / 1e9
        if "pytorch" in row and "train_step_ms" in row["engine"]:
            row["ratio_train"] = row["engine"]["train_images_per_s"] / row["pytorch"]["train_images_per_s"]
            row["ratio_infer"] = row["engine"]["infer_images_per_s"] / row["pytorch"]["infer_images_per_s"]
            row["ratio_train_fastest"] = (row["pytorch"]["fastest_train_step_ms"]
                                          / row["engine"]["fastest_train_step_ms"])
            # each round's own ratio, the two sides timed back to back: steadier where the machine's
            # speed drifts from round to round (a shared host)
            row["ratio_train_paired"] = statistics.median(p / e for e, p in zip(train["engine"], train["pytorch"]))
            row["ratio_infer_paired"] = statistics.median(p / e for e, p in zip(infer["engine"], infer["pytorch"]))
        if args.breakdown:
            row["breakdown"] = breakdown(eng.net, batch, rng)
        report["batches"].append(row)
        if not args.json:
            print_row(row, report["gemm_gflops"])
        del eng, contenders
    if args.json:
        print(json.dumps(report, indent=2))


def print_row(row, gemm):
    b = row["batch"]
    e = row["engine"]
    if "train_step_ms" in e:
        print(f"batch {b}: engine {e['train_images_per_s']:,.0f} train img/s ({e['train_step_ms']:.1f} ms/step), "
              f"{e['infer_images_per_s']:,.0f} infer img/s; {e['gflops']:.1f} GFLOP/s of the plan's "
              f"{(row['flops_forward'] + row['flops_backward']) / b / 1e6:.0f} MFLOP/image "
              f"(numpy GEMM {gemm:.0f} GFLOP/s)")
    else:
        print(f"batch {b}: engine not timed (--only pytorch)")
    if "pytorch" in row:
        t = row["pytorch"]
        ratio = (f"; ratio engine/pytorch: train {row['ratio_train']:.2f}, infer {row['ratio_infer']:.2f}"
                 f" (round by round: {row['ratio_train_paired']:.2f}, {row['ratio_infer_paired']:.2f}; fastest "
                 f"steps: {row['ratio_train_fastest']:.2f})" if "ratio_train" in row else " (timed alone)")
        print(f"          pytorch {t['train_images_per_s']:,.0f} train img/s ({t['train_step_ms']:.1f} ms/step), "
              f"{t['infer_images_per_s']:,.0f} infer img/s{ratio}")
    print(f"          cold start {row['cold_start_s']:.2f} s, peak RSS {row['peak_rss_mib']:.0f} MiB")
    if "breakdown" in row:
        print(f"          {'contraction':<46} {'ms':>7}  by strategy (ms)")
        for r in row["breakdown"]:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in r.get("strategies", {}).items())
            print(f"          {r['contraction'][:46]:<46} {r['ms']:7.2f}  {parts}")


if __name__ == "__main__":
    main()
