#!/usr/bin/env python3
"""Train a network of layers.yaml on MNIST, Fashion-MNIST or your own data; checkpoints resume exactly.

    python3 scripts/train.py                                         # the spec's training: defaults
    python3 scripts/train.py --network softmax-regression --epochs 1
    python3 scripts/train.py --data photos/                          # a folder of class folders, or an .npz
    python3 scripts/train.py --checkpoint runs/seven.npz             # Ctrl-C saves; add --resume to go on
    python3 scripts/train.py --checkpoint runs/seven.npz --eval-only # accuracy and confusion matrix

Bad input (spec, equations, data, checkpoint, flags, environment variables) is one line on stderr and
exit code 2; a non-finite loss exits 1, Ctrl-C 130, SIGTERM 143 and SIGHUP 129 (each saves first).
Output that cannot be written (a closed pipe) is dropped and the run goes on. This script owns the
command line (every flag, the plot); the run itself is engine/training/run.py.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from _shared import Parser, go_on, starting, unbreakable  # noqa: E402

with starting("train.py", defer=__name__ == "__main__"):  # Ctrl-C while the engine loads: one line
    from engine import UserError, training
    from engine.errors import rename
    from engine.training import settings
    from engine.training.interrupts import STOPPING, exit_code, stopped_by
    from engine.training.outputs import check_distinct, lock_path

# the flag of each setting and run option the engine names (`lr` in its messages is --lr here)
FLAGS = {name: "--" + name.replace("_", "-") for name in (*settings.BY_NAME, *settings.RUN_OPTIONS)}
FLAGS.update(download="--no-download", progress="--no-progress")
METAVARS = {"lr": "RATE", "augment": "NAMES", "weight_decay": "FACTOR"}
GROUPS = {"what to train": ("optimizer", "lr", "batch_size", "epochs", "seed", "schedule", "warmup", "weight_decay",
                            "augment", "test_augment"),
          "data": ("dataset", "limit", "test_limit", "holdout")}


def flags(text) -> str:
    """An engine message as this command line says it: each setting it names as its flag."""
    return rename(text, FLAGS.get, FLAGS)


def _setting(group, name):
    """The flag of one setting of engine/training/settings.py, with its help and its spec default."""
    s = settings.BY_NAME[name]
    choices = settings.CHOICES.get(name)
    default = f" (default: training: {name})" if s.in_spec else ""
    metavar = None if choices else "N" if s.kind is int else METAVARS.get(name, name.upper())
    group.add_argument(FLAGS[name], type=s.kind, choices=choices() if choices else None, metavar=metavar,
                       help=s.help + default)


class _Parser(Parser):
    """The flags' parser: its one-line refusal is the run's last word (a signal after it changes nothing)."""

    def error(self, message):
        settled()
        super().error(message)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="train.py", description=__doc__.split("\n\n")[0],
               epilog="Unset settings come from the spec's training: section (or, with --resume, from the "
                      "checkpoint, which a given setting may not contradict except --epochs).")
    run = p.add_argument_group("what to train")
    run.add_argument("--spec", default=str(ROOT / "layers.yaml"), metavar="PATH",
                     help="the spec file (default: layers.yaml at the repository's root)")
    run.add_argument("--network", metavar="NAME", help="which network of the spec (default: the spec's network:)")
    for name in GROUPS["what to train"]:
        _setting(run, name)
    data = p.add_argument_group("data")
    data.add_argument("--data", metavar="PATH", help="your own data instead of --dataset: an .npz of x_train, y_train, "
                      "x_test, y_test (and classes), or a folder with one subfolder of images per class (train/ and "
                      "test/ where present, else 20%% of each class tests); images need Pillow: pip install "
                      "'.[images]'")
    for name in GROUPS["data"]:
        _setting(data, name)
    data.add_argument("--data-dir", metavar="DIR", help="directory holding the data set's .gz files (else "
                      "$EINSUM_DATA_DIR, /usr/share/datasets, the download cache)")
    data.add_argument("--no-download", dest="download", action="store_false",
                      help="never download; fail if the files are not found")
    out = p.add_argument_group("checkpoints and output")
    out.add_argument("--checkpoint", metavar="PATH", help="an .npz written at the end of every epoch and on Ctrl-C "
                     "(atomically); refused if it exists, unless --resume (default: a new "
                     "runs/<network>-<date>-<time>.npz, so no run is lost)")
    out.add_argument("--no-checkpoint", action="store_true", help="keep no checkpoint at all")
    out.add_argument("--resume", action="store_true", help="continue the --checkpoint run exactly where it stopped")
    out.add_argument("--metrics", metavar="PATH", help="JSON lines: one per step, one per epoch (appended on --resume)")
    out.add_argument("--plans", action="store_true", help="print every compiled contraction (net.plans) first")
    out.add_argument("--optimize", metavar="NAME", help=settings.BY_NAME["optimize"].help + " (default: training: "
                     "optimize)")
    out.add_argument("--plot", metavar="PATH", help="an image of loss and accuracy per epoch (needs matplotlib: "
                     "pip install -e '.[plot]')")
    out.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    out.add_argument("--eval-only", action="store_true", help="evaluate --checkpoint on the test set (accuracy, "
                     "confusion matrix) with its own settings; --dataset, --data, --holdout, --test-limit, "
                     "--batch-size may override")
    return p


def options(o, hold_signals=False) -> training.Options:
    """The engine's options for the parsed flags `o`."""
    given = {name: getattr(o, name) for name in ("network", *GROUPS["what to train"], *GROUPS["data"])}
    return training.Options(spec=o.spec, settings=given, checkpoint=o.checkpoint, resume=o.resume,
                            metrics=o.metrics, data=o.data, data_dir=o.data_dir, download=o.download,
                            progress=o.progress, plans=o.plans, optimize=o.optimize, hold_signals=hold_signals)


# -- the plot ---------------------------------------------------------------------------------
PLOT_FORMATS = ("png", "pdf", "svg", "svgz", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp", "pgf", "raw", "rgba")


def check_plot(path, warn):
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
        raise training.TrainingError(f"--plot {path}: {what}; end it in .png, .pdf or .svg")
    folder = Path(path).resolve().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".plot.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise training.TrainingError(f"--plot {path}: cannot write in {folder} ({exc.strerror or exc}); give "
                                     "another --plot path") from None
    if not have:
        warn(f"--plot {path}: matplotlib is not installed, so no plot; pip install -e '.[plot]' to get one "
             "(training goes on)")
        return None
    return path


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


def draw_plot(history, path, title, log, warn) -> None:
    """The plot after training; a failure to draw it is a warning: it never costs the run."""
    try:
        plot_history(history, path, title)
        log(f"plot: {path}")
    except Exception as exc:  # noqa: BLE001 -- the checkpoint is saved; the plot is a view of it
        warn(f"--plot {path}: could not draw it ({exc or type(exc).__name__}); the run itself is kept")


# -- the two jobs -----------------------------------------------------------------------------
def train_main(o, resume: str = "", log=print, warn=None, hold_signals=False) -> int:
    """Train as the flags `o` say; the exit code. Raises a UserError for bad input."""
    warn = warn or (lambda line: print(line, file=sys.stderr))
    if o.eval_only:
        if o.resume:
            raise training.TrainingError("--eval-only and --resume do not go together")
        if o.plot:
            raise training.TrainingError("--eval-only evaluates the checkpoint as it was trained; --plot does not "
                                         "apply: drop it (or train with --resume)")
        training.evaluate_checkpoint(options(o), log=log)
        return 0
    check_distinct({"spec": o.spec, "checkpoint": o.checkpoint, "metrics": o.metrics, "plot": o.plot})
    plot = check_plot(o.plot, warn) if o.plot else None
    done = training.train(options(o, hold_signals), log=log, warn=warn)
    if done.outcome is None:  # the checkpoint had all its epochs already
        return 0
    if plot and done.trainer.history:
        on = done.config.dataset or done.trainer.data.name
        draw_plot(done.trainer.history, plot, f"{done.config.network} on {on}", log, warn)
    return ending(done.outcome, done.trainer, resume, log, warn)


def ending(outcome, trainer, resume, log, warn) -> int:
    """The run's last line and its exit code: 0 done, 1 diverged, 130, 143 or 129 interrupted.  From
    here on a signal has nothing left to stop (`settled`)."""
    settled()
    if outcome.status == "interrupted":
        hint = f"; resume with: {resume}" if outcome.saved and resume else ""
        warn(outcome.message + hint)
        return 128 + (outcome.signal or signal.SIGINT)
    if outcome.status == "diverged":
        warn(outcome.message)
        return 1
    ev = outcome.evaluation
    log(f"done: test accuracy {ev.accuracy:.2%} (loss {ev.loss:.4f}, {ev.count} test examples) after "
        f"{trainer.epoch} epoch{'' if trainer.epoch == 1 else 's'}; wall time {outcome.seconds:.1f} s, "
        f"{outcome.images_per_s:.0f} images/s training")
    return 0


def resume_command(argv) -> str:
    """This command line again, with --resume, run by this same Python (the project's .venv's)."""
    args = list(argv) + ([] if "--resume" in argv else ["--resume"])
    return shlex.join([interpreter(), sys.argv[0] or "scripts/train.py", *args])


def interpreter() -> str:
    """How to name this Python in a command: python3 where that finds it (an activated .venv),
    else its path (relative when below the working directory: .venv/bin/python)."""
    exe = os.path.abspath(sys.executable or "python3")
    found = shutil.which("python3")
    if found and os.path.dirname(os.path.abspath(found)) == os.path.dirname(exe):
        return "python3"
    rel = os.path.relpath(exe)
    return exe if rel.startswith("..") else rel


def default_checkpoint(o) -> str:
    """A fresh path runs/<network>-<date>-<time>.npz for a run that named none: every run keeps what it
    learned (two runs started in the same second take two paths). A bad spec raises its SpecError."""
    from engine.compiler.spec import read

    network = o.network or read(Path(o.spec)).network
    name = re.sub(r"[^\w.-]+", "-", network) if isinstance(network, str) and network else "train"
    stem = Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = stem.with_suffix(".npz"), 1
    while path.exists() or lock_path(path).exists():
        n += 1
        path = stem.with_name(f"{stem.name}-{n}.npz")
    return str(path)


_settled = []  # not empty once the run's outcome is decided: a later signal has nothing left to stop


def settled() -> None:
    _settled.append(True)


def _stop(signum, frame):
    """Ctrl-C, SIGTERM and SIGHUP outside the training loop (which saves first): stop, unless all is done."""
    if not _settled:
        raise KeyboardInterrupt if signum == signal.SIGINT else training.Terminated(signum)


def main(argv=None, script=False) -> int:
    """The exit code.  script=True (run as a program): once interrupted, further Ctrl-C and SIGTERM
    are ignored until the process exits, so a hammered Ctrl-C cannot cut the last message short."""
    _settled.clear()
    argv = sys.argv[1:] if argv is None else list(argv)
    o = parser().parse_args(argv)
    if o.no_checkpoint:
        o.checkpoint = None
    main_thread = threading.current_thread() is threading.main_thread()
    old = {s: signal.getsignal(s) for s in STOPPING} if main_thread else {}
    for s, handler in old.items():
        if handler not in (signal.SIG_IGN, None) and (s != signal.SIGINT or handler == signal.default_int_handler):
            signal.signal(s, _stop)  # SIGTERM and SIGHUP are Ctrl-C here; ignored ones (nohup) stay ignored

    def log(line):
        print(flags(line))

    def warn(line):
        print(flags(line), file=sys.stderr)
    try:
        if not (o.no_checkpoint or o.checkpoint or o.resume or o.eval_only):
            o.checkpoint = default_checkpoint(o)  # reads the spec for its network's name
            argv = argv + ["--checkpoint", o.checkpoint]
        return train_main(o, resume_command(argv), log, warn, hold_signals=script)
    except UserError as exc:  # every bad input: spec, equation, data, checkpoint, setting
        settled()
        print(f"train.py: {flags(exc.one_line())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # outside the training loop (which saves and reports itself)
        settled()
        if script and main_thread:
            for s in old:
                signal.signal(s, signal.SIG_IGN)
        print(f"train.py: {interrupted_outside(o, argv, exc)}", file=sys.stderr)
        return exit_code(exc)
    finally:
        if main_thread and not script:
            for s, handler in old.items():
                signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def interrupted_outside(o, argv, exc) -> str:
    """What a signal outside the training loop leaves: the checkpoint on disk, if any, is the resume point."""
    what = stopped_by(exc)
    if o.checkpoint and not o.eval_only and Path(o.checkpoint).is_file():
        return (f"{what}; {o.checkpoint} holds the last save (this stop wrote nothing to it); resume with: "
                f"{resume_command(argv)}")
    return f"{what}; nothing was saved by this run"


if __name__ == "__main__":
    unbreakable()  # `| head -n 3`, a closed terminal: output is dropped, the run goes on and saves
    for s in STOPPING[1:]:  # SIGTERM or SIGHUP while the flags are read: one line, not a traceback
        if signal.getsignal(s) not in (signal.SIG_IGN, None):
            signal.signal(s, _stop)
    try:
        go_on()
        code = main(script=True)
    except KeyboardInterrupt as exc:  # while the flags were read, before anything ran
        settled()
        print(f"train.py: {stopped_by(exc)}; nothing was saved by this run", file=sys.stderr)
        code = exit_code(exc)
    except SystemExit as exc:  # --help, or a flag refused (its one line is out)
        settled()
        code = exc.code
    settled()  # all is said: a late signal has nothing left to stop
    for s in STOPPING:  # ignored, not handled: Python's exit would put back their default (a kill)
        signal.signal(s, signal.SIG_IGN)
    sys.exit(code)
