"""Checkpoints: parameters, optimizer state and the run's position in one .npz, replaced atomically.

Arrays are stored as ``params/<layer>/<param>``, ``state/<layer>/<name>`` (running statistics),
``optim/<key>`` and ``data/<name>``; everything
else (epoch, batch, step, RNG state, config, history, the spec's hash, the class names, the data's
fingerprint) is one JSON string under ``meta``, so the file loads with ``allow_pickle=False``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from notation.language.canonical import same as same_equation

from ..data.datasets import DATASETS
from ..errors import CheckpointError, named

FORMAT = 1
FIX = f"delete it or give another {named('checkpoint')} path"


@dataclasses.dataclass
class Checkpoint:
    """What a checkpoint holds: {layer: {param: array}}, the optimizer's arrays, named data arrays, meta,
    and {layer: {name: array}} of state that is not a parameter (batch norm's running statistics)."""

    params: dict
    optim: dict
    data: dict
    meta: dict
    state: dict = dataclasses.field(default_factory=dict)


def spec_hash(spec_bytes: bytes, network: str) -> str:
    """sha256 of the spec file's bytes and the network's name (checkpoints written before `meaning`)."""
    return hashlib.sha256(spec_bytes + b"\0network=" + network.encode()).hexdigest()


def meaning(spec, network: str) -> dict:
    """What a network of a spec means, as plain data: its input, its layers (kind, hyperparameters,
    activation), and each kind, activation and loss it uses (axes, symbols, shapes, parameters,
    equations as the parser prints them, Jacobians), the loss and the dtype.  Comments, citations,
    layout and kinds it does not use are not part of it: editing them keeps a checkpoint valid."""
    net = spec.networks[network]
    used = {"kinds": {l.kind for l in net.layers}, "activations": {l.activation for l in net.layers},
            "losses": {net.loss}}
    loss = spec.losses[net.loss]
    if loss.activation:
        used["activations"].add(loss.activation)
    out = {"network": network, "input": list(net.input), "loss": net.loss,
           "layers": [_plain({k: v for k, v in dataclasses.asdict(l).items()}) for l in net.layers],
           "dtype": str(spec.training.get("dtype")),
           **({"loss_hyper": _plain(net.loss_hyper)} if net.loss_hyper else {})}
    for section, names in used.items():
        table = getattr(spec, section)
        out[section] = {n: _plain({f.name: getattr(table[n], f.name) for f in dataclasses.fields(table[n])
                                   if f.name not in ("name", "section", "cites")})
                        for n in sorted(names) if n in table}
    return out


def _plain(value):
    """JSON-able: equations as printed (whitespace-free of layout), tuples as lists, keys as text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def fingerprint(meaning_: dict) -> str:
    """sha256 of a network's meaning: what a checkpoint's weights belong to."""
    return hashlib.sha256(json.dumps(meaning_, sort_keys=True).encode()).hexdigest()


def differences(old: dict, new: dict, where: str = "", leading: dict | None = None) -> list:
    """Where two meanings differ, as short phrases: "layer 'dense' units 10 -> 20".  Spelling is not
    meaning: a field added or removed empty, indices renamed, and `...` for the leading axes a kind
    spelt out before (the same number throughout the kind) are no difference."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in list(old) + [k for k in new if k not in old]:
            here = _label(where, k, old if k in old else new)
            if k not in new:
                out += [] if _empty(old[k]) else [f"{here} removed"]
            elif k not in old:
                out += [] if _empty(new[k]) else [f"{here} added"]
            elif where in ("kinds", "activations", "losses"):
                out += _entry_differences(old[k], new[k], here)
            else:
                out += differences(old[k], new[k], here, leading)
        return out
    if _strings(old) and _strings(new) and ("..." in old) != ("..." in new):
        count = _leading_axes(old, new)
        if count is None:
            return [f"{where} {_short(old)} -> {_short(new)}"]
        (leading if leading is not None else {})[where] = count
        return []
    if (isinstance(old, list) and isinstance(new, list) and len(old) == len(new)
            and not all(isinstance(v, (int, float)) for v in old + new)):
        out = []
        for n, (a, b) in enumerate(zip(old, new)):
            label = f"layer {a['name']!r}" if isinstance(a, dict) and "name" in a and where == "layers" else \
                f"{where}[{n}]"
            out += differences(a, b, label, leading)
        return out
    if isinstance(old, str) and isinstance(new, str) and old != new:
        alike, count = same_equation(old, new)
        if alike and count is not None and leading is not None:
            leading[where] = count
        return [] if alike else [f"{where} {_short(old)} -> {_short(new)}"]
    if old != new:
        return [f"{where} {_short(old)} -> {_short(new)}"]
    return []


def _forward(meaning_: dict) -> dict:
    """A meaning without the kinds' Jacobians: what a forward pass (evaluation, prediction) depends on."""
    return {k: ({n: {f: v for f, v in entry.items() if f != "backward"} for n, entry in value.items()}
                if k in ("kinds", "activations", "losses") and isinstance(value, dict) else value)
            for k, value in meaning_.items()}


def _entry_differences(old, new, where) -> list:
    """A kind's (activation's, loss's) differences, and whether its `...` stands for one number of axes."""
    leading = {}
    out = differences(old, new, where, leading)
    if len(set(leading.values())) > 1:
        counts = ", ".join(f"{n} in {label[len(where) + 1:]}" for label, n in leading.items())
        out.append(f"{where} ... stands for different numbers of leading axes ({counts})")
    return out


def _empty(value) -> bool:
    return value is None or (isinstance(value, (str, list, dict)) and not value)


def _strings(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _leading_axes(old: list, new: list) -> int | None:
    """How many leading axes `...` of one axis list stands for in the other spelt out, or None if they differ."""
    dots, plain = (old, new) if "..." in old else (new, old)
    if dots[0] != "..." or "..." in dots[1:] or len(plain) < len(dots) - 1:
        return None
    count = len(plain) - (len(dots) - 1)
    return count if plain[count:] == dots[1:] else None


def _label(where, key, table):
    if where in ("kinds", "activations", "losses"):
        return f"{where[:-1] if where != 'activations' else 'activation'} {key!r}"
    return f"{where} {key}" if where else str(key)


def _short(value, width=60):
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def class_names(ckpt) -> list:
    """The names of the classes a checkpoint (a Checkpoint or its path) was trained on, in label order:
    those its run recorded, else (checkpoints from before) its named data set's."""
    ckpt = ckpt if isinstance(ckpt, Checkpoint) else load(ckpt)
    names = ckpt.meta.get("classes")
    if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
        return list(names)
    config = ckpt.meta.get("config") if isinstance(ckpt.meta.get("config"), dict) else {}
    dataset = DATASETS.get(config.get("dataset"))
    return list(dataset.classes) if dataset else [str(d) for d in range(_outputs(ckpt))]


def input_shape(ckpt) -> tuple:
    """The shape of one input (after the batch) that a checkpoint (a Checkpoint or its path) takes, as trained."""
    where = "the checkpoint" if isinstance(ckpt, Checkpoint) else str(ckpt)
    ckpt = ckpt if isinstance(ckpt, Checkpoint) else load(ckpt)
    meaning_ = ckpt.meta.get("meaning")
    shape = meaning_.get("input") if isinstance(meaning_, dict) else None
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                                              for n in shape):
        raise CheckpointError(f"{where}: its record of the network's input is {shape!r}, not a list of sizes: the "
                              f"file was damaged or altered, or predates that record; {FIX}")
    return tuple(shape)


def _outputs(ckpt) -> int:
    """The number of outputs of the checkpoint's last layer (its last parameter's last axis)."""
    layers = (ckpt.meta.get("meaning") or {}).get("layers") or []
    for layer in reversed(layers):
        ps = ckpt.params.get(layer.get("name") if isinstance(layer, dict) else None, {})
        if ps:
            return int(np.shape(list(ps.values())[-1])[-1])
    return 10


def save(path, ckpt: Checkpoint) -> None:
    """Write to a temp file beside `path`, fsync, then os.replace: a kill leaves the old file or the new."""
    path = Path(path)
    arrays = {f"params/{layer}/{p}": np.asarray(v) for layer, ps in ckpt.params.items() for p, v in ps.items()}
    arrays.update({f"state/{layer}/{n}": np.asarray(v) for layer, ns in ckpt.state.items() for n, v in ns.items()})
    arrays.update({f"optim/{k}": np.asarray(v) for k, v in ckpt.optim.items()})
    arrays.update({f"data/{k}": np.asarray(v) for k, v in ckpt.data.items()})
    arrays["meta"] = np.array(json.dumps({"format": FORMAT, **ckpt.meta}))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
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


def unfinished(path) -> list:
    """Temporary files a killed save of `path` left beside it (.<name>.<pid>.<random>.tmp whose
    writer is gone); a save in progress in a live process is not one of them."""
    path = Path(path)
    out = []
    try:
        candidates = list(path.parent.glob(f".{glob_escape(path.name)}.*.tmp"))
    except OSError:
        return []
    for tmp in candidates:
        pid = tmp.name[len(path.name) + 2:].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        if pid.isdigit() and int(pid) == os.getpid():
            continue
        out.append(tmp)
    return out


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def remove_unfinished(path) -> list:
    """Delete what `unfinished` finds; [(name, bytes)] of what went."""
    gone = []
    for tmp in unfinished(path):
        try:
            size = tmp.stat().st_size
            tmp.unlink()
            gone.append((tmp.name, size))
        except OSError:
            pass
    return gone


def check_writable(path) -> None:
    """Make the checkpoint's folder and write a file in it now, before an epoch is spent:
    OSError (PermissionError, read-only file system, ...) if it cannot take one."""
    parent = Path(path).resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{Path(path).name}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    os.unlink(tmp)


def size_estimate(params: dict, optim: dict, state: dict, examples: int, epochs: int) -> int:
    """Bytes a checkpoint of these arrays takes at most: the arrays, the data order (int64), the meta
    record (an epoch's record is some 200 bytes) and the archive's headers."""
    arrays = [v for ps in params.values() for v in ps.values()] + list(optim.values()) + \
        [v for ns in state.values() for v in ns.values()]
    return sum(np.asarray(v).nbytes + 256 for v in arrays) + 8 * examples + 300 * epochs + 65536


def free_bytes(path) -> int | None:
    """Bytes free to this user in the checkpoint's folder, or None where the system does not say."""
    try:
        st = os.statvfs(Path(path).resolve().parent)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def write_advice(exc: OSError, path) -> str:
    """What to do about a checkpoint that cannot be written, by the reason (outputs.advice's rule)."""
    from .outputs import advice
    return advice(exc, "checkpoint", Path(path).resolve().parent)


def load(path) -> Checkpoint:
    """Read a checkpoint; any fault (missing, truncated, not ours, newer format) is one CheckpointError line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there; run without {named('resume')} to start one")
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
        elif section == "state" and "/" in rest:
            layer, _, n = rest.rpartition("/")
            ckpt.state.setdefault(layer, {})[n] = value
        elif section == "optim":
            ckpt.optim[rest] = value
        elif section == "data":
            ckpt.data[rest] = value
        else:
            raise CheckpointError(f"{path}: unexpected entry {key!r}: not a checkpoint of this trainer; {FIX}")
    return ckpt


def check_spec(ckpt: Checkpoint, path, expected_hash: str, spec_file: str, network: str,
               meaning_: dict | None = None, legacy_hash: str | None = None, resuming: bool = True) -> None:
    """Refuse weights trained for a network that means something else now, naming what changed.  A
    kind's Jacobians written another way (the same gradients, other bits) matter only to a run resumed
    (resuming=True: it would not be the bits of the uninterrupted run); evaluating, predicting and
    exporting read the forward alone."""
    saved = ckpt.meta.get("spec_hash")
    then = ckpt.meta.get("meaning")
    if isinstance(then, dict) and meaning_ is not None:
        if ckpt.meta.get("network") != network:
            raise CheckpointError(f"{path}: written for network {ckpt.meta.get('network')!r}, not {network!r}; "
                                  f"pass {named('network')} {ckpt.meta.get('network')}, or start a new "
                                  f"{named('checkpoint')}")
        changed = differences(then, meaning_)
        if changed and not differences(_forward(then), _forward(meaning_)):  # the Jacobians alone
            if not resuming:
                return
            raise CheckpointError(f"{path}: the Jacobians of network {network!r} of {spec_file} are written another "
                                  f"way now ({changed[0]}); the weights mean what they did and evaluate as "
                                  f"before, but a resumed run would not be the bits of the one it continues: "
                                  f"resume with the spec it was trained with, or start a new {named('checkpoint')}")
        if changed:
            more = f" (and {len(changed) - 3} more)" if len(changed) > 3 else ""
            raise CheckpointError(f"{path}: network {network!r} of {spec_file} no longer means what it was trained "
                                  f"as: {'; '.join(changed[:3])}{more}; undo that change, or start a new "
                                  f"{named('checkpoint')}")
        return
    if saved != expected_hash and (legacy_hash is None or saved != legacy_hash):
        raise CheckpointError(
            f"{path}: written for network {ckpt.meta.get('network')!r} of spec {ckpt.meta.get('spec_file')!r} "
            f"(sha256 {str(saved)[:12]}), not network {network!r} of {spec_file!r} as it is now "
            f"(sha256 {expected_hash[:12]}); use that spec and network, or start a new {named('checkpoint')}")


def meta_count(ckpt, path, key) -> int:
    """A whole number >= 0 from a checkpoint's meta record, or one CheckpointError line."""
    value = ckpt.meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CheckpointError(f"{path}: its {key} is {value!r}, not a whole number: the file was damaged or "
                              f"altered; {FIX}")
    return value
