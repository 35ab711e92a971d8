"""Bad specs get one line naming the file, the layer or kind, the field and what to fix."""
import copy
import warnings

import numpy as np
import pytest
import yaml

import engine
from notation import NotationWarning

from conftest import SPEC, run_script, spec_error

BASE = yaml.safe_load(SPEC.read_text())


def load_changed(tmp_path, change, network=None):
    data = copy.deepcopy(BASE)
    change(data)
    return spec_error(tmp_path, data, network)


def layer(data, name, net="seven-layer"):
    return next(l for l in data["networks"][net]["layers"] if l["name"] == name)


def test_unknown_layer_kind(tmp_path):
    msg = load_changed(tmp_path, lambda d: layer(d, "conv1").update(kind="convolution"))
    assert "layer 'conv1'" in msg and "field 'kind'" in msg and "'convolution' not found" in msg
    assert "conv2d" in msg  # the valid options


def test_unknown_activation(tmp_path):
    msg = load_changed(tmp_path, lambda d: layer(d, "dense1").update(activation="rectify"))
    assert "layer 'dense1'" in msg and "field 'activation'" in msg and "'rectify' not found" in msg


def test_missing_parameter(tmp_path):
    msg = load_changed(tmp_path, lambda d: d["kinds"]["dense"]["params"].pop("b"))
    assert "reads 'b'" in msg and "declare it under params" in msg and "forward[0]" in msg


def test_extra_parameter(tmp_path):
    msg = load_changed(tmp_path, lambda d: d["kinds"]["dense"]["params"].update(
        gain={"shape": ["units"], "init": "zeros"}))
    assert "param 'gain'" in msg and "no forward equation uses it" in msg


def test_jacobian_of_the_wrong_shape(tmp_path):
    msg = load_changed(tmp_path, lambda d: d["kinds"]["dense"]["backward"].update(
        w="dw[m,k] = dz[b,m] * x[b,k]"))
    assert "backward 'w'" in msg and "(1024, 3136)" in msg and "(3136, 1024)" in msg


def test_declared_jacobian_that_disagrees_with_the_derived_one_says_by_how_much(tmp_path):
    msg = load_changed(tmp_path, lambda d: d["kinds"]["conv2d"]["backward"].update(
        w="dw[m,n,u,v] = dz[b,i,j,v] * xp[b, s1*i+m, s2*j+n, u]"))  # the flip of (17) forgotten
    assert "layer 'conv1'" in msg and "backward 'w'" in msg and "disagrees with the derived one by" in msg


def test_a_wrong_step_in_a_jacobian_of_several_equations_names_the_layer(tmp_path):
    def transposed(d):  # rows for columns when the padding is undone
        d["kinds"]["conv2d"]["backward"]["x"][1] = "dx[c,t,u,v] = dxp[c, u+pl, t+pt, v]"
    msg = load_changed(tmp_path, transposed)
    assert "layer 'conv1' (conv2d), backward 'x'" in msg and "disagrees with the derived one by" in msg


def test_an_intermediate_of_a_jacobian_may_not_overwrite_a_tensor(tmp_path):
    def clobber(d):
        x = d["kinds"]["conv2d"]["backward"]["x"]
        x[0] = x[0].replace("dxp[", "xp[", 1)
        x[1] = x[1].replace("= dxp[", "= xp[")
    msg = load_changed(tmp_path, clobber)
    assert "backward 'x'[0]" in msg and "writes 'xp', which already names a tensor" in msg


def test_an_empty_list_is_not_a_jacobian(tmp_path):
    msg = load_changed(tmp_path, lambda d: d["kinds"]["conv2d"]["backward"].update(x=[]))
    assert "kind 'conv2d', backward 'x'" in msg and "empty list" in msg


def test_wrong_jacobian_that_cannot_be_derived_is_caught_by_finite_differences(tmp_path):
    msg = load_changed(tmp_path, lambda d: d["activations"]["softmax"]["backward"].update(
        z="dz[c,j] = da[b,i] * delta[b,c] * a[b,i] * delta[i,j]"))  # (23) without its - S_bj
    assert "activation 'softmax'" in msg and "central finite differences by" in msg


def test_shapes_that_do_not_chain_name_both_layers_and_shapes(tmp_path):
    msg = load_changed(tmp_path, lambda d: d["networks"]["seven-layer"]["layers"].insert(5, {
        "name": "pool3", "kind": "maxpool"}))  # an image layer after the flatten
    assert "layer 'pool3'" in msg and "layer 'flatten' gives shape (2, 3136)" in msg
    assert "[b, height, width, channels]" in msg


def test_a_network_whose_output_is_not_one_vector_per_example_is_refused_naming_the_last_layer(tmp_path):
    msg = load_changed(tmp_path, lambda d: d["networks"]["seven-layer"]["layers"].pop(4))  # no flatten
    assert "layer 'dense2'" in msg and "gives shape (2, 7, 7, 10)" in msg and "[b, classes]" in msg
    assert "a flatten" in msg


def test_yaml_syntax_error_gives_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("kinds:\n  dense:\n    cites: [12\n    input: x\n")
    with pytest.raises(engine.SpecError) as info:
        engine.load(path)
    assert str(info.value).startswith(f"{path}: line ") and "YAML syntax error" in str(info.value)


def test_a_typo_in_an_equation_points_at_the_kind_and_the_equation(tmp_path):
    msg = load_changed(tmp_path, lambda d: d["kinds"]["dense"].update(
        forward=["z[b,j] = x[b,i] * w[i,j] + b[j"]))
    assert "kind 'dense', forward[0]" in msg and "expected" in msg


def test_missing_spec_file_says_so(tmp_path):
    with pytest.raises(engine.SpecError, match="no such file"):
        engine.load(tmp_path / "nowhere.yaml")


def test_a_required_hyperparameter_left_out(tmp_path):
    msg = load_changed(tmp_path, lambda d: layer(d, "dense1").pop("units"))
    assert "layer 'dense1'" in msg and "field 'units'" in msg and "required" in msg


def test_every_equation_in_layers_yaml_cites_the_report():
    import re
    spec = engine.read(SPEC)
    kinds = list(spec.kinds.values()) + list(spec.activations.values()) + list(spec.losses.values())
    equations = [e for k in kinds for e in k.forward + (k.eval or []) + k.update + (
        [e for eqs in k.backward.values() for e in eqs] if isinstance(k.backward, dict) else [])]
    assert len(equations) > 20
    for e in equations:
        assert re.search(r"\(\d+\)|extension", spec.cite(e)), e.source


def test_a_spec_may_be_given_as_yaml_text():
    net = engine.load(SPEC.read_text(), network="softmax-regression", check=False)
    assert net.name == "softmax-regression" and net.spec.file == "<string>"
    with pytest.raises(engine.SpecError, match=r"^<string>: line 1, column \d+: YAML syntax error"):
        engine.load("kinds: [")


def test_every_user_facing_error_derives_from_one_root():
    """Scripts catch engine.UserError alone; it is a ValueError, as einops' EinopsError."""
    from engine.errors import CheckpointError, DataError, InputError, TrainingError
    from notation import NotationError, UserError
    assert engine.UserError is UserError and issubclass(UserError, ValueError)
    for cls in (NotationError, engine.SpecError, DataError, CheckpointError, TrainingError, InputError):
        assert issubclass(cls, UserError), cls


def test_an_input_of_the_wrong_shape_is_a_user_error_naming_the_shape():
    net = engine.load(SPEC, network="softmax-regression", check=False)
    with pytest.raises(engine.UserError, match=r"takes inputs of shape \(B, 28, 28, 1\), got \(8, 28, 28\)"):
        net.forward(np.zeros((8, 28, 28)))


MISSPELT = '''
  scale:
    cites: "extension: a per-channel scale"
    input: [b, height, width, channels]
    params:
      g: {shape: [channels], init: ones}
    forward:
      - z[b,i,j,k] = x[b,i,j,k] * g[m]
    backward: derive
'''


def test_an_index_summed_over_one_factor_alone_is_a_warning_naming_the_kind_and_equation():
    text = SPEC.read_text().replace("kinds:\n", "kinds:" + MISSPELT, 1)
    with pytest.warns(NotationWarning) as caught:
        engine.read(text)
    (w,) = caught
    assert str(w.message) == ("<string>: kind 'scale', forward[0]: 'z[b,i,j,k] = x[b,i,j,k] * g[m]' sums index 'm', "
                              "which only one factor of its product names; if that is meant, write the sum as an "
                              "equation of its own first, else correct the index")


def test_the_shipped_spec_loads_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.read(SPEC)


def test_a_script_prints_the_warning_as_one_line(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.read_text().replace("kinds:\n", "kinds:" + MISSPELT, 1))
    err = run_script("plan.py", "--spec", str(spec), "--batch", "2").stderr
    assert err.startswith(f"warning: {spec}: kind 'scale', forward[0]: ") and err.count("\n") == 1
