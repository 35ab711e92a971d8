#!/usr/bin/env python3
"""Train a network of layers.yaml on MNIST or Fashion-MNIST; checkpoints resume exactly.

    python3 scripts/train.py                                         # the spec's training: defaults
    python3 scripts/train.py --network softmax-regression --epochs 1
    python3 scripts/train.py --checkpoint runs/seven.npz             # Ctrl-C saves; add --resume to go on
    python3 scripts/train.py --checkpoint runs/seven.npz --eval-only # accuracy and confusion matrix

Bad input (spec, equations, data, checkpoint, flags) is one line on stderr and exit code 2; a
non-finite loss exits 1, Ctrl-C 130 and SIGTERM 143 (both save first). The loop itself is
engine/training.py.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from _shared import Parser, starting  # noqa: E402

with starting("train.py"):  # Ctrl-C while numpy and the engine load: one line, not a traceback
    from engine import UserError, training
    from engine.data import datasets
    from engine.training import optim, schedule


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="train.py", description=__doc__.split("\n\n")[0],
               epilog="Unset settings come from the spec's training: section (or, with --resume, from the "
                      "checkpoint, which a given setting may not contradict except --epochs).")
    run = p.add_argument_group("what to train")
    run.add_argument("--spec", default=str(ROOT / "layers.yaml"), metavar="PATH",
                     help="the spec file (default: layers.yaml at the repository's root)")
    run.add_argument("--network", metavar="NAME", help="which network of the spec (default: the spec's network:)")
    run.add_argument("--optimizer", choices=sorted(optim.OPTIMIZERS), help="update rule (default: training: optimizer)")
    run.add_argument("--lr", type=float, help="learning rate (default: training: lr)")
    run.add_argument("--batch-size", type=int, metavar="N", help="examples per update (default: training: batch_size)")
    run.add_argument("--epochs", type=int, metavar="N", help="passes over the training set (default: training: "
                     "epochs); with --resume, more than the checkpoint's trains further")
    run.add_argument("--schedule", choices=sorted(schedule.SCHEDULES), help="the learning rate over the run: "
                     "constant, or cosine (from --lr down to 0 over --epochs) (default: training: schedule)")
    run.add_argument("--augment", metavar="NAMES", help="change each training image at random: flip (mirror), "
                     "shift (up to 2 pixels), both joined by a comma, or none (default: training: augment)")
    run.add_argument("--seed", type=int, metavar="N", help="seeds the initial weights and each epoch's data order "
                     "(default: training: seed)")
    data = p.add_argument_group("data")
    data.add_argument("--dataset", choices=sorted(datasets.DATASETS), help="data set (default: training: dataset)")
    data.add_argument("--data-dir", metavar="DIR", help="directory holding the data set's .gz files (else "
                      "$EINSUM_DATA_DIR, /usr/share/datasets, the download cache)")
    data.add_argument("--no-download", action="store_true", help="never download; fail if the files are not found")
    data.add_argument("--limit", type=int, metavar="N", help="train on the first N training examples")
    data.add_argument("--test-limit", type=int, metavar="N", help="test on the first N test examples")
    data.add_argument("--holdout", type=int, metavar="N",
                      help="use the test split alone: hold N of its examples out (a fixed shuffle) for testing and "
                           "train on the rest (for copies with only the test split, e.g. ../shared/datasets/mnist)")
    out = p.add_argument_group("checkpoints and output")
    out.add_argument("--checkpoint", metavar="PATH", help="an .npz written at the end of every epoch and on Ctrl-C "
                     "(atomically); refused if it exists, unless --resume (default: a new "
                     "runs/<network>-<date>-<time>.npz, so no run is lost)")
    out.add_argument("--no-checkpoint", action="store_true", help="keep no checkpoint at all")
    out.add_argument("--resume", action="store_true", help="continue the --checkpoint run exactly where it stopped")
    out.add_argument("--metrics", metavar="PATH", help="JSON lines: one per step, one per epoch (appended on --resume)")
    out.add_argument("--plans", action="store_true", help="print every compiled contraction (net.plans) first")
    out.add_argument("--optimize", metavar="NAME", help="opt_einsum's path optimizer for every contraction "
                     "(default: training: optimize; e.g. auto, greedy, optimal, dp)")
    out.add_argument("--plot", metavar="PATH", help="an image of loss and accuracy per epoch (needs matplotlib: "
                     "pip install -e '.[plot]')")
    out.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    out.add_argument("--eval-only", action="store_true", help="evaluate --checkpoint on the test set (accuracy, "
                     "confusion matrix) with its own settings; --dataset, --holdout, --test-limit, --batch-size "
                     "may override")
    return p


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
    """A fresh path under runs/ for a run that named none: every run keeps what it learned."""
    name = o.network or "train"
    return str(Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.npz")


def _terminate(signum, frame):
    raise training.Terminated


def main(argv=None, script=False) -> int:
    """The exit code.  script=True (run as a program): once interrupted, further Ctrl-C and SIGTERM
    are ignored until the process exits, so a hammered Ctrl-C cannot cut the last message short."""
    argv = sys.argv[1:] if argv is None else list(argv)
    o = parser().parse_args(argv)
    o.hold_signals = script
    if o.no_checkpoint:
        o.checkpoint = None
    elif not (o.checkpoint or o.resume or o.eval_only):
        o.checkpoint = default_checkpoint(o)
        argv = argv + ["--checkpoint", o.checkpoint]
    main_thread = threading.current_thread() is threading.main_thread()
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
    if main_thread and old[signal.SIGTERM] != signal.SIG_IGN:
        signal.signal(signal.SIGTERM, _terminate)  # SIGTERM is Ctrl-C here
    try:
        if o.eval_only:
            if o.resume:
                raise training.TrainingError("--eval-only and --resume do not go together")
            return training.eval_main(o)
        return training.train_main(o, resume_command(argv))
    except UserError as exc:  # every bad input: spec, equation, data, checkpoint, setting
        print(f"train.py: {exc.one_line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # outside the training loop (which saves and reports itself)
        if script and main_thread:
            for s in old:
                signal.signal(s, signal.SIG_IGN)
        print(f"train.py: {interrupted_outside(o, argv, exc)}", file=sys.stderr)
        return 143 if isinstance(exc, training.Terminated) else 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        if main_thread and not script:
            for s, handler in old.items():
                signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def interrupted_outside(o, argv, exc) -> str:
    """What a signal outside the training loop leaves: the checkpoint on disk, if any, is the resume point."""
    what = "stopped by SIGTERM" if isinstance(exc, training.Terminated) else "interrupted"
    if o.checkpoint and not o.eval_only and Path(o.checkpoint).is_file():
        return (f"{what}; {o.checkpoint} holds the last save (this stop wrote nothing to it); resume with: "
                f"{resume_command(argv)}")
    return f"{what}; nothing was saved by this run"


if __name__ == "__main__":
    try:
        code = main(script=True)
    except KeyboardInterrupt as exc:  # while the flags were read, before anything ran
        print(f"train.py: {'stopped by SIGTERM' if isinstance(exc, training.Terminated) else 'interrupted'}; "
              "nothing was saved by this run", file=sys.stderr)
        code = 143 if isinstance(exc, training.Terminated) else 130
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # all is said: a late Ctrl-C has nothing left to stop
    sys.exit(code)
