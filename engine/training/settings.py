"""The training settings, defined once: the spec's `training:` defaults, the trainer's Config and
the command line's flags all come from SETTINGS.

Engine messages name a setting as `name` (backticks, see `named`); a command line shows each as its
own flag word instead (`rename`), so the engine never spells a flag.
"""
from __future__ import annotations

import dataclasses
import math
import re

from ..data.datasets import DATASETS
from ..errors import TrainingError
from ..settings import BY_NAME, SETTINGS, SPEC_DEFAULTS, Setting  # noqa: F401 (the table, re-exported)
from . import augment, optim, schedule

CHOICES = {"dataset": lambda: sorted(DATASETS), "optimizer": lambda: sorted(optim.OPTIMIZERS),
           "schedule": lambda: sorted(schedule.SCHEDULES), "test_augment": lambda: ["flip", "none"]}
# what a checkpoint from before a setting ran with
OLD_CHECKPOINTS = {"schedule": "constant", "augment": "none", "warmup": 0, "weight_decay": 0.0, "test_augment": "none"}
HOLDOUT_SEED = 0  # the holdout split is the same for every seed

# what a run is given besides its settings: the command line names these too
RUN_OPTIONS = ("spec", "network", "checkpoint", "resume", "metrics", "plot", "data", "data_dir", "download",
               "progress", "plans", "eval_only")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that decides a run's trajectory (the settings with in_config); a checkpoint stores it
    and a resume must match it."""

    network: str
    dataset: str | None  # None: the run's own data (`data`: a path or arrays), which its checkpoint fingerprints
    optimizer: str
    lr: float
    batch_size: int
    epochs: int
    seed: int
    limit: int | None = None
    holdout: int | None = None
    test_limit: int | None = None
    schedule: str = "constant"
    augment: str = "none"
    warmup: int = 0
    weight_decay: float = 0.0
    test_augment: str = "none"


def named(name: str) -> str:
    """How an engine message names a setting or run option: `lr`. A command line renames each (`rename`)."""
    return f"`{name}`"


_NAMED = re.compile(r"`(" + "|".join(sorted({*BY_NAME, *RUN_OPTIONS}, key=len, reverse=True)) + r")`")


def rename(text: str, how) -> str:
    """`text` with every setting it names (`lr`) written as how(name) says: a flag, a keyword."""
    return _NAMED.sub(lambda m: how(m[1]), text)


def make_config(defaults: dict, network: str, given: dict, saved: dict | None = None) -> Config:
    """The spec's training: defaults overridden by the given (non-None) settings; on resume, the
    checkpoint's settings, which a given one may not contradict (except epochs, to train longer)."""
    given = {k: v for k, v in given.items() if v is not None}
    unknown = set(given) - {f.name for f in dataclasses.fields(Config)}
    if unknown:
        raise TrainingError(f"unknown setting(s) {sorted(unknown)}; valid are "
                            f"{sorted(f.name for f in dataclasses.fields(Config))}")
    if saved is not None:
        values = {**OLD_CHECKPOINTS, **saved}
        if "epochs" in given and given["epochs"] != values.get("epochs") and values["schedule"] in schedule.OVER_EPOCHS:
            raise TrainingError(f"the checkpoint's {values['schedule']} schedule is planned over its "
                                f"{values.get('epochs')} epochs, so {named('epochs')} cannot change on resume; "
                                f"resume without {named('epochs')}, or start a new {named('checkpoint')}")
        for k, v in given.items():
            if not (k in BY_NAME and BY_NAME[k].on_resume) and v != values.get(k):
                raise TrainingError(f"the checkpoint was trained with {named(k)} {values.get(k)}, not {v}; resume "
                                    f"without {named(k)} (it continues as it began), or start a new "
                                    f"{named('checkpoint')}")
        values.update(given)
    else:
        values = {s.name: defaults.get(s.name, s.default) for s in SETTINGS if s.in_config and s.in_spec}
        values["network"] = network
        values.update(given)
    try:
        config = Config(**values)
    except TypeError as exc:
        raise TrainingError(f"the checkpoint's settings do not fit this trainer ({exc})") from None
    return checked(config)


def value(name: str, given):
    """A setting's value checked against its type and bounds, or one TrainingError line naming it."""
    s = BY_NAME[name]
    if given is None and s.default is None:
        return None
    where = f"{named(name)} (or training: {name} in the spec)" if s.in_spec else named(name)
    if s.kind is str:
        valid = CHOICES.get(name)
        if valid is not None and (not isinstance(given, str) or given not in valid()):
            raise TrainingError(f"{where}: {given!r} not found, valid options are {valid()}")
        return given
    try:
        if isinstance(given, bool):
            raise ValueError
        v = s.kind(given)
        if s.kind is int and v != float(given):
            raise ValueError
    except (TypeError, ValueError):
        what = "an integer" if s.kind is int else "a number"
        raise TrainingError(f"{where} must be {what}, got {given!r}") from None
    if s.kind is float and not (math.isfinite(v) and (v > s.low or (s.zero and v == 0))):
        raise TrainingError(f"{where} must be {'0 or ' if s.zero else ''}a positive number, got {given!r}")
    if s.low is not None and v < s.low:
        raise TrainingError(f"{where} must be at least {s.low}, got {given!r}")
    return v


def checked(c: Config) -> Config:
    """c with every setting checked (one line naming the first bad one) and augment in its plain form."""
    values = {f.name: value(f.name, getattr(c, f.name)) for f in dataclasses.fields(c) if f.name != "network"
              and not (f.name == "dataset" and c.dataset is None)}  # dataset None: the run's own data
    values["augment"] = ",".join(augment.parse(c.augment)) or "none"
    if values["warmup"] >= values["epochs"]:
        raise TrainingError(f"{named('warmup')} {c.warmup} must be fewer than {named('epochs')} {c.epochs}: the rate "
                            f"rises over the first epochs, and the schedule needs at least one after them; give more "
                            f"{named('epochs')} or {named('warmup')} 0")
    return dataclasses.replace(c, **values)
