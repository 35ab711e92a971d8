"""What the scripts share: a guarded start-up, argparse with one-line errors, and a timer.

Standard library only, so importing it is instant and cannot itself fail for want of a dependency.
"""
from __future__ import annotations

import argparse
import signal
import statistics
import sys
import time
from contextlib import contextmanager


@contextmanager
def starting(prog: str):
    """Around a script's heavy imports: a Ctrl-C (which an extension module may turn into an
    ImportError) or a missing dependency is one line and exit 130 or 2, not a traceback."""
    started = signal.getsignal(signal.SIGINT)
    stopped = []

    def stop(signum, frame):
        stopped.append(signum)
        raise KeyboardInterrupt

    if started == signal.default_int_handler:
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
        signal.signal(signal.SIGINT, started)


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block) and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def timed(fn, repeats, warmup=0, best=None, settle=0.0) -> float:
    """Median seconds of fn over repeats, after `settle` seconds of quiet and `warmup` untimed calls
    (BLAS threads another side left spinning slow the first calls after a switch); the fastest is
    appended to `best` when given (on a shared machine, the call least disturbed by other work)."""
    if settle:
        time.sleep(settle)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    if best is not None:
        best.append(min(times))
    return statistics.median(times)
