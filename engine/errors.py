"""The engine's errors, all UserErrors (notation/language/errors.py): one line each, saying what to fix.

SpecError names the file, the layer or kind and the field; the others say which file, setting
or array is wrong.
"""
import re

from notation.language.errors import UserError

__all__ = ["UserError", "SpecError", "DataError", "CheckpointError", "TrainingError", "InputError", "ExportError",
           "named", "rename"]


def named(name: str) -> str:
    """How an engine message names a setting or run option: `lr`, `data_dir`. The engine never spells a
    command-line flag; a command line shows each name its own way (`rename`)."""
    return f"`{name}`"


_NAMED = re.compile(r"`([a-z][a-z0-9_]*)`")


def rename(text: str, how, names) -> str:
    """`text` with each of `names` that it names (`lr`) written as how(name) says: a flag, a keyword."""
    return _NAMED.sub(lambda m: how(m[1]) if m[1] in names else m[0], str(text))


class DataError(UserError):
    """A data file or data set that is missing, damaged or not the expected one; the message says what to do.
    `brief`, when given, is its one line for a command line (the message itself may list every detail)."""

    def __init__(self, message, brief: str | None = None):
        super().__init__(message)
        self.brief = brief

    def one_line(self) -> str:
        return self.brief or super().one_line()


class CheckpointError(UserError):
    """A checkpoint that is missing, damaged, or from another spec or run; one line saying what to do."""


class TrainingError(UserError):
    """Settings that cannot work (a bad flag or training: value); one line saying what to change."""


class InputError(UserError):
    """Arrays or parameters handed to a network that do not fit it: wrong shape, type or missing."""


class ExportError(UserError):
    """A network that cannot be written in the format asked for (a kind with no form there), or an output
    that cannot be written; one line naming what."""


class SpecError(UserError):
    """A problem with layers.yaml (or a spec given as a string or dict)."""

    def __init__(self, file, where, message):
        self.file, self.where, self.message = file, where, message
        super().__init__(f"{file}: {where}: {message}" if where else f"{file}: {message}")
