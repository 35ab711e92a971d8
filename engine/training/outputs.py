"""The files a run writes: never one path for two of them, each claimed for the run (a lock beside it,
so a second run given the same path is refused), and a metrics file whose write failures cost the
run nothing but its metrics."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import sys
from pathlib import Path

from ..errors import TrainingError, named


def _identity(path):
    """What a path names: its file (device, inode) where it exists (a symlink or hard link is the file it
    reaches), else its absolute path with every symlink of its folders resolved."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
        return ("file", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.realpath(p))


def check_distinct(paths: dict) -> None:
    """Refuse two of the run's files that are one file ({"checkpoint": path, "metrics": ..., "spec": ...};
    None: not given), relative paths, symlinks and hard links included: one would overwrite the other."""
    seen = {}
    for name, path in paths.items():
        if path is None or path == "":
            continue
        key = _identity(path)
        if key in seen:
            other, before = seen[key]
            what = "is the spec file" if other == "spec" else f"and {named(other)} {before} are one file"
            raise TrainingError(f"{named(name)} {path} {what}; give each output a path of its own")
        seen[key] = (name, path)


def regular(path) -> bool:
    """Whether the path is (or would be) a regular file, not a device or a pipe (/dev/stdout, /dev/full)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True


def lock_path(path) -> Path:
    p = Path(path)
    return p.with_name(f".{p.name}.lock")


@contextlib.contextmanager
def claimed(paths: dict):
    """Hold a lock beside each regular file of {name: path} for the run (flock on .<name>.lock, released
    when the process ends however it ends); a path another live run holds is one TrainingError line."""
    with contextlib.ExitStack() as stack:
        for name, path in paths.items():
            if path and regular(path):
                stack.enter_context(_claim(name, path))
        yield


@contextlib.contextmanager
def _claim(name, path):
    lock = lock_path(path)
    for _ in range(10):  # another run may remove the lock file between our open and our flock: once more
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            folder = Path(path).resolve().parent
            raise TrainingError(f"{named(name)} {path}: cannot write in {folder} ({exc.strerror or exc}); "
                                f"{advice(exc, name, folder)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(fd)
            os.close(fd)
            raise TrainingError(f"{named(name)} {path} is being written by another run{holder}; wait for it to "
                                f"end, or give another {named(name)} path") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except OSError:
            same = False
        if same:
            break
        os.close(fd)
    else:
        raise TrainingError(f"{named(name)} {path}: could not claim it ({lock} keeps changing)")
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        pass
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)  # while still held: a run that opened it before retries on a fresh one
        os.close(fd)


def advice(exc: OSError, name: str, folder) -> str:
    """What to do about an output that cannot be written, by the reason."""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return f"free some space or give another {named(name)} path"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"make {folder} writable or give a {named(name)} path in a folder you can write"
    return f"give another {named(name)} path"


def _holder(fd) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (process {pid})" if pid.isdigit() else ""


def check_metrics(path, resume: bool) -> None:
    """An existing metrics file is appended to on resume, and never overwritten: refused otherwise."""
    p = Path(path)
    if not resume and regular(p) and p.is_file() and p.stat().st_size > 0:
        raise TrainingError(f"{named('metrics')} {path} already holds metrics; give another {named('metrics')} "
                            f"path, delete it, or pass {named('resume')} to append to it")


class Metrics:
    """JSON lines appended to the metrics file; a write that fails (a full disk, /dev/full, a closed pipe)
    is said once and the run goes on without metrics: they never cost the run."""

    def __init__(self, path, warn=None):
        self.path, self.file = path, None
        self.warn = warn or (lambda line: print(line, file=sys.stderr))
        try:
            self.file = open(path, "a")
        except OSError as exc:
            self._failed(exc)

    def write(self, record: dict) -> None:
        if self.file is not None:
            try:
                self.file.write(json.dumps(record) + "\n")
            except OSError as exc:
                self._failed(exc)

    def flush(self) -> None:
        if self.file is not None:
            try:
                self.file.flush()
            except OSError as exc:
                self._failed(exc)

    def close(self) -> None:
        self.flush()
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None

    def _failed(self, exc) -> None:
        file, self.file = self.file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()
        self.warn(f"{named('metrics')} {self.path}: cannot write it ({exc.strerror or exc}); training goes on "
                  "without metrics (the checkpoint keeps each epoch's record in its history)")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
