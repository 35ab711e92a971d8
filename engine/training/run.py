"""A whole run from a spec file: train (or resume) a network, or evaluate a checkpoint.

What a command line does, as functions of named options rather than flags: scripts/train.py maps
its flags to `Options` and the settings named in these messages back to its flags.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from notation.runtime import environment

from ..compiler.spec import fitted
from ..data.arrays import own_data
from ..data.examples import Data, load_data
from ..errors import CheckpointError, TrainingError, named
from . import checkpoint as ckpt_io
from . import checks, outputs, restore, schedule
from .evaluation import Evaluation, evaluate, format_confusion
from .loop import Outcome, Trainer, count
from .restore import read_spec, recorded_algorithms
from .settings import Config, make_config

EVAL_IGNORES = ("optimizer", "lr", "epochs", "seed", "limit", "schedule", "augment")  # training settings
EVAL_OVERRIDES = ("dataset", "batch_size", "holdout", "test_limit", "test_augment")  # what an evaluation may change


@dataclasses.dataclass
class Options:
    """What a run is given: the spec, the settings (None: from the spec or the checkpoint), and where it
    reads and writes."""

    spec: str | Path = "layers.yaml"
    settings: dict = dataclasses.field(default_factory=dict)  # network and training settings, by name
    checkpoint: str | Path | None = None  # written at the end of every epoch and on Ctrl-C
    resume: bool = False                  # continue `checkpoint` exactly where it stopped
    metrics: str | Path | None = None     # JSON lines: one per step, one per epoch
    data: str | Path | Data | None = None  # the run's own data: an .npz, a folder of class folders, or Data
    data_dir: str | Path | None = None
    download: bool = True
    progress: bool = True                 # progress bars
    plans: bool = False                   # log every compiled contraction first
    optimize: str | None = None           # opt_einsum's path optimizer, instead of the spec's
    hold_signals: bool = False            # once interrupted, ignore further signals until the process exits


@dataclasses.dataclass
class Trained:
    """How `train` ended: the outcome (None: the checkpoint had all its epochs already) and the trainer."""

    outcome: Outcome | None
    trainer: Trainer
    config: Config


def describe(net, spec_file, config: Config) -> str:
    """One line: the network, its size and the settings it trains with."""
    size = sum(int(v.size) for ps in net.params.values() for v in ps.values())
    rate = f"lr {config.lr:g}" + ("" if config.schedule == "constant" else f" ({config.schedule})")
    rate += f" after a warm-up of {count(config.warmup, 'epoch')}" if config.warmup else ""
    rate += f", weight decay {config.weight_decay:g}" if config.weight_decay else ""
    return (f"network: {net.name} of {spec_file} ({size:,} parameters, {net.dtype}); {config.optimizer} {rate}, "
            f"batch {config.batch_size}, {count(config.epochs, 'epoch')}, seed {config.seed}"
            f"{'' if config.augment == 'none' else f', augment {config.augment}'}"
            f"{'' if config.test_augment == 'none' else ', test images also seen flipped'}")


def train(o: Options, log=print, warn=None, data=None) -> Trained:
    """Train (or resume) as `o` says (`data`: the run's own data, as Options.data). Raises a UserError (one
    line) for bad input, before any training. The checkpoint and metrics paths are claimed for the run: a
    second run given one is refused."""
    if data is not None:
        o = dataclasses.replace(o, data=data)
    environment.check()
    outputs.check_distinct({"spec": o.spec, "checkpoint": o.checkpoint, "metrics": o.metrics})
    with outputs.claimed({"checkpoint": o.checkpoint, "metrics": o.metrics}):
        return _train(o, log, warn)


def _train(o: Options, log, warn) -> Trained:
    from ..compiler.network import load as load_network

    spec, spec_bytes = read_spec(o.spec)
    ckpt = _resume_point(o)
    if o.metrics:
        outputs.check_metrics(o.metrics, o.resume)
    given = dict(o.settings)
    network = given.get("network") or spec.network
    _check_source(o, given, ckpt)
    config = make_config(spec.training_for(network), network, given, ckpt.meta["config"] if ckpt else None)
    if config.network not in spec.networks:
        raise spec.error("network", f"{config.network!r} not found, valid options are {sorted(spec.networks)}")
    own = None
    if o.data is not None:  # the network's `input: auto` and `classes` come from it
        config = dataclasses.replace(config, dataset=None)
        own = own_data(o.data, config.limit, config.test_limit, log)
        if ckpt is not None:  # before the network's meaning, which other data would change too
            checks.same_data(o.checkpoint, ckpt.meta, own)
        spec = fitted(spec, config.network, own.shape, len(own.classes))
    meaning = ckpt_io.meaning(spec, config.network)
    digest, legacy = ckpt_io.fingerprint(meaning), ckpt_io.spec_hash(spec_bytes, config.network)
    if ckpt is not None:
        ckpt_io.check_spec(ckpt, o.checkpoint, digest, str(o.spec), config.network, meaning, legacy)
    _check_outputs(o, log)
    net = load_network(spec, network=config.network, seed=config.seed, optimize=o.optimize,
                       algorithms=recorded_algorithms(ckpt, o.checkpoint))  # every setting is checked before the data
    data = own if own is not None else load_data(config, o.data_dir, download=o.download, log=log)
    log(f"data: {data.about}")
    log(describe(net, o.spec, config))
    _check_batch(net, config, data, log)
    trainer = Trainer(net, data, config, spec_hash=digest, spec_file=str(o.spec), checkpoint=o.checkpoint,
                      metrics=o.metrics, progress=o.progress, log=log, meaning=meaning, legacy_hash=legacy)
    trainer.hold_signals = o.hold_signals
    trainer.warn = warn or trainer.warn
    if o.checkpoint:
        _check_room(trainer, o.checkpoint)
    if ckpt is not None:
        trainer.restore(ckpt, o.checkpoint)
        if trainer.epoch >= config.epochs:
            last = trainer.history[-1] if trainer.history else {}
            further = (f"its {config.schedule} schedule was planned over them, so it trains no further: start a new "
                       f"{named('checkpoint')} to train longer" if config.schedule in schedule.OVER_EPOCHS else
                       f"give {named('epochs')} N with N > {trainer.epoch} to train further")
            log(f"{o.checkpoint}: all {count(trainer.epoch, 'epoch')} done (test accuracy "
                f"{last.get('test_accuracy', float('nan')):.2%}); {further}, or {named('eval_only')} to evaluate it")
            return Trained(None, trainer, config)
        log(f"resuming from {o.checkpoint} at {trainer.where()}")
    log(f"checkpoint: {o.checkpoint} (each epoch and on Ctrl-C)" if o.checkpoint
        else f"checkpoint: none ({named('checkpoint')} PATH keeps one each epoch and on Ctrl-C)")
    if o.plans:
        log(net.plans(config.batch_size))
    return Trained(trainer.run(), trainer, config)


def _check_source(o: Options, given: dict, ckpt) -> None:
    """Own data (`data`) and a named data set (`dataset`, `holdout`, `data_dir`) do not mix, and a resume
    reads the kind of data its checkpoint was trained on."""
    if o.data is not None:
        clash = [named(k) for k in ("dataset", "holdout") if given.get(k) is not None] + \
            ([named("data_dir")] if o.data_dir is not None else [])
        if clash:
            raise TrainingError(f"{named('data')} is the run's own data, and {', '.join(clash)} belong"
                                f"{'s' if len(clash) == 1 else ''} to a named data set: give one or the other")
    if ckpt is None:
        return
    saved = ckpt.meta["config"].get("dataset", "fashion-mnist")
    if saved is None and o.data is None:
        raise TrainingError(f"{o.checkpoint}: trained on its own data ({ckpt.meta.get('data_name', 'arrays')}); give "
                            f"{named('data')} with that data to resume it")
    if saved is not None and o.data is not None:
        raise TrainingError(f"{o.checkpoint}: trained on the data set {saved}, not on {named('data')}; resume without "
                            f"{named('data')}, or start a new {named('checkpoint')}")


def _resume_point(o: Options):
    """The checkpoint to resume, with o.resume; else make sure no checkpoint would be overwritten."""
    if o.resume:
        if not o.checkpoint:
            raise TrainingError(f"{named('resume')} needs {named('checkpoint')} PATH, the checkpoint to continue")
        ckpt = ckpt_io.load(o.checkpoint)
        if not isinstance(ckpt.meta.get("config"), dict):
            raise CheckpointError(f"{o.checkpoint}: it holds no training settings; {ckpt_io.FIX}")
        return ckpt
    if o.checkpoint and Path(o.checkpoint).exists():
        raise TrainingError(f"{o.checkpoint} already exists; pass {named('resume')} to continue it, or delete it, "
                            f"or give another {named('checkpoint')} path")
    return None


def _check_outputs(o: Options, log) -> None:
    """Every file the run will write can be written, before any training: the checkpoint and the metrics."""
    if o.checkpoint:
        _check_checkpoint_folder(o.checkpoint, log)
    if o.metrics:
        try:
            Path(o.metrics).parent.mkdir(parents=True, exist_ok=True)
            open(o.metrics, "a").close()
        except OSError as exc:
            raise TrainingError(f"{named('metrics')} {o.metrics}: cannot write it ({exc.strerror or exc})") from None


def _check_room(trainer, path) -> None:
    """Refuse a checkpoint folder without room for one checkpoint of this run (its arrays are known now),
    rather than find out after an epoch."""
    size = ckpt_io.size_estimate(trainer.net.params, trainer.opt.state(), trainer.net.state,
                                 len(trainer.data.train_y), trainer.config.epochs)
    free = ckpt_io.free_bytes(path)
    if free is not None and free < size:
        raise TrainingError(f"{named('checkpoint')} {path}: {Path(path).resolve().parent} has "
                            f"{free / 1e6:.1f} MB free, and one checkpoint of this run takes about "
                            f"{size / 1e6:.1f} MB; free some space or give another {named('checkpoint')} path")


def _check_checkpoint_folder(path, log) -> None:
    """The checkpoint's folder exists and takes a file now, not after an epoch; unfinished files of
    killed saves beside it are removed."""
    try:
        ckpt_io.check_writable(path)
    except OSError as exc:
        raise TrainingError(f"{named('checkpoint')} {path}: cannot write in {Path(path).resolve().parent} "
                            f"({exc.strerror or exc}); {ckpt_io.write_advice(exc, path)}") from None
    gone = ckpt_io.remove_unfinished(path)
    if gone:
        log(f"removed {count(len(gone), 'unfinished checkpoint file')} left by a killed save "
            f"({', '.join(name for name, _ in gone)}; {sum(n for _, n in gone) / 1e6:.1f} MB)")


def _check_batch(net, config: Config, data: Data, log) -> None:
    """Say when a batch is the whole training set; refuse one that cannot fit in memory."""
    if config.batch_size > len(data.train_y):
        log(f"batch {config.batch_size:,} is more than the {len(data.train_y):,} training examples: each step "
            "takes all of them")
    _check_memory(net, config, len(data.train_y), len(data.test_y))


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
    fix = (f"use {named('batch_size')} {fits} or less" if fits >= 1
           else "the network itself does not fit: make it smaller")
    raise TrainingError(f"{named('batch_size')} {config.batch_size}: {'training' if training else 'evaluating'} "
                        f"{config.network!r} on {examples} needs about {memory.human(need)} of memory, but "
                        f"{memory.human(have)} are available; {fix}")


def evaluate_checkpoint(o: Options, log=print) -> Evaluation:
    """Accuracy, loss and confusion matrix of o.checkpoint on the test set, logged and returned (the
    Evaluation a trained run's outcome carries)."""

    if not o.checkpoint:
        raise TrainingError(f"{named('eval_only')} needs {named('checkpoint')} PATH, the checkpoint to evaluate")
    ignored = [named(k) for k in EVAL_IGNORES if o.settings.get(k) is not None] + ([named("metrics")] if o.metrics
                                                                                   else [])
    if ignored:
        raise TrainingError(f"{named('eval_only')} evaluates the checkpoint as it was trained; {', '.join(ignored)} "
                            f"{'does' if len(ignored) == 1 else 'do'} not apply: drop "
                            f"{'it' if len(ignored) == 1 else 'them'} (or train with {named('resume')})")
    environment.check()
    if Path(o.checkpoint).is_dir():
        raise CheckpointError(f"{o.checkpoint}: a folder, not a checkpoint; give the checkpoint's .npz file")
    if not Path(o.checkpoint).exists():
        raise CheckpointError(f"{o.checkpoint}: no such checkpoint (it does not exist); train one first with "
                              f"{named('checkpoint')} {o.checkpoint}, then evaluate it with {named('eval_only')}")
    ckpt = restore.load_checkpoint(o.checkpoint)
    saved = ckpt.meta["config"]
    if saved.get("dataset") is None and o.data is None:
        raise TrainingError(f"{o.checkpoint}: trained on its own data ({ckpt.meta.get('data_name', 'arrays')}); give "
                            f"{named('data')} PATH to evaluate it on (that data, or data of its shape and classes)")
    back = restore.restored(ckpt, o.checkpoint, o.spec, o.settings.get("network"), o.optimize)
    net, network = back.net, back.net.name
    epoch, step = (ckpt_io.meta_count(ckpt, o.checkpoint, k) for k in ("epoch", "step"))
    overrides = {k: o.settings[k] for k in EVAL_OVERRIDES if o.settings.get(k) is not None}
    if o.data is not None:
        _check_source(o, overrides, None)
        config = make_config({}, network, {}, {**saved, **overrides, "dataset": None})
        data = own_data(o.data, None, config.test_limit, log)
    else:
        config = make_config({}, network, {}, {**saved, **overrides})
        data = load_data(config, o.data_dir, download=o.download, log=log, train=False)
    log(f"data: {data.about}")
    checks.fits(net, data.test_x, data.test_y, data.name)
    _check_memory(net, config, 0, len(data.test_y), training=False)
    if o.plans:
        log(net.plans(min(config.batch_size, max(len(data.test_y), 1))))
    log(f"checkpoint: {o.checkpoint}: {network}, {count(epoch, 'epoch')}, step {step} "
        f"({config.optimizer} lr {config.lr:g}, batch {saved.get('batch_size')}, trained on "
        f"{saved.get('dataset') or ckpt.meta.get('data_name')})")
    t = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        ev = evaluate(net, data.test_x, data.test_y, config.batch_size, config.test_augment)
    seen = "" if config.test_augment == "none" else ", each image also seen flipped"
    log(f"test accuracy {ev.accuracy:.2%} ({int(np.trace(ev.confusion))} of {ev.count}{seen}), loss {ev.loss:.4f} "
        f"({time.perf_counter() - t:.1f} s)")
    log(format_confusion(ev.confusion, data.classes))
    return ev
