"""The trainer: shuffled mini-batches, one optimizer step each (eq. 6-9), a test pass per epoch.

The data order of epoch e is a permutation drawn from ``default_rng([seed, e])``. A checkpoint
keeps parameters, optimizer state, the epoch's order and the position in it, so a resumed run
takes exactly the steps an uninterrupted one would. scripts/train.py is the command line.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from notation.errors import one_line

from ..data import datasets
from ..data.datasets import DataError
from ..errors import TrainingError
from . import augment, optim, schedule
from . import checkpoint as ckpt_io
from .checkpoint import Checkpoint, CheckpointError

CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                      "Bag", "Ankle boot"],
}
HOLDOUT_SEED = 0  # the --holdout split is the same for every --seed


class Terminated(KeyboardInterrupt):
    """SIGTERM (what timeout, docker stop, Slurm and systemd send), handled as Ctrl-C: save, say so, exit 143."""


SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


# -- settings --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that decides a run's trajectory; a checkpoint stores it and a resume must match it."""

    network: str
    dataset: str
    optimizer: str
    lr: float
    batch_size: int
    epochs: int
    seed: int
    limit: int | None = None       # train on the first `limit` training examples
    holdout: int | None = None     # train and test on the test split alone, holding this many out
    test_limit: int | None = None  # test on the first `test_limit` test examples
    schedule: str = "constant"     # the learning rate of each step (engine/schedule.py)
    augment: str = "none"          # what changes each training image (engine/augment.py): flip, shift


FROM_SPEC = ("dataset", "optimizer", "lr", "batch_size", "epochs", "seed", "schedule", "augment")
MAY_CHANGE_ON_RESUME = ("epochs",)
OLD_CHECKPOINTS = {"schedule": "constant", "augment": "none"}  # what a checkpoint from before a setting ran with


def make_config(defaults: dict, network: str, given: dict, saved: dict | None = None) -> Config:
    """The spec's training: defaults overridden by the given (non-None) settings; on resume, the
    checkpoint's settings, which a given one may not contradict (except epochs, to train longer)."""
    given = {k: v for k, v in given.items() if v is not None}
    unknown = set(given) - {f.name for f in dataclasses.fields(Config)}
    if unknown:
        raise TrainingError(f"unknown setting(s) {sorted(unknown)}")
    if saved is not None:
        values = {**OLD_CHECKPOINTS, **saved}
        if "epochs" in given and given["epochs"] != values.get("epochs") and values["schedule"] in schedule.OVER_EPOCHS:
            raise TrainingError(f"the checkpoint's {values['schedule']} schedule is planned over its "
                                f"{values.get('epochs')} epochs, so --epochs cannot change on resume; resume "
                                "without --epochs, or start a new --checkpoint")
        for k, v in given.items():
            if k not in MAY_CHANGE_ON_RESUME and v != saved.get(k):
                flag = "--" + k.replace("_", "-")
                raise TrainingError(f"the checkpoint was trained with {flag} {saved.get(k)}, not {v}; resume "
                                    f"without {flag} (it continues as it began), or start a new --checkpoint")
        values.update(given)
    else:
        values = {k: defaults.get(k) for k in FROM_SPEC}
        values["network"] = network
        values.update(given)
    try:
        config = Config(**values)
    except TypeError as exc:
        raise TrainingError(f"the checkpoint's settings do not fit this trainer ({exc})") from None
    return _checked(config)


def _checked(c: Config) -> Config:
    def number(name, value, kind, low, allow_none=False):
        if value is None and allow_none:
            return None
        flag = "--" + name.replace("_", "-")
        where = f"{flag} (or training: {name} in the spec)" if name in FROM_SPEC else flag
        try:
            if isinstance(value, bool):
                raise ValueError
            v = kind(value)
            if kind is int and v != float(value):
                raise ValueError
        except (TypeError, ValueError):
            what = "an integer" if kind is int else "a number"
            raise TrainingError(f"{where} must be {what}, got {value!r}") from None
        if kind is float and not (math.isfinite(v) and v > 0):
            raise TrainingError(f"{where} must be a positive number, got {value!r}")
        if v < low:
            raise TrainingError(f"{where} must be at least {low}, got {value!r}")
        return v

    if c.optimizer not in optim.OPTIMIZERS:
        raise TrainingError(f"optimizer {c.optimizer!r} not found, valid options are {sorted(optim.OPTIMIZERS)}")
    if not isinstance(c.dataset, str) or c.dataset not in datasets.DATASETS:
        raise TrainingError(f"data set {c.dataset!r} not found, valid options are {sorted(datasets.DATASETS)}")
    schedule.get(c.schedule)
    return dataclasses.replace(
        c, augment=",".join(augment.parse(c.augment)) or "none", lr=number("lr", c.lr, float, 0),
        batch_size=number("batch_size", c.batch_size, int, 1),
        epochs=number("epochs", c.epochs, int, 1), seed=number("seed", c.seed, int, 0),
        limit=number("limit", c.limit, int, 1, True), holdout=number("holdout", c.holdout, int, 1, True),
        test_limit=number("test_limit", c.test_limit, int, 1, True))


# -- data ------------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class Data:
    """Train and test examples -- images uint8 in 0..255 (scaled on the fly) or floats in [0, 1] --
    and a sentence saying what they are and where they came from."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    name: str = "arrays"
    about: str = ""
    classes: list = dataclasses.field(default_factory=lambda: [str(d) for d in range(10)])

    def __post_init__(self):
        self.train_y = np.asarray(self.train_y).astype(np.int64)
        self.test_y = np.asarray(self.test_y).astype(np.int64)
        if not self.about:
            self.about = f"{self.name}: train {len(self.train_y)} examples, test {len(self.test_y)} (arrays given)"


def holdout_split(images, labels, holdout: int):
    """(train indices, test indices) of one split: `holdout` examples drawn by a fixed shuffle, both sorted."""
    n = len(labels)
    if not 0 < holdout < n:
        raise TrainingError(f"--holdout {holdout} must leave examples to train on: the split has {n}")
    perm = np.random.default_rng(HOLDOUT_SEED).permutation(n)
    return np.sort(perm[holdout:]), np.sort(perm[:holdout])


def load_data(config: Config, data_dir=None, download=True, log=print, train=True) -> Data:
    """The data set of `config`, limited as it says, with a sentence on its sizes and sources.

    train=False loads the test examples alone (for evaluating a checkpoint)."""
    name = config.dataset
    spec = datasets.DATASETS[name]
    classes = CLASS_NAMES.get(name, [str(d) for d in range(spec.num_classes)])
    if config.holdout is not None:
        test = datasets.load(name, "test", data_dir=data_dir, download=download)
        train_idx, test_idx = holdout_split(test.images, test.labels, config.holdout)
        train_idx, test_idx = train_idx[:config.limit if train else 0], test_idx[:config.test_limit]
        about = (f"{spec.title} ({name}), its test split alone ({len(test)} examples, from {test.source}) cut by "
                 f"--holdout {config.holdout} (a fixed shuffle): "
                 + (f"train on {len(train_idx)}{' (--limit)' if len(train_idx) < len(test) - config.holdout else ''}, "
                    if train else "")
                 + f"test on {len(test_idx)}{' (--test-limit)' if len(test_idx) < config.holdout else ''}")
        return Data(test.images[train_idx], test.labels[train_idx], test.images[test_idx], test.labels[test_idx],
                    name, about, classes)
    if not train:
        test = datasets.load(name, "test", data_dir=data_dir, download=download)
        n_test = min(config.test_limit or len(test), len(test))
        about = (f"{spec.title} ({name}): test on {n_test} of {len(test)}"
                 f"{' (--test-limit)' if n_test < len(test) else ''}, from {test.source}")
        return Data(test.images[:0], test.labels[:0], test.images[:n_test], test.labels[:n_test], name, about, classes)
    only_test = datasets.locate(name, "test", data_dir) if datasets.locate(name, "train", data_dir) is None else None
    if only_test is None:
        train_split = datasets.load(name, "train", data_dir=data_dir, download=download)
    else:
        note = f"{name}: only the test split is here ({only_test}), not the train split"
        holdout = "--holdout N trains on the test split, holding N of its examples out for testing"
        if not download:
            raise TrainingError(f"{note}; {holdout}; or get the train files: {spec.how_to_get}")
        log(f"{note}; trying to download it ({holdout})")
        try:
            train_split = datasets.load(name, "train", data_dir=data_dir, download=True)
        except DataError as exc:
            raise DataError(f"{note}, and downloading it failed; {holdout}. In detail: {one_line(exc)}") from None
    test_split = datasets.load(name, "test", data_dir=data_dir, download=download)
    n_train = min(config.limit or len(train_split), len(train_split))
    n_test = min(config.test_limit or len(test_split), len(test_split))
    where = (f"both from {train_split.source}" if train_split.source == test_split.source
             else f"from {train_split.source} and {test_split.source}")
    about = (f"{spec.title} ({name}): train on {n_train} of {len(train_split)}"
             f"{' (--limit)' if n_train < len(train_split) else ''}, test on {n_test} of {len(test_split)}"
             f"{' (--test-limit)' if n_test < len(test_split) else ''}; {where}")
    return Data(train_split.images[:n_train], train_split.labels[:n_train], test_split.images[:n_test],
                test_split.labels[:n_test], name, about, classes)


def inputs(images: np.ndarray, shape: tuple, dtype) -> np.ndarray:
    """A batch as the network takes it: (B, *shape) in dtype, uint8 pixels scaled to [0, 1]."""
    dtype = np.dtype(dtype)
    x = images.astype(dtype) / dtype.type(255) if images.dtype == np.uint8 else images.astype(dtype, copy=False)
    return x.reshape((len(images),) + tuple(shape))


def mask_generator(seed: int):
    """The run's generator of random masks (dropout), apart from the data order's."""
    return np.random.default_rng([seed, 1 << 20])


def epoch_order(seed: int, epoch: int, n: int):
    """(the generator's starting state, the permutation of n examples) for epoch `epoch` (0-based)."""
    rng = np.random.default_rng([seed, epoch])
    state = rng.bit_generator.state
    return state, rng.permutation(n)


# -- evaluation -------------------------------------------------------------------------------
@dataclasses.dataclass
class Evaluation:
    """Mean cross-entropy, accuracy and the confusion matrix (rows: true class, columns: predicted)."""

    loss: float
    accuracy: float
    confusion: np.ndarray
    count: int


def evaluate(net, images, labels, batch_size: int) -> Evaluation:
    """The network on a whole set, in batches of `batch_size` (no more than the set holds; the last
    padded: nothing is re-planned)."""
    labels = np.asarray(labels).astype(np.int64)
    n, classes = len(labels), net.classes
    batch_size = max(1, min(batch_size, n))
    confusion = np.zeros((classes, classes), dtype=np.int64)
    loss = 0.0
    for start in range(0, n, batch_size):
        x = inputs(images[start:start + batch_size], net.input_shape, net.dtype)
        m = len(x)
        if m < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - m,) + x.shape[1:], x.dtype)])
        probs = net.forward(x)[:m]
        y = labels[start:start + m]
        p = probs[np.arange(m), y].astype(np.float64)
        loss -= float(np.log(np.maximum(p, np.finfo(np.float64).tiny)).sum())
        np.add.at(confusion, (y, probs.argmax(axis=1)), 1)
    return Evaluation(loss / max(n, 1), float(np.trace(confusion)) / max(n, 1), confusion, n)


def format_confusion(confusion: np.ndarray, classes) -> str:
    """The confusion matrix as text, rows true classes, columns predicted, with per-class recall."""
    k = len(confusion)
    names = [f"{i} {classes[i]}" if i < len(classes) and classes[i] != str(i) else str(i) for i in range(k)]
    left = max(len(s) for s in names)
    width = max(4, len(str(int(confusion.max()))) + 1)
    lines = ["confusion matrix (rows: true class, columns: predicted)",
             " " * left + "".join(f"{j:>{width}}" for j in range(k)) + "  recall"]
    for i in range(k):
        total = confusion[i].sum()
        recall = f"{confusion[i, i] / total:7.1%}" if total else "      -"
        lines.append(f"{names[i]:<{left}}" + "".join(f"{int(v):>{width}}" for v in confusion[i]) + " " + recall)
    return "\n".join(lines)


def plot_history(history: list, path, title: str = "") -> None:
    """Loss (train, test) and test accuracy per epoch as an image; ImportError without matplotlib."""
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3.5))
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train (mean over the epoch)")
    loss_ax.plot(epochs, [h["test_loss"] for h in history], "o-", label="test")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss")
    loss_ax.legend()
    acc_ax.plot(epochs, [100 * h["test_accuracy"] for h in history], "o-", color="C2")
    acc_ax.set(xlabel="epoch", ylabel="test accuracy (%)")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


# -- the loop ---------------------------------------------------------------------------------
class _Interrupts:
    """Ctrl-C (or SIGTERM) raises KeyboardInterrupt (Terminated) between updates, never halfway
    through one; while a checkpoint is being saved, further signals are held until it is written."""

    def __init__(self, warn=None, hold=False):
        self.depth, self.pending, self.installed, self.old = 0, None, False, {}
        self.hold = hold          # after an interrupt, keep ignoring signals (the process is about to exit)
        self.received = None      # the first signal of this run: SIGINT or SIGTERM
        self.held = 0             # signals that arrived during a shielded save
        self.shielding = False
        self.warn = warn or (lambda line: print(line, file=sys.stderr, flush=True))

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) != signal.SIG_IGN:  # ignored by whoever started us (nohup, &): kept so
                    self.old[sig] = signal.signal(sig, self._handle)
            self.installed = True
        return self

    def __exit__(self, *exc):
        if self.installed:
            for sig, old in self.old.items():
                keep = signal.SIG_IGN if self.hold and self.received else old
                signal.signal(sig, keep if keep is not None else signal.SIG_DFL)

    @staticmethod
    def exception(signum):
        return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    def _handle(self, signum, frame):
        self.received = self.received or signum
        if self.shielding:
            self.held += 1
            if self.held == 1:
                self.warn(f"{SIGNAL_NAMES.get(signum, 'signal')} again: the checkpoint is being written; "
                          "it finishes first")
        elif self.depth:
            self.pending = self.pending or signum
        else:
            raise self.exception(signum)

    @contextlib.contextmanager
    def atomic(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if self.pending and not self.depth:
            signum, self.pending = self.pending, None
            raise self.exception(signum)

    @contextlib.contextmanager
    def shield(self):
        """Hold every signal until the block ends (a save after Ctrl-C); they are counted, not raised."""
        before = self.shielding
        self.shielding = True
        try:
            yield
        finally:
            self.shielding = before


@dataclasses.dataclass
class Outcome:
    """How a run ended: "finished", "interrupted" or "diverged", with the line that says so."""

    status: str
    message: str
    evaluation: Evaluation | None = None
    seconds: float = 0.0          # wall time of this run
    images_per_s: float = 0.0     # training images per second of training-step time, this run
    saved: bool = False           # a checkpoint was written at the end
    signal: int | None = None     # interrupted by: signal.SIGINT or signal.SIGTERM


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
        if int(np.prod(net.input_shape)) != int(np.prod(np.shape(data.train_x)[1:])):
            raise TrainingError(f"network {net.name!r} takes inputs of shape {net.input_shape}, the data set's "
                                f"images are {np.shape(data.train_x)[1:]}")
        top = max(int(data.train_y.max(initial=0)), int(data.test_y.max(initial=0)))
        if top >= net.classes:
            raise TrainingError(f"network {net.name!r} has {net.classes} outputs, the data set has label {top}")
        if len(data.train_y) == 0:
            raise TrainingError("no training examples")
        self.opt = optim.make(config.optimizer, net.params, config.lr)
        self.schedule = schedule.get(config.schedule)
        self.augment = augment.parse(config.augment)
        if self.augment and len(net.input_shape) != 3:
            raise TrainingError(f"augment {config.augment} moves images, but network {net.name!r} takes inputs of "
                                f"shape {net.input_shape}, not (height, width, channels)")
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
            if k not in MAY_CHANGE_ON_RESUME and saved.get(k) != mine[k]:
                raise CheckpointError(f"{path}: trained with {k.replace('_', '-')} {saved.get(k)}, not {mine[k]}; "
                                      "resume with the settings it began with, or start a new --checkpoint")
        self.epoch, self.batch, self.step = (_meta_count(ckpt, path, k) for k in ("epoch", "batch", "step"))
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
        if order.size == 0:  # saved after its last epoch: the next one, should --epochs ask for more
            self.rng_state, self.order = epoch_order(self.config.seed, self.epoch, n)
        elif order.shape != (n,):
            raise CheckpointError(f"{path}: its data order is for {order.size} training examples, this data "
                                  f"has {n}; resume on the same data, or start a new --checkpoint")
        elif not np.issubdtype(order.dtype, np.integer) or not np.array_equal(np.sort(order), np.arange(n)):
            raise CheckpointError(f"{path}: its data order is not an ordering of the {n} training examples (an "
                                  f"entry repeats or is out of range): the file was altered or damaged; "
                                  f"{ckpt_io.FIX}")
        else:
            self.order = order.astype(np.int64)
        self.resumed = True
        self.saved_at = (self.epoch, self.batch, self.step)

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
                "dtype": str(self.net.dtype), "mask_rng_state": self.mask_state}
        order = self.order if self.order is not None else np.zeros(0, np.int64)
        try:
            ckpt_io.save(self.checkpoint, Checkpoint(self.net.params, self.opt.state(), {"order": order}, meta,
                                                               self.net.state))
        except OSError as exc:
            raise CheckpointError(f"{self.checkpoint}: cannot write it ({exc.strerror or exc}); "
                                  f"{ckpt_io.write_advice(exc, self.checkpoint)}") from None
        self.saved_at = (self.epoch, self.batch, self.step)
        return True

    def _where(self, epoch=None, batch=None, step=None) -> str:
        epoch = self.epoch if epoch is None else epoch
        batch = self.batch if batch is None else batch
        step = self.step + batch - self.batch if step is None else step
        if batch == 0 and epoch > 0:
            return f"the end of epoch {epoch} (step {step})"
        return f"epoch {epoch + 1}, batch {batch} of {self.steps_per_epoch} (step {step})"

    def _kept(self) -> str:
        if self.checkpoint is None:
            return "no --checkpoint was given, so nothing is saved"
        if self.saved_at is None:
            return f"no checkpoint was written yet ({self.checkpoint} does not exist)"
        return f"{self.checkpoint} still holds {self._where(*self.saved_at)}, untouched"

    # -- running --------------------------------------------------------------------------
    def run(self) -> Outcome:
        """Train until config.epochs are done, Ctrl-C, or a non-finite loss."""
        cfg = self.config
        self._run = {"started": time.perf_counter(), "images": 0, "seconds": 0.0, "evaluation": None}
        with contextlib.ExitStack() as stack:
            metrics = stack.enter_context(open(self.metrics, "a" if self.resumed else "w")) if self.metrics else None
            interrupts = stack.enter_context(_Interrupts(hold=self.hold_signals))
            # overflow in a diverging step is reported once, as divergence, not as numpy's warnings
            stack.enter_context(np.errstate(over="ignore", invalid="ignore", divide="ignore"))
            self._interrupts = interrupts
            try:
                while self.epoch < cfg.epochs:
                    loss = self._train_epoch(interrupts, metrics)
                    if not math.isfinite(loss):
                        return self._ended("diverged", f"the loss is {loss} at {self._where(batch=self.batch + 1)}: "
                                           f"training stopped; {self._kept()}. Try a smaller --lr")
                    evaluation = evaluate(self.net, self.data.test_x, self.data.test_y, cfg.batch_size)
                    self._run["evaluation"] = evaluation
                    with interrupts.atomic():
                        record = self._end_epoch(evaluation, metrics)
                    self.log(f"epoch {record['epoch']}/{cfg.epochs}: train loss {record['train_loss']:.4f}, "
                             f"test loss {record['test_loss']:.4f}, test accuracy {record['test_accuracy']:.2%} "
                             f"({record['seconds']:.1f} s, {record['images_per_s']:.0f} img/s)")
                    if not math.isfinite(evaluation.loss) or not self._finite():
                        return self._ended("diverged", f"the weights are no longer finite at {self._where()}: "
                                           f"training stopped; {self._kept()}. Try a smaller --lr")
                    with interrupts.atomic():  # a signal during the save waits for it
                        saved = self.save()
                    if saved:
                        self.log(f"saved {self.checkpoint} at {self._where()}")
            except KeyboardInterrupt as exc:
                return self._interrupted(exc, interrupts, metrics)
        return self._ended("finished", f"finished {_count(cfg.epochs, 'epoch')} ({self.step} steps)",
                           self.saved_at is not None)

    def _interrupted(self, exc, interrupts, metrics) -> Outcome:
        """Save where the run stands (holding further signals until the file is written), or say which
        checkpoint stays the resume point."""
        sig = signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT
        what = "stopped by SIGTERM" if sig == signal.SIGTERM else "interrupted"
        where = self._where()
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
                        metrics.write(json.dumps({"event": "step", "epoch": self.epoch + 1, "batch": self.batch,
                                                  "step": self.step, "loss": loss,
                                                  "images_per_s": round(rate, 1)}) + "\n")
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
            metrics.write(json.dumps(record) + "\n")
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


# -- the command line's two jobs (scripts/train.py parses the flags) -------------------------
SETTINGS = ("network", "dataset", "optimizer", "lr", "batch_size", "epochs", "seed", "limit", "holdout", "test_limit",
            "schedule", "augment")


def _read_spec(path):
    from ..compiler.spec import read

    spec = read(Path(path))
    return spec, Path(path).read_bytes()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _describe_net(net, spec_file, config: Config) -> str:
    count = sum(int(v.size) for ps in net.params.values() for v in ps.values())
    return (f"network: {net.name} of {spec_file} ({count:,} parameters, {net.dtype}); {config.optimizer} "
            f"lr {config.lr:g}{'' if config.schedule == 'constant' else f' ({config.schedule})'}, batch "
            f"{config.batch_size}, {_count(config.epochs, 'epoch')}, seed {config.seed}"
            f"{'' if config.augment == 'none' else f', augment {config.augment}'}")


PLOT_FORMATS = ("png", "pdf", "svg", "svgz", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp", "pgf", "raw", "rgba")


def _check_checkpoint_folder(path, log) -> None:
    """The checkpoint's folder exists and takes a file now, not after an epoch; unfinished files of
    killed saves beside it are removed."""
    try:
        ckpt_io.check_writable(path)
    except OSError as exc:
        raise TrainingError(f"--checkpoint {path}: cannot write in {Path(path).resolve().parent} "
                            f"({exc.strerror or exc}); {ckpt_io.write_advice(exc, path)}") from None
    gone = ckpt_io.remove_unfinished(path)
    if gone:
        log(f"removed {_count(len(gone), 'unfinished checkpoint file')} left by a killed save "
            f"({', '.join(name for name, _ in gone)}; {sum(n for _, n in gone) / 1e6:.1f} MB)")


def _check_plot(path, warn):
    """The --plot path: a format matplotlib writes, in a folder that takes a file; checked before training.
    None (with a warning) when matplotlib is not installed."""
    import importlib.util

    suffix = Path(path).suffix.lower().lstrip(".")
    formats = PLOT_FORMATS
    have = importlib.util.find_spec("matplotlib") is not None
    if have:
        try:
            from matplotlib.backend_bases import FigureCanvasBase

            formats = tuple(FigureCanvasBase.get_supported_filetypes())
        except Exception:  # noqa: BLE001 -- a broken matplotlib install: our own list
            pass
    if suffix not in formats:
        what = f"'.{suffix}' is not an image format matplotlib writes" if suffix else "the name has no image format"
        raise TrainingError(f"--plot {path}: {what}; end it in .png, .pdf or .svg")
    folder = Path(path).resolve().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".plot.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise TrainingError(f"--plot {path}: cannot write in {folder} ({exc.strerror or exc}); give another "
                            "--plot path") from None
    if not have:
        warn(f"--plot {path}: matplotlib is not installed, so no plot; pip install -e '.[plot]' to get one "
             "(training goes on)")
        return None
    return path


def _check_batch(net, config: Config, data: Data, log) -> None:
    """Say when a batch is the whole training set; refuse one that cannot fit in memory."""
    if config.batch_size > len(data.train_y):
        log(f"batch {config.batch_size:,} is more than the {len(data.train_y):,} training examples: each step "
            "takes all of them")
    _check_memory(net, config, len(data.train_y), len(data.test_y))


def _draw_plot(history, path, title, log, warn) -> None:
    """The plot after training; a failure to draw it is a warning: it never costs the run."""
    try:
        plot_history(history, path, title)
        log(f"plot: {path}")
    except Exception as exc:  # noqa: BLE001 -- the checkpoint is saved; the plot is a view of it
        warn(f"--plot {path}: could not draw it ({one_line(exc) or type(exc).__name__}); the run itself is kept")


def _check_memory(net, config: Config, n_train: int, n_test: int, training: bool = True) -> None:
    """Refuse a batch that cannot fit in memory before the first step, from the compiled shapes."""
    from ..compiler import memory

    have = memory.available()
    batch = max(1, min(config.batch_size, max(n_train if training else n_test, 1)))
    if have is None:
        return
    if training:
        need = memory.training_need(net, batch, config.optimizer)
    else:
        need = memory.inference_need(net, batch)
    if need <= have:
        return
    examples = f"{batch:,} examples a step" + (" (every training example)" if batch < config.batch_size else "")
    one = memory.training_need(net, 1, config.optimizer if training else None)
    per = (need - one) / (batch - 1) if batch > 1 else 0  # what each further example adds
    fits = 1 + int((have - one) // per) if per and have > one else 0
    fix = f"use --batch-size {fits} or less" if fits >= 1 else "the network itself does not fit: make it smaller"
    raise TrainingError(f"--batch-size {config.batch_size}: {'training' if training else 'evaluating'} "
                        f"{config.network!r} on {examples} needs about {memory.human(need)} of memory, but "
                        f"{memory.human(have)} are available; {fix}")


def train_main(o, resume_command: str = "", log=print, warn=None) -> int:
    """Train as the options `o` say (the flags of scripts/train.py); the exit code.

    Raises SpecError, NotationError, DataError, CheckpointError or TrainingError for bad input."""
    from ..compiler.network import load as load_network

    warn = warn or (lambda line: print(line, file=sys.stderr))
    spec, spec_bytes = _read_spec(o.spec)
    ckpt = _resume_point(o)
    given = {k: getattr(o, k, None) for k in SETTINGS}
    network = given["network"] or spec.network
    config = make_config(spec.training_for(network), network, given, ckpt.meta["config"] if ckpt else None)
    if config.network not in spec.networks:
        raise spec.error("network", f"{config.network!r} not found, valid options are {sorted(spec.networks)}")
    meaning = ckpt_io.meaning(spec, config.network)
    digest, legacy = ckpt_io.fingerprint(meaning), ckpt_io.spec_hash(spec_bytes, config.network)
    if ckpt is not None:
        ckpt_io.check_spec(ckpt, o.checkpoint, digest, str(o.spec), config.network, meaning, legacy)
    plot = _check_outputs(o, log, warn)
    data = load_data(config, o.data_dir, download=not getattr(o, "no_download", False), log=log)
    log(f"data: {data.about}")
    net = load_network(spec, network=config.network, seed=config.seed, optimize=getattr(o, "optimize", None))
    log(_describe_net(net, o.spec, config))
    _check_batch(net, config, data, log)
    trainer = Trainer(net, data, config, spec_hash=digest, spec_file=str(o.spec), checkpoint=o.checkpoint,
                      metrics=o.metrics, progress=getattr(o, "progress", True), log=log, meaning=meaning,
                      legacy_hash=legacy)
    trainer.hold_signals = getattr(o, "hold_signals", False)
    if ckpt is not None:
        trainer.restore(ckpt, o.checkpoint)
        if trainer.epoch >= config.epochs:
            last = trainer.history[-1] if trainer.history else {}
            log(f"{o.checkpoint}: all {_count(trainer.epoch, 'epoch')} done (test accuracy "
                f"{last.get('test_accuracy', float('nan')):.2%}); pass --epochs N with N > {trainer.epoch} to train "
                "further, or --eval-only to evaluate it")
            return 0
        log(f"resuming from {o.checkpoint} at {trainer._where()}")
    log(f"checkpoint: {o.checkpoint} (each epoch and on Ctrl-C)" if o.checkpoint
        else "checkpoint: none (--checkpoint PATH keeps one each epoch and on Ctrl-C)")
    if getattr(o, "plans", False):
        log(net.plans(config.batch_size))
    outcome = trainer.run()
    if plot and trainer.history:
        _draw_plot(trainer.history, plot, f"{config.network} on {config.dataset}", log, warn)
    return _ending(outcome, trainer, resume_command, log, warn)


def _resume_point(o):
    """The checkpoint to resume, with --resume; else make sure no checkpoint would be overwritten."""
    if o.resume:
        if not o.checkpoint:
            raise TrainingError("--resume needs --checkpoint PATH, the checkpoint to continue")
        ckpt = ckpt_io.load(o.checkpoint)
        if not isinstance(ckpt.meta.get("config"), dict):
            raise CheckpointError(f"{o.checkpoint}: it holds no training settings; {ckpt_io.FIX}")
        return ckpt
    if o.checkpoint and Path(o.checkpoint).exists():
        raise TrainingError(f"{o.checkpoint} already exists; pass --resume to continue it, or delete it, "
                            "or give another --checkpoint path")
    return None


def _check_outputs(o, log, warn):
    """Every file the run will write can be written, before any training: checkpoint, metrics, plot.
    The plot's path, or None."""
    if o.checkpoint:
        _check_checkpoint_folder(o.checkpoint, log)
    if o.metrics:
        try:
            Path(o.metrics).parent.mkdir(parents=True, exist_ok=True)
            open(o.metrics, "a").close()
        except OSError as exc:
            raise TrainingError(f"--metrics {o.metrics}: cannot write it ({exc.strerror or exc})") from None
    plot = getattr(o, "plot", None)
    return _check_plot(plot, warn) if plot else None


def _ending(outcome, trainer, resume_command, log, warn) -> int:
    """The run's last line and its exit code: 0 done, 1 diverged, 130 or 143 interrupted."""
    if outcome.status == "interrupted":
        hint = f"; resume with: {resume_command}" if outcome.saved and resume_command else ""
        warn(outcome.message + hint)
        return 143 if outcome.signal == signal.SIGTERM else 130
    if outcome.status == "diverged":
        warn(outcome.message)
        return 1
    ev = outcome.evaluation
    log(f"done: test accuracy {ev.accuracy:.2%} (loss {ev.loss:.4f}, {ev.count} test examples) after "
        f"{_count(trainer.epoch, 'epoch')}; wall time {outcome.seconds:.1f} s, "
        f"{outcome.images_per_s:.0f} images/s training")
    return 0


# training flags
EVAL_IGNORES = ("optimizer", "lr", "epochs", "seed", "limit", "metrics", "plot", "schedule", "augment")


def _meta_count(ckpt, path, key) -> int:
    """A whole number >= 0 from a checkpoint's meta record, or one CheckpointError line."""
    value = ckpt.meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CheckpointError(f"{path}: its {key} is {value!r}, not a whole number: the file was damaged or "
                              f"altered; {ckpt_io.FIX}")
    return value


def eval_main(o, log=print) -> int:
    """Accuracy and confusion matrix of a checkpoint on the test set; the exit code."""
    from ..compiler.network import load as load_network

    if not o.checkpoint:
        raise TrainingError("--eval-only needs --checkpoint PATH, the checkpoint to evaluate")
    ignored = [f"--{k.replace('_', '-')}" for k in EVAL_IGNORES if getattr(o, k, None) not in (None, False)]
    if ignored:
        raise TrainingError(f"--eval-only evaluates the checkpoint as it was trained; {', '.join(ignored)} "
                            f"{'does' if len(ignored) == 1 else 'do'} not apply: drop "
                            f"{'it' if len(ignored) == 1 else 'them'} (or train with --resume)")
    ckpt = ckpt_io.load(o.checkpoint)
    saved = ckpt.meta.get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{o.checkpoint}: it holds no training settings; {ckpt_io.FIX}")
    spec, spec_bytes = _read_spec(o.spec)
    network = saved.get("network")
    if not isinstance(network, str) or network not in spec.networks:
        raise CheckpointError(f"{o.checkpoint}: it was trained as network {network!r}, which {o.spec} does not "
                              f"define (it has {sorted(spec.networks)}); give the --spec it was trained with")
    if o.network and o.network != network:
        raise TrainingError(f"{o.checkpoint} holds network {network!r}, not {o.network!r}; drop --network")
    meaning = ckpt_io.meaning(spec, network)
    ckpt_io.check_spec(ckpt, o.checkpoint, ckpt_io.fingerprint(meaning), str(o.spec), network, meaning,
                       ckpt_io.spec_hash(spec_bytes, network))
    epoch, step = (_meta_count(ckpt, o.checkpoint, k) for k in ("epoch", "step"))
    overrides = {k: getattr(o, k) for k in ("dataset", "batch_size", "holdout", "test_limit")
                 if getattr(o, k, None) is not None}
    config = make_config({}, network, {}, {**saved, **overrides})
    data = load_data(config, o.data_dir, download=not getattr(o, "no_download", False), log=log, train=False)
    log(f"data: {data.about}")
    net = load_network(spec, network=network, seed=config.seed, optimize=getattr(o, "optimize", None))
    try:
        net.set_params(ckpt.params)
        if net.state_shapes:
            net.set_state(ckpt.state)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{o.checkpoint}: {exc}; {ckpt_io.FIX}") from None
    bad = [f"{layer}.{p}" for layer, ps in net.params.items() for p, v in ps.items() if not np.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{o.checkpoint}: its weights are not finite (NaN or infinite) in {', '.join(bad)}; "
                              "training never saves such weights, so the file was damaged or altered; "
                              f"{ckpt_io.FIX}")
    _check_memory(net, config, 0, len(data.test_y), training=False)
    if getattr(o, "plans", False):
        log(net.plans(min(config.batch_size, max(len(data.test_y), 1))))
    log(f"checkpoint: {o.checkpoint}: {network}, {_count(epoch, 'epoch')}, step {step} "
        f"({config.optimizer} lr {config.lr:g}, batch {saved.get('batch_size')}, trained on {saved.get('dataset')})")
    t = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        ev = evaluate(net, data.test_x, data.test_y, config.batch_size)
    log(f"test accuracy {ev.accuracy:.2%} ({int(np.trace(ev.confusion))} of {ev.count}), loss {ev.loss:.4f} "
        f"({time.perf_counter() - t:.1f} s)")
    log(format_confusion(ev.confusion, data.classes))
    return 0
