"""Signals during training: Ctrl-C, SIGTERM and SIGHUP stop a run between updates, never halfway through one,
and wait for a checkpoint being written."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM (what timeout, docker stop, Slurm and systemd send) or SIGHUP (a closed terminal or SSH
    connection), handled as Ctrl-C: save, say so, exit 128 + the signal's number (143, 129)."""

    def __init__(self, signum=signal.SIGTERM):
        super().__init__()
        self.signum = signum


SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}
STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # the signals that stop a run, saving first


def stopped_by(exc) -> str:
    """How a stop is said: "interrupted" (Ctrl-C), "stopped by SIGTERM", "stopped by SIGHUP"."""
    return f"stopped by {SIGNAL_NAMES[exc.signum]}" if isinstance(exc, Terminated) else "interrupted"


def exit_code(exc) -> int:
    """128 + the signal's number, as a shell reports a process that signal ended: 130, 143, 129."""
    return 128 + (exc.signum if isinstance(exc, Terminated) else signal.SIGINT)


class Interrupts:
    """Ctrl-C (or SIGTERM, SIGHUP) raises KeyboardInterrupt (Terminated) between updates, never halfway
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
            for sig in STOPPING:
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
        return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)

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

