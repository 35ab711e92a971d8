"""A trained network back from its checkpoint, for evaluation, export and prediction: the spec's network
it was trained as (refused where the spec now means something else), its weights and running statistics."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..compiler.spec import fitted
from ..errors import CheckpointError, TrainingError, named
from . import checkpoint as ckpt_io


def read_spec(path):
    """The spec and its file's bytes (the legacy checkpoint hash reads them)."""
    from ..compiler.spec import read

    spec = read(Path(path))
    return spec, Path(path).read_bytes()


def recorded_algorithms(ckpt, path) -> dict | None:
    """The algorithms `auto` chose for the checkpoint's run ({layer: name}), or None where it predates them."""
    if ckpt is None or "algorithms" not in ckpt.meta:
        return None
    found = ckpt.meta["algorithms"]
    if not isinstance(found, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in found.items()):
        raise CheckpointError(f"{path}: its record of the algorithms is damaged; {ckpt_io.FIX}")
    return found


EVALUATE = f"evaluate it with {named('eval_only')}"


def open_checkpoint(path, spec_file, network=None, then=EVALUATE):
    """(the checkpoint, the spec, its network's name, the run's saved settings), the spec checked to mean
    what the weights were trained as; `network`, when given, must be the one it holds."""
    if Path(path).is_dir():
        raise CheckpointError(f"{path}: a folder, not a checkpoint; give the checkpoint's .npz file")
    if not Path(path).exists():
        raise CheckpointError(f"{path}: no such checkpoint (it does not exist); train one first with "
                              f"{named('checkpoint')} {path}, then {then}")
    ckpt = ckpt_io.load(path)
    saved = ckpt.meta.get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: it holds no training settings; {ckpt_io.FIX}")
    spec, spec_bytes = read_spec(spec_file)
    name = saved.get("network")
    if not isinstance(name, str) or name not in spec.networks:
        raise CheckpointError(f"{path}: it was trained as network {name!r}, which {spec_file} does not "
                              f"define (it has {sorted(spec.networks)}); give the {named('spec')} it was trained with")
    if network and network != name:
        raise TrainingError(f"{path} holds network {name!r}, not {network!r}; drop {named('network')}")
    spec = fitted_to(spec, name, ckpt, path)
    meaning = ckpt_io.meaning(spec, name)
    ckpt_io.check_spec(ckpt, path, ckpt_io.fingerprint(meaning), str(spec_file), name, meaning,
                       ckpt_io.spec_hash(spec_bytes, name))
    return ckpt, spec, name, saved


def set_arrays(net, ckpt, path) -> None:
    """The checkpoint's weights and running statistics into `net`, each checked: present, of its shape, finite."""
    from . import checks

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


def trained_network(path, spec_file, network=None, optimize=None, then="export it"):
    """(the network with the checkpoint's weights and running statistics, the checkpoint)."""
    from ..compiler.network import load as load_network

    ckpt, spec, name, saved = open_checkpoint(path, spec_file, network, then)
    seed = saved.get("seed") if isinstance(saved.get("seed"), int) else None
    net = load_network(spec, network=name, seed=seed, optimize=optimize,
                       algorithms=recorded_algorithms(ckpt, path))
    set_arrays(net, ckpt, path)
    return net, ckpt


def fitted_to(spec, network, ckpt, path):
    """The spec with the network's `input: auto` and `classes` as the checkpoint's run had them from its data."""
    if not spec.networks[network].auto:
        return spec
    try:
        shape = ckpt_io.input_shape(ckpt)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return fitted(spec, network, shape, len(ckpt_io.class_names(ckpt)))
