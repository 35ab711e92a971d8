"""A checkpoint's meaning is compared by what it means, not by its spelling: fields added empty,
indices renamed and `...` for leading axes spelt out before are no change; real changes still are."""
import copy

import pytest

import engine
from engine.training import checkpoint
from engine.training.checkpoint import CheckpointError
from notation.language.canonical import same

from conftest import SPEC, TINY_RUN, load_train_script, needs_mnist, refused_run, rewrite_checkpoint

# dense as layers.yaml spelt it before its leading axes became `...` (main before the attention branch)
OLD_DENSE = {"inputs": ["b", "features"], "forward": ["z[b,j] = x[b,i] * w[i,j] + b[j]"],
             "backward": {"x": ["dx[c,k] = dz[c,j] * w[k,j]"], "w": ["dw[k,m] = dz[b,m] * x[b,k]"],
                          "b": ["db[i] = dz[b,i]"]}}
OLD_ADD = {"inputs": {"x1": ["b", "height", "width", "channels"], "x2": ["b", "height", "width", "channels"]},
           "forward": ["z[b,i,j,k] = x1[b,i,j,k] + x2[b,i,j,k]"]}
NEW_ADD = {"inputs": {"x1": ["...", "channels"], "x2": ["...", "channels"]},
           "forward": ["z[...,k] = x1[...,k] + x2[...,k]"], "divides": {}, "no_gradient": []}


def spelt_as_before(meaning: dict) -> dict:
    """The meaning as a checkpoint written before the ellipsis and the new kind fields recorded it."""
    old = copy.deepcopy(meaning)
    for section in ("kinds", "activations", "losses"):
        for entry in old[section].values():
            entry.pop("divides", None)
            entry.pop("no_gradient", None)
    old["kinds"]["dense"].update(copy.deepcopy(OLD_DENSE))
    return old


def now(network="seven-layer") -> dict:
    return checkpoint.meaning(engine.read(SPEC), network)


def refusal(old: dict, new: dict) -> str:
    ckpt = checkpoint.Checkpoint({}, {}, {}, {"meaning": old, "network": "seven-layer"})
    with pytest.raises(CheckpointError) as info:
        checkpoint.check_spec(ckpt, "old.npz", checkpoint.fingerprint(new), str(SPEC), "seven-layer", new)
    return str(info.value)


def test_a_meaning_spelt_before_the_ellipsis_is_accepted_by_the_spec_as_it_is_now():
    new = now()
    ckpt = checkpoint.Checkpoint({}, {}, {}, {"meaning": spelt_as_before(new), "network": "seven-layer"})
    checkpoint.check_spec(ckpt, "old.npz", checkpoint.fingerprint(new), str(SPEC), "seven-layer", new)


def test_fields_added_or_removed_empty_are_no_change_but_with_a_value_they_are():
    old = {"kinds": {"dense": {"forward": ["z[b,j] = x[b,i]"], "eval": None}}}
    new = {"kinds": {"dense": {"forward": ["z[b,j] = x[b,i]"], "divides": {}, "no_gradient": [], "why": ""}}}
    assert checkpoint.differences(old, new) == []
    new["kinds"]["dense"]["no_gradient"] = ["z"]
    assert checkpoint.differences(old, new) == ["kind 'dense' no_gradient added"]


def test_an_ellipsis_standing_for_three_leading_axes_matches_them_spelt_out():
    assert checkpoint.differences({"kinds": {"add": OLD_ADD}}, {"kinds": {"add": NEW_ADD}}) == []


def test_equations_are_compared_up_to_the_names_of_their_indices():
    assert same("dx[c,k] = dz[c,j] * w[k,j]", "dx[...,k] = dz[...,j] * w[k,j]") == (True, 1)
    assert same("dw[k,m] = dz[b,m] * x[b,k]", "dw[i,j] = dz[n,j] * x[n,i]") == (True, None)
    assert same("z[b,j] = x[b,i] * w[i,j]", "z[b,j] = x[b,i] * w[j,i]") == (False, None)


def test_an_index_tied_to_its_upper_case_extent_keeps_its_name():
    assert same("z[b,p] = x[b, P - p]", "z[b,q] = x[b, P - q]") == (False, None)
    assert same("z[b,p] = x[b, P - p]", "z[c,p] = x[c, P - p]") == (True, None)


@pytest.mark.parametrize("change, edit, named", [
    ("an equation", lambda d: d["forward"].__setitem__(0, "z[b,j] = x[b,i] * w[j,i] + b[j]"),
     "kind 'dense' forward[0] 'z[b,j] = x[b,i] * w[j,i] + b[j]' -> 'z[...,j] = x[...,i] * w[i,j] + b[j]'"),
    ("a term", lambda d: d["forward"].__setitem__(0, "z[b,j] = x[b,i] * w[i,j]"),
     "kind 'dense' forward[0] 'z[b,j] = x[b,i] * w[i,j]' -> "),
    ("the input's axes", lambda d: d.__setitem__("inputs", ["b", "tokens"]),
     "kind 'dense' inputs [\"b\", \"tokens\"] -> [\"...\", \"features\"]"),
    ("the number of leading axes", lambda d: d.__setitem__("inputs", ["b", "n", "features"]),
     "kind 'dense' ... stands for different numbers of leading axes (2 in inputs, 1 in forward[0]"),
    ("a field with a value", lambda d: d.__setitem__("positions", {"x": "first"}),
     "kind 'dense' positions x removed"),
])
def test_a_real_change_to_an_old_spelt_meaning_is_still_refused_naming_it(change, edit, named):
    new = now()
    old = spelt_as_before(new)
    edit(old["kinds"]["dense"])
    assert "no longer means what it was trained as" in (err := refusal(old, new)) and named in err, err


def test_a_changed_unit_count_is_still_refused_beside_the_old_spelling():
    new = now()
    old = spelt_as_before(new)
    old["layers"][-1]["hyper"]["units"] = 20
    assert "layer 'dense2' hyper units 20 -> 10" in refusal(old, new)


@needs_mnist
def test_a_checkpoint_written_before_the_ellipsis_evaluates_and_resumes(tmp_path, capsys):
    cli = load_train_script("train_script_meaning")
    path = tmp_path / "old.npz"
    assert cli.main([*TINY_RUN, "--epochs", "1", "--checkpoint", str(path)]) == 0
    rewrite_checkpoint(path, meta=lambda m: m.__setitem__("meaning", spelt_as_before(m["meaning"])))
    capsys.readouterr()
    assert cli.main([*TINY_RUN[2:8], "--checkpoint", str(path), "--eval-only"]) == 0, capsys.readouterr().err
    assert cli.main([*TINY_RUN, "--epochs", "2", "--checkpoint", str(path), "--resume"]) == 0, capsys.readouterr().err
    assert checkpoint.load(path).meta["epoch"] == 2


def test_jacobians_written_another_way_refuse_a_resume_but_not_an_evaluation():
    """The forward is what weights mean; the Jacobians only what a resumed run's bits would be."""
    new = now("resnet")
    old = copy.deepcopy(new)
    old["kinds"]["batchnorm"]["backward"] = "derive"  # as checkpoints before the short form recorded it
    ckpt = checkpoint.Checkpoint({}, {}, {}, {"meaning": old, "network": "resnet"})
    checkpoint.check_spec(ckpt, "old.npz", checkpoint.fingerprint(new), str(SPEC), "resnet", new, resuming=False)
    with pytest.raises(CheckpointError) as info:
        checkpoint.check_spec(ckpt, "old.npz", checkpoint.fingerprint(new), str(SPEC), "resnet", new)
    assert "Jacobians" in str(info.value) and "kind 'batchnorm' backward 'derive'" in str(info.value)
    old["kinds"]["batchnorm"]["forward"][-1] = "z[b,i,j,k] = xh[b,i,j,k] * g[k]"
    with pytest.raises(CheckpointError, match="no longer means what it was trained as"):
        checkpoint.check_spec(ckpt, "old.npz", checkpoint.fingerprint(new), str(SPEC), "resnet", new, resuming=False)


@needs_mnist
def test_a_checkpoint_whose_old_spelling_hides_a_jacobian_change_evaluates_but_is_not_resumed(tmp_path, capsys):
    cli = load_train_script("train_script_meaning")
    path = tmp_path / "old.npz"
    assert cli.main([*TINY_RUN, "--epochs", "1", "--checkpoint", str(path)]) == 0

    def doubled(meta):
        meta["meaning"] = spelt_as_before(meta["meaning"])
        meta["meaning"]["kinds"]["dense"]["backward"]["b"] = ["db[i] = 2 * dz[b,i]"]
    rewrite_checkpoint(path, meta=doubled)
    capsys.readouterr()
    assert cli.main([*TINY_RUN[2:8], "--checkpoint", str(path), "--eval-only"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    _, err = refused_run(cli, capsys, [*TINY_RUN, "--epochs", "2", "--checkpoint", str(path), "--resume"])
    assert "kind 'dense' backward b[0] 'db[i] = 2 * dz[b,i]' -> 'db[i] = dz[...,i]'" in err, err
    assert "Jacobians" in err and "resume with the spec it was trained with" in err, err
