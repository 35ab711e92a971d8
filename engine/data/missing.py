"""The message for a data set found nowhere: in full (every place searched, every failed download) and
in one line of about 250 characters for a command line (what is missing, where, what to do)."""
from __future__ import annotations

import os
import re
from pathlib import Path

from notation.runtime import environment

from ..errors import DataError, named


def not_found(spec, split: str, places: list[Path], failures: list[str] | None, env_var: str,
              shared: Path | None = None) -> DataError:
    """The error for a split found nowhere: every place and failure in its message, one short line as its
    brief. `shared`: a copy of the data set's test split alone, which `holdout` trains on."""
    return DataError(_message(spec, split, places, failures, env_var),
                     _brief(spec, split, places, failures, env_var, shared))


def _short(path: Path) -> str:
    """A path as a reader takes it in: relative when below the working directory, ~ for the home folder."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        pass
    home = Path(os.path.expanduser("~"))
    try:
        return "~/" + str(path.relative_to(home))
    except ValueError:
        return str(path)


def _typed(path: Path) -> str:
    """A folder as one types it here: relative to the working directory when near it (../shared/...)."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith(os.pardir + os.sep + os.pardir) else rel


def _brief(spec, split: str, places: list[Path], failures: list[str] | None, env_var: str,
           shared: Path | None) -> str:
    """What is missing, where it was looked for, and what to do, in one line of about 250 characters."""
    env = environment.get(env_var)
    shown = [f"${env_var}/{spec.name}" if env and place == env / spec.name else _short(place) for place in places]
    if len(shown) > 1 and len(places) > 2 and places[1] == places[0] / spec.name:
        shown.pop(1)  # the given folder and its <name>/ subfolder: the folder says it
    where = ", ".join(shown[:-1]) + (" or " if len(shown) > 1 else "") + shown[-1]
    if failures is None:
        why, retry = "", f"drop {named('download')}"  # naming the flag to drop says downloading was off
    else:
        why = "download failed ({}); ".format(re.sub(r"^\[Errno [-\d]+\] ", "", failures[0].split(": ", 1)[-1]))
        retry = "retry online"
    to_do = [spec.how_to_get_briefly or spec.how_to_get, retry]
    if shared is not None and shared not in places:
        to_do.append(f"use the shared test split: {named('dataset')} {spec.name} {named('data_dir')} "
                     f"{_typed(shared)} {named('holdout')} 2000")
    return f"{spec.name} {split} split not found in {where}; {why}" + ", ".join(to_do[:-1]) + " or " + to_do[-1]


def _message(spec, split: str, places: list[Path], failures: list[str] | None, env_var: str) -> str:
    """Where we looked, why downloading did not help, and how to get the files."""
    needed = ", ".join(f.filename for f in spec.splits[split].files)
    lines = [f"{spec.title} ({spec.name}, {split} split) not found: no directory holds {needed}.",
             "Searched, in order:"]
    env_place = None
    if environment.get(env_var):
        env_place = environment.get(env_var) / spec.name
    for place in places:
        note = f"  (${env_var} must hold a {spec.name}/ folder with the files)" if place == env_place else ""
        lines.append(f"  {place}{note}")
    if failures is None:
        lines.append("Downloading was not allowed.")
    else:
        lines.append(f"Downloading into {places[-1]} failed:")
        lines += [f"  {failure}" for failure in failures]
    lines.append(f"To get it: {spec.how_to_get}.")
    if not environment.get(env_var):
        lines.append(f"(${env_var}, if set, names a directory holding a {spec.name}/ folder with the files.)")
    return "\n".join(lines)

