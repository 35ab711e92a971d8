"""The trainer: shuffled mini-batches, one optimizer step each (eq. 6-9), a test pass per epoch.

The data order of epoch e is a permutation drawn from ``default_rng([seed, e])``. A checkpoint
keeps parameters, optimizer state, the epoch's order and the position in it, so a resumed run
takes exactly the steps an uninterrupted one would.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from notation.language.errors import one_line
from notation.lowering import cost
from notation.runtime import parallel

from ..data.examples import Data, inputs
from ..errors import CheckpointError, TrainingError, named
from . import augment, checks, optim, outputs, schedule
from . import checkpoint as ckpt_io
from .checkpoint import Checkpoint
from .evaluation import Evaluation, evaluate, needs_images
from .interrupts import Interrupts, Terminated, stopped_by
from .settings import BY_NAME, OLD_CHECKPOINTS, Config


def arithmetic() -> str:
    """What the bits of a step depend on, which a checkpoint records: the BLAS and its threads
    (notation.runtime.parallel), and the rates the roads were chosen by (notation.lowering.cost)."""
    return f"{parallel.arithmetic()}; roads chosen at {cost.rates().describe()}"


def roads(net, batch: int) -> str:
    """A digest of the road each product of a training step takes (every block's forward, state updates
    and Jacobians, notation/lowering/roads.py): with arithmetic(), what a step's bits depend on.  A new
    road for a product (a release's, or this machine's rates') changes it."""
    digest = hashlib.sha256()
    for stage in net.compiled(batch, "train"):
        for block in (stage.layer, stage.activation):
            for step in () if block is None else (*block.forward_runs, *block.update_runs, *block.backward_runs):
                digest.update(f"{step.run.equation.source}|{'/'.join(step.run.strategies)}\n".encode())
            for (what, result), program in sorted(block.row_programs().items()) if block else ():
                digest.update(f"{what} {result}|{program.name}: {', '.join(program.results)}\n".encode())
    return digest.hexdigest()[:16]


def mask_generator(seed: int):
    """The run's generator of random masks (dropout), apart from the data order's."""
    return np.random.default_rng([seed, 1 << 20])


def epoch_order(seed: int, epoch: int, n: int):
    """(the generator's starting state, the permutation of n examples) for epoch `epoch` (0-based)."""
    rng = np.random.default_rng([seed, epoch])
    state = rng.bit_generator.state
    return state, rng.permutation(n)



@dataclasses.dataclass
class Outcome:
    """How a run ended: "finished", "interrupted" or "diverged", with the line that says so."""

    status: str
    message: str
    evaluation: Evaluation | None = None
    seconds: float = 0.0          # wall time of this run
    images_per_s: float = 0.0     # training images per second of training-step time, this run
    saved: bool = False           # a checkpoint was written at the end
    signal: int | None = None     # interrupted by: signal.SIGINT, SIGTERM or SIGHUP


class Trainer:
    """Trains `net` on `data` as `config` says; checkpoints to `checkpoint` (a path) when given.

    on_step(trainer) is called after every completed update (tests use it to interrupt).
    """

    def __init__(self, net, data: Data, config: Config, *, spec_hash: str = "", spec_file: str = "",
                 checkpoint=None, metrics=None, progress=True, log=print, on_step=None, meaning=None,
                 legacy_hash=None):
        self.net, self.data, self.config = net, data, config
        self.spec_hash, self.spec_file = spec_hash, spec_file
        self.meaning, self.legacy_hash = meaning, legacy_hash  # what the network means (checkpoint.meaning)
        self.hold_signals = False  # the command line: once interrupted, further signals are ignored until exit
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.metrics = Path(metrics) if metrics else None
        self.progress, self.log, self.on_step = progress, log, on_step
        self.warn = lambda line: print(line, file=sys.stderr)  # what the run says besides its log
        checks.fits(net, data.train_x, np.concatenate([data.train_y, data.test_y]), data.name)
        if len(data.train_y) == 0:
            raise TrainingError("no training examples")
        checks.statistics(net, config.batch_size, len(data.train_y))
        self.opt = optim.make(config.optimizer, net.params, config.lr)
        if config.weight_decay:
            optim.decaying(self.opt, config.weight_decay)
        self.schedule = schedule.warmed(schedule.get(config.schedule), config.warmup * self.steps_per_epoch)
        self.augment = augment.parse(config.augment)
        needs_images(net, "augment", config.augment if self.augment else "none")
        needs_images(net, "test_augment", config.test_augment)
        self._roads = None        # roads(), once asked for
        self.epoch = 0            # epochs completed
        self.batch = 0            # batches done in the current epoch
        self.step = 0             # updates in all
        self.rng_state, self.order = epoch_order(config.seed, 0, len(data.train_y))
        net.rng = mask_generator(config.seed)  # dropout's masks: one generator for the run, saved with it
        self.volatile = bool(net.state_shapes) or net.random  # a step changes more than params and optimizer
        self.mask_state = net.rng.bit_generator.state  # as of the last completed step
        self.sums = {"loss": 0.0, "seen": 0, "seconds": 0.0}  # of the current epoch so far
        self.history = []         # one record per finished epoch
        self.resumed = False
        self._told = set()  # the choices of whose threads already said
        self.saved_at = None      # (epoch, batch, step) of the checkpoint on disk, if any

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.data.train_y) // self.config.batch_size)

    # -- checkpoints ----------------------------------------------------------------------
    def restore(self, ckpt: Checkpoint, path="checkpoint"):
        """Continue from a checkpoint of this spec, network and config (epochs may differ)."""
        ckpt_io.check_spec(ckpt, path, self.spec_hash, self.spec_file, self.net.name, self.meaning,
                           self.legacy_hash)
        meta = ckpt.meta
        saved = {**OLD_CHECKPOINTS, **meta.get("config", {})}
        mine = dataclasses.asdict(self.config)
        for k in mine:
            if not (k in BY_NAME and BY_NAME[k].on_resume) and saved.get(k) != mine[k]:
                raise CheckpointError(f"{path}: trained with {named(k)} {saved.get(k)}, not {mine[k]}; resume "
                                      f"with the settings it began with, or start a new {named('checkpoint')}")
        checks.same_data(path, meta, self.data)
        self.epoch, self.batch, self.step = (ckpt_io.meta_count(ckpt, path, k) for k in ("epoch", "batch", "step"))
        try:
            self.net.set_params(ckpt.params)
            self.opt.load_state(ckpt.optim)
            self.sums = {k: type(v)(meta["sums"][k]) for k, v in self.sums.items()}
            self.history = list(meta["history"])
            self.rng_state = meta["rng_state"]
            order = ckpt.data["order"]
            if self.net.state_shapes:
                self.net.set_state(ckpt.state)
            if "mask_rng_state" in meta:
                self.net.rng.bit_generator.state = meta["mask_rng_state"]
                self.mask_state = meta["mask_rng_state"]
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: incomplete or mismatched checkpoint ({one_line(exc)}); "
                                  f"{ckpt_io.FIX}") from None
        n = len(self.data.train_y)
        if order.size == 0:  # saved after its last epoch: the next one, should more epochs be asked for
            self.rng_state, self.order = epoch_order(self.config.seed, self.epoch, n)
        elif order.shape != (n,):
            raise CheckpointError(f"{path}: its data order is for {order.size} training examples, this data "
                                  f"has {n}; resume on the same data, or start a new {named('checkpoint')}")
        elif not np.issubdtype(order.dtype, np.integer) or not np.array_equal(np.sort(order), np.arange(n)):
            raise CheckpointError(f"{path}: its data order is not an ordering of the {n} training examples (an "
                                  f"entry repeats or is out of range): the file was altered or damaged; "
                                  f"{ckpt_io.FIX}")
        else:
            self.order = order.astype(np.int64)
        planned = saved.get("epochs") if isinstance(saved.get("epochs"), int) else self.epoch
        checks.position(path, meta, self.epoch, self.batch, self.step, self.steps_per_epoch, max(planned, 0))
        checks.arrays(path, ckpt)
        self.resumed = True
        self.saved_at = (self.epoch, self.batch, self.step)
        then, now = meta.get("arithmetic"), arithmetic()
        if isinstance(then, str) and then != now:
            self.warn(f"note: {path} was trained on {then}; this run computes on {now}, so its steps from here "
                      "may differ in the last bits from the run's own")
        elif isinstance(meta.get("roads"), str) and meta["roads"] != self.roads():
            self.warn(f"note: {path} was trained with some products on other roads (this version's, see `python3 "
                      "scripts/plan.py`), so its steps from here may differ in the last bits from the run's own")

    def roads(self) -> str:
        """roads() of this run's network at its batch size, worked out once: its runs never change."""
        if self._roads is None:
            self._roads = roads(self.net, self.config.batch_size)
        return self._roads

    def _finite(self) -> bool:
        arrays = [v for ps in self.net.params.values() for v in ps.values()] + list(self.opt.state().values())
        arrays += [v for ns in self.net.state.values() for v in ns.values()]
        return all(np.isfinite(a).all() for a in arrays)

    def save(self) -> bool:
        """Write the checkpoint (when a path is set); refuse non-finite weights, keeping the last good file."""
        if self.checkpoint is None or not self._finite():
            return False
        meta = {"spec_hash": self.spec_hash, "spec_file": self.spec_file, "network": self.net.name,
                **({"meaning": self.meaning} if self.meaning is not None else {}),
                "config": dataclasses.asdict(self.config), "epoch": self.epoch, "batch": self.batch,
                "step": self.step, "rng_state": self.rng_state, "sums": self.sums, "history": self.history,
                "dtype": str(self.net.dtype), "mask_rng_state": self.mask_state, "arithmetic": arithmetic(),
                "roads": self.roads(),
                "algorithms": dict(self.net.algorithms),  # what `auto` chose: a resume runs the same
                "classes": [str(c) for c in self.data.classes], "data_fingerprint": self.data.fingerprint,
                "data_name": self.data.name}
        order = self.order if self.order is not None else np.zeros(0, np.int64)
        try:
            ckpt_io.save(self.checkpoint, Checkpoint(self.net.params, self.opt.state(), {"order": order}, meta,
                                                               self.net.state))
        except OSError as exc:
            raise CheckpointError(f"{self.checkpoint}: cannot write it ({exc.strerror or exc}); "
                                  f"{ckpt_io.write_advice(exc, self.checkpoint)}") from None
        self.saved_at = (self.epoch, self.batch, self.step)
        return True

    def where(self, epoch=None, batch=None, step=None) -> str:
        epoch = self.epoch if epoch is None else epoch
        batch = self.batch if batch is None else batch
        step = self.step + batch - self.batch if step is None else step
        if batch == 0 and epoch > 0:
            return f"the end of epoch {epoch} (step {step})"
        return f"epoch {epoch + 1}, batch {batch} of {self.steps_per_epoch} (step {step})"

    def _kept(self) -> str:
        if self.checkpoint is None:
            return f"no {named('checkpoint')} was given, so nothing is saved"
        if self.saved_at is None:
            return f"no checkpoint was written yet ({self.checkpoint} does not exist)"
        return f"{self.checkpoint} still holds {self.where(*self.saved_at)}, untouched"

    # -- running --------------------------------------------------------------------------
    def run(self) -> Outcome:
        """Train until config.epochs are done, Ctrl-C, or a non-finite loss."""
        cfg = self.config
        self._run = {"started": time.perf_counter(), "images": 0, "seconds": 0.0, "evaluation": None}
        with contextlib.ExitStack() as stack:
            metrics = stack.enter_context(outputs.Metrics(self.metrics, self.warn)) if self.metrics else None
            interrupts = stack.enter_context(Interrupts(hold=self.hold_signals))
            # overflow in a diverging step is reported once, as divergence, not as numpy's warnings
            stack.enter_context(np.errstate(over="ignore", invalid="ignore", divide="ignore"))
            self._interrupts = interrupts
            try:
                while self.epoch < cfg.epochs:
                    loss = self._train_epoch(interrupts, metrics)
                    if not math.isfinite(loss):
                        return self._ended("diverged", f"the loss is {loss} at {self.where(batch=self.batch + 1)}: "
                                           f"training stopped; {self._kept()}. Try a smaller {named('lr')}")
                    evaluation = evaluate(self.net, self.data.test_x, self.data.test_y, cfg.batch_size,
                                          cfg.test_augment)
                    self._run["evaluation"] = evaluation
                    with interrupts.atomic():
                        record = self._end_epoch(evaluation, metrics)
                    self.log(f"epoch {record['epoch']}/{cfg.epochs}: train loss {record['train_loss']:.4f}, "
                             f"test loss {record['test_loss']:.4f}, test accuracy {record['test_accuracy']:.2%} "
                             f"({record['seconds']:.1f} s, {record['images_per_s']:.0f} img/s)")
                    for line in self.net.threads.describe():  # each trial's choice (engine/compiler/threads.py), once
                        if line not in self._told:
                            self._told.add(line)
                            self.log(f"threads: {line}")
                    if not math.isfinite(evaluation.loss) or not self._finite():
                        return self._ended("diverged", f"the weights are no longer finite at {self.where()}: "
                                           f"training stopped; {self._kept()}. Try a smaller {named('lr')}")
                    with interrupts.atomic():  # a signal during the save waits for it
                        saved = self.save()
                    if saved:
                        self.log(f"saved {self.checkpoint} at {self.where()}")
            except KeyboardInterrupt as exc:
                return self._interrupted(exc, interrupts, metrics)
        return self._ended("finished", f"finished {count(cfg.epochs, 'epoch')} ({self.step} steps)",
                           self.saved_at is not None)

    def _interrupted(self, exc, interrupts, metrics) -> Outcome:
        """Save where the run stands (holding further signals until the file is written), or say which
        checkpoint stays the resume point."""
        sig = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
        what = stopped_by(exc)
        where = self.where()
        with interrupts.shield():
            if metrics:
                metrics.flush()
            here = (self.epoch, self.batch, self.step)
            if self.checkpoint is not None and self.saved_at == here:
                message, saved = f"{what} at {where}; {self.checkpoint} holds it", True
            else:
                try:
                    saved = self.checkpoint is not None and self.save()
                except CheckpointError as err:
                    saved, message = False, f"{what} at {where}; could not save: {err}; {self._kept()}"
                else:
                    message = (f"{what} at {where}; saved to {self.checkpoint}" if saved
                               else f"{what} at {where}; {self._kept()}")
        if interrupts.held:
            more = "another signal" if interrupts.held == 1 else f"{interrupts.held} more signals"
            message += f" ({more} during the save waited for it to finish)"
        outcome = self._ended("interrupted", message, saved or self.saved_at is not None)
        outcome.signal = sig
        return outcome

    def _train_epoch(self, interrupts, metrics) -> float:
        """The rest of the current epoch's batches; the last loss (not finite: stopped before updating)."""
        cfg, loss = self.config, 0.0
        bar = tqdm(total=self.steps_per_epoch, initial=self.batch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                   unit="batch", file=sys.stderr, disable=not self.progress, dynamic_ncols=True)
        with bar:
            while self.batch < self.steps_per_epoch:
                t0 = time.perf_counter()
                idx = self.order[self.batch * cfg.batch_size:(self.batch + 1) * cfg.batch_size]
                x = inputs(self.data.train_x[idx], self.net.input_shape, self.net.dtype)
                if self.augment:
                    x = augment.apply(self.augment, x, augment.batch_generator(cfg.seed, self.epoch, self.batch))
                self.opt.lr = self.schedule(cfg.lr, self.step, cfg.epochs * self.steps_per_epoch)
                if self.volatile:
                    loss, grads = self._volatile_step(x, self.data.train_y[idx])
                else:
                    loss, grads = self.net.loss_and_grads(x, self.data.train_y[idx], copy=False)
                if not math.isfinite(loss):
                    return loss
                with interrupts.atomic():  # the update and its bookkeeping happen whole or not at all
                    self.opt.step(self.net.params, grads)
                    if self.volatile:
                        self.mask_state = self.net.rng.bit_generator.state
                    seconds = time.perf_counter() - t0
                    self.step += 1
                    self.batch += 1
                    self.sums["loss"] += loss * len(idx)
                    self.sums["seen"] += len(idx)
                    self.sums["seconds"] += seconds
                    self._run["images"] += len(idx)
                    self._run["seconds"] += seconds
                    rate = self.sums["seen"] / self.sums["seconds"]
                    if metrics:
                        metrics.write({"event": "step", "epoch": self.epoch + 1, "batch": self.batch,
                                       "step": self.step, "loss": loss, "images_per_s": round(rate, 1)})
                bar.set_postfix_str(f"loss {self.sums['loss'] / self.sums['seen']:.4f}, {rate:.0f} img/s",
                                    refresh=False)
                bar.update(1)
                if self.on_step is not None:
                    self.on_step(self)
        return loss

    def _volatile_step(self, x, labels):
        """loss_and_grads for a network with running statistics or random masks: a Ctrl-C halfway
        through puts them back as they were, so a resume takes this step exactly as it would have."""
        saved = {layer: {n: v.copy() for n, v in ns.items()} for layer, ns in self.net.state.items()}
        try:
            return self.net.loss_and_grads(x, labels, copy=False)
        except KeyboardInterrupt:
            for layer, ns in saved.items():
                for n, v in ns.items():
                    np.copyto(self.net.state[layer][n], v)
            self.net.rng.bit_generator.state = self.mask_state
            raise

    def _end_epoch(self, evaluation: Evaluation, metrics) -> dict:
        """Record the finished epoch and move to the next one's order."""
        seen, seconds = self.sums["seen"], self.sums["seconds"]
        record = {"event": "epoch", "epoch": self.epoch + 1, "step": self.step,
                  "train_loss": self.sums["loss"] / max(seen, 1), "test_loss": evaluation.loss,
                  "test_accuracy": evaluation.accuracy, "seconds": round(seconds, 3),
                  "images_per_s": round(seen / max(seconds, 1e-9), 1)}
        self.history.append(record)
        if metrics:
            metrics.write(record)
            metrics.flush()
        self.epoch += 1
        self.batch = 0
        self.sums = {"loss": 0.0, "seen": 0, "seconds": 0.0}
        if self.epoch < self.config.epochs:
            self.rng_state, self.order = epoch_order(self.config.seed, self.epoch, len(self.data.train_y))
        else:
            self.order = None
        return record

    def _ended(self, status, message, saved=False) -> Outcome:
        run = self._run
        return Outcome(status, message, run["evaluation"], time.perf_counter() - run["started"],
                       run["images"] / run["seconds"] if run["seconds"] else 0.0, saved)



def count(n: int, noun: str) -> str:
    """'1 epoch', '5 epochs'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
