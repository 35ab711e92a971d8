"""Every environment variable the project reads, parsed and checked here: a bad value is one line
naming the variable, what it takes and what to do (`check`), and meanwhile its default runs."""
from __future__ import annotations

import os
from pathlib import Path

from ..language.errors import UserError


class EnvironmentVariableError(UserError):
    """An environment variable of the project set to a value it does not take."""


def cores() -> int:
    """The cores this process may run on (its affinity, where the system says), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _whole(name, text, low, high, unit):
    """text as a whole number in [low, high], or a one-line complaint naming `name`."""
    try:
        value = int(text.strip().replace("_", ""))
    except ValueError:
        return None, f"{name}={text!r} is not a whole number; give {unit}, or unset it"
    if not low <= value <= high:
        return None, f"{name}={text!r} is out of range; give {unit}, or unset it"
    return value, None


def _threads(text):
    most = cores()
    return _whole("NOTATION_THREADS", text, 1, most,
                  f"1 to {most} (the threads that share a large product; this machine has {most} cores)")


def _switch(name):
    def parse(text):
        if text.strip() in ("0", "1"):
            return text.strip() == "1", None
        return None, f"{name}={text!r}: give 1 (on) or 0 (off), or unset it"
    return parse


def _flops(text):
    return _whole("NOTATION_BLAS_THREADS_FLOPS", text, 1, 10 ** 18,
                  "a number of FLOPs from 1 to 10^18 (a product of at least this many runs on BLAS's threads)")


def _rates(text):
    if text.strip() == "reference":
        return "reference", None
    return None, f"NOTATION_RATES={text!r}: give reference (fixed rates for the cost model), or unset it (this " \
                 "machine's, measured once)"


def _folder(name):
    def parse(text):
        path = Path(text).expanduser()
        if path.exists() and not path.is_dir():
            return None, f"{name}={text!r} is a file, not a folder; give a folder, or unset it"
        return path, None
    return parse


# name: (parse, default); parse(text) -> (value, None) or (None, complaint)
VARIABLES = {
    "NOTATION_THREADS": (_threads, None),  # None: min(2, cores), see notation/runtime/parallel.py
    "NOTATION_PARALLEL": (_switch("NOTATION_PARALLEL"), None),  # None: chosen per network (engine/compiler/threads.py)
    "NOTATION_FUSED": (_switch("NOTATION_FUSED"), True),
    "NOTATION_BLAS_THREADS_FLOPS": (_flops, 10 ** 18),
    "NOTATION_RATES": (_rates, None),  # None: this machine's rates (notation/lowering/cost.py)
    "EINSUM_DATA_DIR": (_folder("EINSUM_DATA_DIR"), None),
    "XDG_CACHE_HOME": (_folder("XDG_CACHE_HOME"), None),
}
_parsed = {}  # (name, text) -> (value, complaint): each value is parsed once


def _read(name):
    text = os.environ.get(name, "")
    if not text.strip():
        return VARIABLES[name][1], None
    key = (name, text)
    if key not in _parsed:
        _parsed[key] = VARIABLES[name][0](text)
    value, complaint = _parsed[key]
    return (VARIABLES[name][1], complaint) if complaint else (value, None)


def get(name):
    """The variable's value as it is set now, or its default where unset or bad (`check` says why)."""
    return _read(name)[0]


def complaints() -> list:
    """One line for each variable set to a value it does not take."""
    return [c for c in (_read(name)[1] for name in VARIABLES) if c]


def check() -> None:
    """Raise EnvironmentVariableError, one line, for the first variable set to a value it does not take."""
    bad = complaints()
    if bad:
        raise EnvironmentVariableError(bad[0])


def cache_root() -> Path:
    """The engine's per-user cache folder, ${XDG_CACHE_HOME:-~/.cache}/einsum-engine: rates, algorithms,
    downloads and decoded images all live under it."""
    return Path(get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")) / "einsum-engine"
