"""What the scripts share: a guarded start-up, argparse with one-line errors, and a timer.

Standard library only, so importing it is instant and cannot itself fail for want of a dependency.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import time
import warnings
from contextlib import contextmanager

_deferred = []  # a Ctrl-C that came between a script's imports and its main (see `starting`, `go_on`)


def _one_line_warnings() -> None:
    """The engine's warnings about a spec (a misspelt index) as one line each, `warning: ...`, without
    Python's file, line number and source line."""
    default = warnings.formatwarning

    def one_line(message, category, filename, lineno, line=None):
        if category.__name__ == "NotationWarning":
            return f"warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = one_line


_one_line_warnings()


@contextmanager
def starting(prog: str, defer: bool = False):
    """Around a script's heavy imports: a Ctrl-C (which an extension module may turn into an
    ImportError) or a missing dependency is one line and exit 130 or 2, not a traceback.

    defer=True (run as a program): a Ctrl-C after the imports, before `go_on()` inside main's
    own handling, is held rather than raised at module level, where nothing could catch it."""
    started = signal.getsignal(signal.SIGINT)
    stopped = []

    def stop(signum, frame):
        stopped.append(signum)
        raise KeyboardInterrupt

    mine = started == signal.default_int_handler
    if mine:
        signal.signal(signal.SIGINT, stop)
    try:
        yield
    except (KeyboardInterrupt, ImportError) as exc:
        if isinstance(exc, KeyboardInterrupt) or stopped:
            print(f"{prog}: interrupted while starting; nothing was saved by this run", file=sys.stderr)
            sys.exit(130)
        print(f"{prog}: cannot import {exc.name or 'a dependency'} ({str(exc).splitlines()[0]}); set up with "
              "bash scripts/setup.sh, then run it with .venv/bin/python", file=sys.stderr)
        sys.exit(2)
    finally:
        signal.signal(signal.SIGINT, (lambda signum, frame: _deferred.append(signum)) if mine and defer else started)


def go_on() -> None:
    """Ctrl-C raises again from here on; one that came since `starting(defer=True)` is raised now."""
    if signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, signal.SIG_DFL, None):
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if _deferred:
        _deferred.clear()
        raise KeyboardInterrupt


class Unbroken:
    """A text stream whose writes never raise: once the far end is gone (`| head` closed the pipe, a
    closed terminal, a full disk behind a redirect) what is written is dropped and the program goes on.
    Its file descriptor is pointed at /dev/null then, so the interpreter's last flush is quiet too."""

    def __init__(self, stream):
        self.stream, self.broken = stream, False

    def write(self, text):
        if not self.broken:
            try:
                return self.stream.write(text)
            except (OSError, ValueError):
                self._drop()
        return len(text)

    def flush(self):
        if not self.broken:
            try:
                self.stream.flush()
            except (OSError, ValueError):
                self._drop()

    def _drop(self):
        self.broken = True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())

    def __getattr__(self, name):  # isatty, fileno, encoding, ...: the stream's own
        return getattr(self.stream, name)


def unbreakable() -> None:
    """stdout and stderr as Unbroken streams: output that can no longer be written never costs a run."""
    if not isinstance(sys.stdout, Unbroken):
        sys.stdout = Unbroken(sys.stdout)
    if not isinstance(sys.stderr, Unbroken):
        sys.stderr = Unbroken(sys.stderr)


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block) and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def timed(fn, repeats, warmup=0, best=None, settle=0.0, warm_for=0.0) -> float:
    """Median seconds of fn over repeats, after `settle` seconds of quiet and untimed calls, `warmup` of them
    and for `warm_for` seconds at least (BLAS or OpenMP threads another side left spinning slow the first
    calls after a switch, and so do cores that slowed down meanwhile); the fastest is appended to `best`
    when given (on a shared machine, the call least disturbed by other work)."""
    if settle:
        time.sleep(settle)
    start, n = time.perf_counter(), 0
    while n < warmup or time.perf_counter() - start < warm_for:
        fn()
        n += 1
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    if best is not None:
        best.append(min(times))
    return statistics.median(times)
