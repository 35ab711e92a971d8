"""The engine's side of scripts/bench.py: a network ready to time (fresh or from a training
checkpoint), the memory a batch needs, and the time of each contraction of a step."""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

import engine
from engine.compiler import memory
from engine.errors import CheckpointError, TrainingError, rename
from engine.training import checkpoint as ckpt_io
from engine.training.optim import make
from notation import counting

FLAGS = {"checkpoint": "--checkpoint", "network": "--network", "spec": "--spec"}


def flags(text) -> str:
    """An engine message with the settings it names (`checkpoint`) written as this script's flags."""
    return rename(text, FLAGS.get, FLAGS)


class Trained:
    """A training checkpoint's state, to time steps as a long run takes them (issue 27: Adam's second
    moments hold denormals only after some 800 steps)."""

    def __init__(self, path: str, network: str, ckpt: ckpt_io.Checkpoint, optimizer: str, lr: float, step: int):
        self.path, self.network, self.ckpt = path, network, ckpt
        self.optimizer, self.lr, self.step = optimizer, lr, step

    def describe(self) -> str:
        return f"trained state of {self.path} (step {self.step:,}, {self.optimizer} lr {self.lr:g})"


def trained(path, spec, spec_file) -> Trained:
    """A checkpoint read by the trainer's own reader and checked against the spec as a resume is:
    a CheckpointError line if it is damaged or belongs to a network that now means something else."""
    if not Path(path).is_file():
        raise CheckpointError(f"`checkpoint` {path}: no such file; give a checkpoint that scripts/train.py wrote")
    ckpt = ckpt_io.load(path)
    network = ckpt.meta.get("network")
    if not isinstance(network, str) or network not in spec.networks:
        raise CheckpointError(f"{path}: it was trained as network {network!r}, which {spec_file} does not define "
                              f"(it has {sorted(spec.networks)}); give the `spec` it was trained with")
    meaning = ckpt_io.meaning(spec, network)
    ckpt_io.check_spec(ckpt, path, ckpt_io.fingerprint(meaning), str(spec_file), network, meaning,
                       ckpt_io.spec_hash(Path(spec_file).read_bytes(), network), resuming=False)
    config = ckpt.meta.get("config")
    config = config if isinstance(config, dict) else {}
    optimizer, lr = config.get("optimizer", "adam"), config.get("lr", 1e-3)
    if not isinstance(optimizer, str) or isinstance(lr, bool) or not isinstance(lr, (int, float)):
        raise CheckpointError(f"{path}: its optimizer {optimizer!r} or lr {lr!r} is not one: the file was damaged "
                              f"or altered; {ckpt_io.FIX}")
    return Trained(str(path), network, ckpt, optimizer, float(lr), ckpt_io.meta_count(ckpt, path, "step"))


def restore(net, state: Trained):
    """`net` given the checkpoint's weights and running statistics; its optimizer, with the
    checkpoint's state. One CheckpointError line for arrays that do not fit or are not finite."""
    try:
        net.set_params(state.ckpt.params)
        if net.state_shapes:
            net.set_state(state.ckpt.state)
        opt = make(state.optimizer, net.params, state.lr)
        opt.load_state(state.ckpt.optim)
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{state.path}: incomplete or mismatched checkpoint ({str(exc).splitlines()[0]}); "
                              f"{ckpt_io.FIX}") from None
    arrays = [v for ps in net.params.values() for v in ps.values()] + list(opt.state().values())
    if not all(np.isfinite(a).all() for a in arrays):
        raise CheckpointError(f"{state.path}: its weights or optimizer state are not finite (NaN or infinite); "
                              f"training never saves such a state, so the file was damaged or altered; {ckpt_io.FIX}")
    return opt


def check_memory(net, batch: int) -> None:
    """Refuse a batch whose training step cannot fit in memory, by training's own estimate
    (engine/compiler/memory.py): first at batches 1 and 2, extrapolated, since compiling the network
    at a batch that cannot fit would itself exhaust the memory; then at the batch itself."""
    have = memory.available()
    if have is None:
        return
    one, two = (memory.training_need(net, b, "adam") for b in (1, 2))
    per = max(two - one, 0)
    need = one + per * (batch - 1)
    if need <= have:
        need = memory.training_need(net, batch, "adam")
        if need <= have:
            return
    fits = 1 + (have - one) // per if per and have > one else 0
    while fits > 1 and (at := memory.training_need(net, fits, "adam")) > have:  # the slope of 1 and 2 is low
        fits = fits * have // at
    fix = f"use --batch {fits} or less" if fits >= 1 else "the network itself does not fit: make it smaller"
    raise TrainingError(f"--batch {batch}: a training step of {net.name!r} on {batch:,} examples needs about "
                        f"{memory.human(need)} of memory, but {memory.human(have)} are available; {fix}")


def batch_of(input_shape, classes, batch, rng):
    """The batch both sides are timed on: random images in [0, 1) and class numbers."""
    return rng.random((batch, *input_shape), dtype=np.float32), rng.integers(0, classes, batch)


class Engine:
    """The engine's side: the network loaded with its load-time checks, fresh (Adam at lr 1e-3) or
    in a checkpoint's trained state, and one step taken; `cold_start` is the seconds all that took."""

    name = "engine"

    def __init__(self, spec, network, batch, x, y, state: Trained | None = None):
        t = time.perf_counter()
        self.net = engine.load(spec, network=network)
        self.opt = restore(self.net, state) if state else make("adam", self.net.params, 1e-3)
        self.x, self.y = x, y
        self.train_step()
        self.cold_start = time.perf_counter() - t

    def train_step(self):
        _, grads = self.net.loss_and_grads(self.x, self.y, copy=False)
        self.opt.step(self.net.params, grads)

    def infer(self):
        self.net.forward(self.x)


def step_flops(net, batch) -> tuple:
    """(forward, backward) FLOPs of one training step, as scripts/plan.py counts them (PathInfo)."""
    from engine.compiler.plans import collect
    totals = collect(net, batch)["totals"]
    return totals["forward_flops"], totals["backward_flops"]


def breakdown(net, opt, x, y, repeats=5) -> list:
    """Milliseconds per contraction of one training step, split by the strategy that runs each part
    (notation.counting(): exclusive times, so a nested function counts under its own strategy); each
    figure the median over `repeats` steps, each step counted on its own, so one disturbed step on a
    shared machine does not skew a row."""
    labels, bounds = {}, {}
    for stage in net.compiled(len(x)):
        for block in [stage.layer] + ([stage.activation] if stage.activation else []):
            where = block.where.split(", ", 1)[-1]
            for f in block.forward_runs:
                labels[f.run] = f"{where}: {f.result} (forward)"
            for b in block.backward_runs:
                labels[b.run] = f"{where}: {b.result}"
            for r in [f.run for f in block.forward_runs] + [b.run for b in block.backward_runs]:
                bounds[r] = 1e3 * r.bound_seconds(block.dtype.itemsize)  # the roofline (notation/lowering/cost.py)
            for (what, _), program in block.row_programs().items():  # its time counts under its first equation
                first = program.runs[0]
                labels[first] = f"{where}: {', '.join(program.results)}{' (forward)' * (what == 'forward')}, " \
                                "one row program"
                bounds[first] = 1e3 * sum(r.bound_seconds(block.dtype.itemsize) for r in program.runs)
    # the optimizer steps the network's own weights, as training runs it: what is made from them
    # (conv2's kernel spectrum) is made again every step, as in training, not kept as in inference
    steps, whole, update = [], [], []
    for _ in range(2 + repeats):  # two untimed; the update after each
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
        row = {"contraction": labels.get(run, str(run.equation)), "ms": total,
               "strategies": dict(sorted(parts.items(), key=lambda kv: -kv[1]))}
        if run in bounds and total > 0:  # the bound beside the time measured, and the fraction reached
            row.update(bound_ms=bounds[run], of_roofline=bounds[run] / total)
        rows.append(row)
    strategies = {name: ms([c.strategies.get(name, 0.0) for c in steps]) for name in steps[0].strategies}
    for name, value in sorted(strategies.items(), key=lambda kv: -kv[1]):
        rows.append({"contraction": f"(all {name})", "ms": value})
    rows.append({"contraction": "(whole step, excluding the update)", "ms": ms(whole)})
    rows.append({"contraction": f"(the update: {opt.name})", "ms": ms(update)})
    return rows
