"""A trained network back from its checkpoint: built from the spec it was trained with, for the input
shape and the classes its run recorded, with its weights and running statistics.  Evaluation,
prediction and export start here."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..compiler.spec import fitted
from ..errors import CheckpointError, TrainingError, named
from . import checkpoint as ckpt_io
from . import checks


@dataclasses.dataclass
class Restored:
    """A checkpoint's network with its weights, the checkpoint itself and its class names."""

    net: object
    ckpt: ckpt_io.Checkpoint
    classes: list


def read_spec(path):
    """The spec and its file's bytes (the legacy checkpoint hash reads them)."""
    from ..compiler.spec import read

    spec = read(Path(path))
    return spec, Path(path).read_bytes()


def load_checkpoint(path) -> ckpt_io.Checkpoint:
    """The checkpoint at `path`, with training settings in it; one CheckpointError line otherwise."""
    if Path(path).is_dir():
        raise CheckpointError(f"{path}: a folder, not a checkpoint; give the checkpoint's .npz file")
    if not Path(path).exists():
        raise CheckpointError(f"{path}: no such checkpoint (it does not exist); train one first with "
                              f"{named('checkpoint')} {path}")
    ckpt = ckpt_io.load(path)
    if not isinstance(ckpt.meta.get("config"), dict):
        raise CheckpointError(f"{path}: it holds no training settings; {ckpt_io.FIX}")
    return ckpt


def recorded_algorithms(ckpt, path) -> dict | None:
    """The algorithms `auto` chose for the checkpoint's run ({layer: name}), or None where it predates them."""
    if ckpt is None or "algorithms" not in ckpt.meta:
        return None
    found = ckpt.meta["algorithms"]
    if not isinstance(found, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in found.items()):
        raise CheckpointError(f"{path}: its record of the algorithms is damaged; {ckpt_io.FIX}")
    return found


def restored(ckpt, path, spec_path="layers.yaml", network=None, optimize=None) -> Restored:
    """The network `ckpt` (read from `path`) holds, loaded with its weights; the spec must still mean
    what it was trained as.  `network`, when given, must be the checkpoint's."""
    from ..compiler.network import load as load_network

    saved = ckpt.meta["config"]
    spec, spec_bytes = read_spec(spec_path)
    trained = saved.get("network")
    if not isinstance(trained, str) or trained not in spec.networks:
        raise CheckpointError(f"{path}: it was trained as network {trained!r}, which {spec_path} does not "
                              f"define (it has {sorted(spec.networks)}); give the {named('spec')} it was trained with")
    if network and network != trained:
        raise TrainingError(f"{path} holds network {trained!r}, not {network!r}; drop {named('network')}")
    classes = ckpt_io.class_names(ckpt)
    if isinstance(ckpt.meta.get("meaning"), dict):  # the input and classes it was trained for
        spec = fitted(spec, trained, ckpt_io.input_shape(ckpt), len(classes))
    meaning = ckpt_io.meaning(spec, trained)
    ckpt_io.check_spec(ckpt, path, ckpt_io.fingerprint(meaning), str(spec_path), trained, meaning,
                       ckpt_io.spec_hash(spec_bytes, trained), resuming=False)
    net = load_network(spec, network=trained, seed=saved.get("seed") if isinstance(saved.get("seed"), int) else 0,
                       optimize=optimize, algorithms=recorded_algorithms(ckpt, path))
    checks.arrays(path, ckpt)
    try:
        net.set_params(ckpt.params)
        if net.state_shapes:
            net.set_state(ckpt.state)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: {exc}; {ckpt_io.FIX}") from None
    bad = [f"{layer}.{p}" for layer, ps in net.params.items() for p, v in ps.items() if not np.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: its weights are not finite (NaN or infinite) in {', '.join(bad)}; "
                              "training never saves such weights, so the file was damaged or altered; "
                              f"{ckpt_io.FIX}")
    if len(classes) != net.classes:
        raise CheckpointError(f"{path}: it names {len(classes)} classes for the network's {net.classes} outputs: "
                              f"the file was damaged or altered; {ckpt_io.FIX}")
    return Restored(net, ckpt, classes)


def probabilities(net, x, batch: int = 256, test_augment: str = "none") -> np.ndarray:
    """The network's class probabilities for examples `x` (uint8 images scaled as in training), in eval mode,
    each image seen as the run's `test_augment` says (engine/training/evaluation.py)."""
    from ..data.examples import inputs
    from .evaluation import probabilities as seen

    out = [seen(net, inputs(x[i:i + batch], net.input_shape, net.dtype), test_augment)
           for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros((0, net.classes))
