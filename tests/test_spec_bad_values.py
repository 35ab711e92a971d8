"""Values of the wrong type or meaning in layers.yaml, and wrong arguments to engine.load: one
SpecError line naming the file, the place and what to do -- never a TypeError, a ZeroDivisionError
or a RecursionError, and never accepted silently."""
import copy

import numpy as np
import pytest
import yaml

import engine
from notation import Equation, NotationError

from conftest import SPEC, run_script

BASE = yaml.safe_load(SPEC.read_text())


def layer(data, name, net="seven-layer"):
    return next(entry for entry in data["networks"][net]["layers"] if entry["name"] == name)


def spec_with(tmp_path, change):
    data = copy.deepcopy(BASE)
    change(data)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def refused(source, **kwargs):
    with pytest.raises(engine.SpecError) as info:
        engine.load(source, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# (id, change to the parsed layers.yaml, fragments the one line must hold)
WRONG_VALUES = [
    ("kind as a list", lambda d: layer(d, "conv1").update(kind=["conv2d"]),
     ["layer 'conv1', field 'kind'", "must be the name of a kind", "not a list"]),
    ("hyper as a list", lambda d: d["kinds"]["dense"].update(hyper=[1, 2]),
     ["kind 'dense', field 'hyper'", "must be a mapping", "not a list"]),
    ("kind input as a number", lambda d: d["kinds"]["dense"].update(input=5),
     ["kind 'dense', field 'input'", "names of the input's axes", "not the number 5"]),
    ("network input as a number", lambda d: d["networks"]["seven-layer"].update(input=5),
     ["network 'seven-layer', field 'input'", "[28, 28, 1]"]),
    ("kernel null", lambda d: layer(d, "conv1").update(kernel=None),
     ["layer 'conv1' (conv2d), field 'kernel'", "empty (null)", "give kernel a value"]),
    ("kernel a list", lambda d: layer(d, "conv1").update(kernel=[5, 5]),
     ["layer 'conv1' (conv2d), field 'kernel'", "not a list"]),
    ("kernel not whole", lambda d: layer(d, "conv1").update(kernel=2.5),
     ["field 'kernel'", "2.5 must be a positive whole number"]),
    ("activation as a list", lambda d: layer(d, "conv1").update(activation=["relu"]),
     ["layer 'conv1', field 'activation'", "name of an activation", "not a list"]),
    ("loss as a list", lambda d: d["networks"]["seven-layer"].update(loss=["softmax_cross_entropy"]),
     ["network 'seven-layer', field 'loss'", "name of a loss"]),
    ("network as a list", lambda d: d.update(network=["seven-layer"]),
     ["network: must be the name of one of the networks", "not a list"]),
    ("positions as a list", lambda d: d["kinds"]["maxpool"].update(positions=["z", "m"]),
     ["kind 'maxpool', field 'positions'", "mapping such as {z: m}"]),
    ("symbols as a list", lambda d: d["kinds"]["maxpool"].update(symbols=["s1", "s2"]),
     ["kind 'maxpool', field 'symbols'", "mapping such as"]),
    ("a symbol as a list", lambda d: d["kinds"]["maxpool"]["symbols"].update(P=[1]),
     ["kind 'maxpool', symbol 'P'", "size expression"]),
    ("params as a list", lambda d: d["kinds"]["dense"].update(params=["w", "b"]),
     ["kind 'dense', field 'params'", "mapping such as"]),
    ("init as a list", lambda d: d["kinds"]["dense"]["params"]["b"].update(init=["zeros"]),
     ["kind 'dense', param 'b', field 'init'", "name of an initialiser"]),
    ("shapes as a list", lambda d: d["kinds"]["conv2d"].update(shapes=["xp"]),
     ["kind 'conv2d', field 'shapes'", "mapping such as"]),
    ("a division by zero in a symbol", lambda d: d["kinds"]["maxpool"]["symbols"].update(s1="stride // 0"),
     ["layer 'pool1' (maxpool), symbol 's1'", "'stride // 0' divides by zero"]),
    ("a division by a zero size", lambda d: d["kinds"]["maxpool"]["symbols"].update(s1="stride // (size - 2)"),
     ["symbol 's1'", "divides by zero (size - 2 is 0)"]),
    ("filters as text", lambda d: layer(d, "conv1").update(filters="abc"),
     ["layer 'conv1' (conv2d)", "filters = 'abc' is not a whole number", "give filters a size"]),
    ("layer name as a list", lambda d: layer(d, "conv1").update(name=["conv1"]),
     ["network 'seven-layer', layers[0], field 'name'", "must be a word", "not a list"]),
    ("layer name as a number", lambda d: layer(d, "conv1").update(name=5),
     ["layers[0], field 'name'", "not the number 5"]),
    ("layer name with a slash", lambda d: layer(d, "conv1").update(name="conv/1"),
     ["layers[0], field 'name'", "must be a word"]),
    ("parentheses nested 3000 deep", lambda d: d["kinds"]["dense"].update(
        forward=["z[b,j] = " + "(" * 3000 + "x[b,i]" + ")" * 3000 + " * w[i,j] + b[j]"]),
     ["kind 'dense', forward[0]", "nested more than 64 deep"]),
    ("units of 10^8 (memory)", lambda d: layer(d, "dense1").update(units=10 ** 8),
     ["network 'seven-layer'", "parameters need about", "TiB of memory", "dense1.w 3136x100000000",
      "are available"]),
]


@pytest.mark.parametrize("change, fragments", [c[1:] for c in WRONG_VALUES], ids=[c[0] for c in WRONG_VALUES])
def test_a_value_of_the_wrong_type_or_size_is_one_line(tmp_path, change, fragments):
    path = spec_with(tmp_path, change)
    message = refused(path)
    assert message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("text, fragment", [
    ("units: 1024", "units: 1e8"), ("filters: 64", "filters: 4e6")], ids=["units: 1e8", "filters: 4e6"])
def test_sizes_written_1e8_are_numbers_and_refused_when_they_cannot_fit(tmp_path, text, fragment):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.read_text().replace(text, fragment))
    message = refused(path)
    assert "parameters need about" in message and "are available" in message


def test_a_whole_number_written_as_a_float_is_a_size(tmp_path):
    path = spec_with(tmp_path, lambda d: layer(d, "dense", "softmax-regression").update(units=10.0))
    assert engine.load(path, network="softmax-regression", check=False).param_shapes["dense"]["w"] == (784, 10)


DUPLICATES = [
    ("a network", "  softmax-regression:\n", "  seven-layer:\n    cites: x\n    input: [28, 28, 1]\n"
     "    loss: softmax_cross_entropy\n    layers: [{name: f, kind: flatten}]\n  softmax-regression:\n",
     "'seven-layer' is given twice"),
    ("a kind", "  conv2d:\n", "  dense:\n    cites: x\n    forward: []\n  conv2d:\n", "'dense' is given twice"),
    ("a field", "    hyper: {size: 2, stride: 2}\n", "    hyper: {size: 2, stride: 2}\n    hyper: {size: 3}\n",
     "'hyper' is given twice"),
]


@pytest.mark.parametrize("old, new, fragment", [d[1:] for d in DUPLICATES], ids=[d[0] for d in DUPLICATES])
def test_a_key_given_twice_is_refused_with_both_line_numbers(tmp_path, old, new, fragment):
    text = SPEC.read_text()
    assert old in text
    path = tmp_path / "spec.yaml"
    path.write_text(text.replace(old, new, 1))
    message = refused(path)
    assert fragment in message
    key = fragment.split("'")[1] + ":"
    start = text[:text.index(old)].count("\n") + 1  # the line number of new's first line
    second = [start + n for n, line in enumerate(new.splitlines()) if line.strip().startswith(key)]
    indent = " " * (len(new.splitlines()[second[-1] - start]) - len(new.splitlines()[second[-1] - start].lstrip()))
    first = max(n + 1 for n, line in enumerate(path.read_text().splitlines())
                if line.startswith(indent + key) and n + 1 < second[-1])
    assert f"lines {first} and {second[-1]}" in message


@pytest.mark.parametrize("source, fragment", [
    (None, "the spec must be a path such as 'layers.yaml', YAML text or a dict, not nothing (null)"),
    (42, "not the number 42"),
    (["layers.yaml"], "not a list"),
], ids=["None", "a number", "a list"])
def test_engine_load_of_something_that_is_no_spec(source, fragment):
    assert fragment in refused(source)


def test_engine_load_names_a_network_by_a_string():
    message = refused(SPEC, network=["seven-layer"])
    assert "must be the name of a network" in message and "softmax-regression" in message


@pytest.mark.parametrize("name, content", [("x.txt", "hello there\n"), ("notes", "just: words\n")])
def test_an_existing_file_that_is_no_spec_is_named_as_the_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    message = refused(str(path))
    assert message.startswith(str(path)) and "<string>" not in message


def test_a_missing_file_given_as_a_path_is_reported_missing(tmp_path):
    assert "no such file" in refused(str(tmp_path / "spec.txt"))


def test_net_forward_reports_the_shape_it_was_given():
    net = engine.load(SPEC, network="softmax-regression", check=False)
    with pytest.raises(ValueError) as info:
        net.forward(np.zeros((8, 28, 28)))
    assert "got (8, 28, 28)" in str(info.value) and "x[..., None]" in str(info.value)
    assert net.forward(np.zeros((28, 28, 1))).shape == (1, 10)  # one example still works


def test_float_labels_are_reported_as_labels_of_the_wrong_type():
    net = engine.load(SPEC, network="softmax-regression", check=False)
    with pytest.raises(ValueError) as info:
        net.loss_and_grads(np.zeros((4, 28, 28, 1)), np.array([1.0, 2.0, 3.0, 4.0]))
    assert "whole class numbers" in str(info.value) and "float64" in str(info.value)


def test_a_max_window_with_no_known_extent_names_the_missing_range():
    with pytest.raises(NotationError) as info:
        Equation("z[b,i,j,k] = max[p,q] x[b, 2*i+p, 2*j+q, k]").compile(shapes={"x": (2, 8, 8, 3)})
    assert "cannot tell the range of index 'p'" in info.value.reason
    assert "give P (the last value of p)" in info.value.hint


# -- scripts/plan.py -------------------------------------------------------------------------
def test_plan_runs_the_load_time_checks_and_refuses_a_wrong_jacobian(tmp_path):
    path = spec_with(tmp_path, lambda d: d["kinds"]["dense"]["backward"].update(w="dw[k,m] = 2 * dz[b,m] * x[b,k]"))
    out = run_script("plan.py", "--spec", path, ok=False)
    assert out.returncode == 2 and "backward 'w'" in out.stderr and "disagrees" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not out.stdout


@pytest.mark.parametrize("args, fragment", [
    (["--batch", "abc"], "invalid int value: 'abc'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--format", "xml"], "invalid choice: 'xml'"),
    (["--batch", "0"], "at least 1"),
], ids=["batch not a number", "unknown flag", "unknown format", "batch 0"])
def test_plan_flag_errors_are_one_line(args, fragment):
    out = run_script("plan.py", *args, ok=False)
    assert out.returncode == 2 and fragment in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_plan_on_a_list_valued_kind_is_one_line(tmp_path):
    path = spec_with(tmp_path, lambda d: layer(d, "conv1").update(kind=["conv2d"]))
    out = run_script("plan.py", "--spec", path, ok=False)
    assert out.returncode == 2 and "field 'kind'" in out.stderr and "Traceback" not in out.stderr


def test_plan_piped_into_head_stops_quietly(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT
    out = subprocess.run(f"'{sys.executable}' '{ROOT / 'scripts' / 'plan.py'}' --network softmax-regression "
                         "| head -1; exit ${PIPESTATUS[0]}", shell=True, executable="/bin/bash",
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0 and out.stderr == "" and len(out.stdout.splitlines()) == 1
