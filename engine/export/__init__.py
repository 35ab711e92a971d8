"""Export: a trained network written for other runtimes, in eval mode (running statistics, no dropout).

    from engine.export import export
    export(net, "onnx", "model.onnx", classes=["T-shirt/top", ...])

FORMATS maps each format's name to its module's `build(net, classes, about)`, which gives the model's
bytes; the file is written whole to a temporary file beside it and renamed, so a failure leaves none.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import ExportError, named
from . import onnx

FORMATS = {"onnx": onnx}  # format name -> its module: build(net, classes, about), missing(net), SUFFIX


def check_format(name: str):
    """The module of a format by name, or one line listing the valid ones."""
    if name not in FORMATS:
        raise ExportError(f"format {name!r} not found, valid options are {sorted(FORMATS)}")
    return FORMATS[name]


def check_out(path) -> Path:
    """The output's folder exists and is one, before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{named('out')} {path}: a folder; give a file name, such as {path / 'model.onnx'}")
    if not path.parent.is_dir():
        raise ExportError(f"{named('out')} {path}: its folder {path.parent} does not exist; make it first or give "
                          "another path")
    return path


def export(net, fmt: str, out, classes=None, about=None) -> int:
    """Write `net` in format `fmt` to `out`, atomically; the number of bytes written."""
    module = check_format(fmt)
    path = check_out(out)
    data = module.build(net, classes, about).SerializeToString()
    write_whole(path, data)
    return len(data)


def write_whole(path: Path, data: bytes) -> None:
    """`data` into a temporary file beside `path`, synced, then renamed over it: never half a file."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ExportError(f"{named('out')} {path}: cannot write in {path.parent} ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make the model private to its writer
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ExportError(f"{named('out')} {path}: cannot write it ({exc.strerror or exc}); nothing was written"
                          ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
