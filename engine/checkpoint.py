"""Checkpoints: parameters, optimizer state and the run's position in one .npz, replaced atomically.

Arrays are stored as ``params/<layer>/<param>``, ``optim/<key>`` and ``data/<name>``; everything
else (epoch, batch, step, RNG state, config, history, the spec's hash) is one JSON string under
``meta``, so the file loads with ``allow_pickle=False``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

FORMAT = 1
FIX = "delete it or give another --checkpoint path"


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, or from another spec or run; one line saying what to do."""


@dataclasses.dataclass
class Checkpoint:
    """What a checkpoint holds: {layer: {param: array}}, the optimizer's arrays, named data arrays, meta."""

    params: dict
    optim: dict
    data: dict
    meta: dict


def spec_hash(spec_bytes: bytes, network: str) -> str:
    """sha256 of the spec file's bytes and the network's name: what a checkpoint's weights belong to."""
    return hashlib.sha256(spec_bytes + b"\0network=" + network.encode()).hexdigest()


def save(path, ckpt: Checkpoint) -> None:
    """Write to a temp file beside `path`, fsync, then os.replace: a kill leaves the old file or the new."""
    path = Path(path)
    arrays = {f"params/{layer}/{p}": np.asarray(v) for layer, ps in ckpt.params.items() for p, v in ps.items()}
    arrays.update({f"optim/{k}": np.asarray(v) for k, v in ckpt.optim.items()})
    arrays.update({f"data/{k}": np.asarray(v) for k, v in ckpt.data.items()})
    arrays["meta"] = np.array(json.dumps({"format": FORMAT, **ckpt.meta}))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make checkpoints private to their writer
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def load(path) -> Checkpoint:
    """Read a checkpoint; any fault (missing, truncated, not ours, newer format) is one CheckpointError line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there; run without --resume to start one")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic == b"\x93NUMPY":
            raise ValueError("a single .npy array, not an .npz archive")
        if not magic.startswith(b"PK"):
            raise ValueError("not an .npz (zip) archive")
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
        if not isinstance(meta, dict):
            raise ValueError("its meta record is not a mapping")
    except KeyError:
        raise CheckpointError(f"{path}: not a checkpoint (an .npz without a meta record); {FIX}") from None
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError, EOFError, json errors, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: damaged or not a checkpoint ({reason}); {FIX}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format')!r}, this trainer reads format "
                              f"{FORMAT}; {FIX}")
    ckpt = Checkpoint({}, {}, {}, meta)
    for key, value in arrays.items():
        section, _, rest = key.partition("/")
        if section == "params" and "/" in rest:
            layer, _, p = rest.rpartition("/")
            ckpt.params.setdefault(layer, {})[p] = value
        elif section == "optim":
            ckpt.optim[rest] = value
        elif section == "data":
            ckpt.data[rest] = value
        else:
            raise CheckpointError(f"{path}: unexpected entry {key!r}: not a checkpoint of this trainer; {FIX}")
    return ckpt


def check_spec(ckpt: Checkpoint, path, expected_hash: str, spec_file: str, network: str) -> None:
    """Refuse weights trained under another spec file or network, naming both."""
    saved = ckpt.meta.get("spec_hash")
    if saved != expected_hash:
        raise CheckpointError(
            f"{path}: written for network {ckpt.meta.get('network')!r} of spec {ckpt.meta.get('spec_file')!r} "
            f"(sha256 {str(saved)[:12]}), not network {network!r} of {spec_file!r} as it is now "
            f"(sha256 {expected_hash[:12]}); use that spec and network, or start a new --checkpoint")
