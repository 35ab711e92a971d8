"""Contraction plans (engine/plans.py, scripts/plan.py): opt_einsum's figures, per layer, readable.

opt_einsum's FLOP convention, which every figure here follows: a step costs the product of the
extents of all the indices it touches, times (operands - 1, at least 1), plus 1 when it sums
an index away.  So a GEMM z[b,j] = x[b,i] * w[i,j] counts 2*B*I*J (a multiply and an add per
(b,i,j)), and a bias term z[b,j] += b[j] counts J.
"""
import copy
import json

import pytest
import yaml

import engine
from engine.compiler import plan_schema, plans
from notation import Equation
from notation.mathematics.derive import derive

from conftest import SPEC, run_script, spec_with

B = 8

LOW_RANK = yaml.safe_load("""
cites: "extension: (12) with w = u v"
input: [b, features]
hyper: {units: required, rank: 64}
params:
  u: {shape: [features, rank], init: he}
  v: {shape: [rank, units], init: he}
forward:
  - z[b,j] = x[b,i] * u[i,r] * v[r,j]
backward: derive
""")


@pytest.fixture(scope="module")
def seven():
    return plans.collect(engine.load(SPEC, check=False), B)


@pytest.fixture(scope="module")
def im2col():
    """The seven-layer network with both convolutions on the im2col chain."""
    return plans.collect(engine.load(spec_with(conv1="im2col", conv2="im2col"), check=False), B)


@pytest.fixture(scope="module")
def custom_spec(tmp_path_factory):
    """A spec with a new kind, a low-rank dense layer of three operands, where optimisers differ."""
    data = copy.deepcopy(yaml.safe_load(SPEC.read_text()))
    data["kinds"]["lowrank"] = LOW_RANK
    data["networks"]["factored"] = {
        "cites": "test", "input": [28, 28, 1], "loss": "softmax_cross_entropy",
        "layers": [{"name": "flatten", "kind": "flatten"},
                   {"name": "out", "kind": "lowrank", "units": 10, "activation": "softmax"}]}
    data["network"] = "factored"
    path = tmp_path_factory.mktemp("spec") / "custom.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def contraction(doc, cid):
    return next(c for b in doc["blocks"] for c in b["contractions"] if c["id"] == cid)


def plan(*args):
    return run_script("plan.py", *args).stdout


# -- figures -----------------------------------------------------------------------------------
def test_dense_flops_match_a_hand_count():
    doc = plans.collect(engine.load(SPEC, network="softmax-regression", check=False), B)
    I, J = 28 * 28, 10
    z = contraction(doc, "dense/forward/z")
    gemm, bias = z["products"]
    assert gemm["steps"][0]["kind"] == "GEMM"
    assert gemm["optimized_flops"] == gemm["naive_flops"] == 2 * B * I * J
    assert bias["optimized_flops"] == J
    assert z["optimized_flops"] == 2 * B * I * J + J
    assert gemm["largest_intermediate"] == {"elements": B * J, "bytes": 4 * B * J}  # float32
    assert contraction(doc, "dense/backward/dw")["optimized_flops"] == 2 * B * I * J  # (14)


def test_convolution_flops_match_a_hand_count(im2col):
    # conv2: 14x14 output (same padding), 5x5 kernel, 32 channels in, 64 filters
    hand = 2 * B * 14 * 14 * 5 * 5 * 32 * 64
    z = contraction(im2col, "conv2/forward/z")
    assert z["products"][0]["optimized_flops"] == hand  # (15)
    assert z["products"][0]["steps"][0]["kind"] == "GEMM"
    assert contraction(im2col, "conv2/backward/dxu")["optimized_flops"] == hand  # (16), rows gathered
    assert contraction(im2col, "conv2/backward/dw")["optimized_flops"] == hand  # (17)
    assert contraction(im2col, "conv1/forward/z")["products"][0]["optimized_flops"] == 2 * B * 28 * 28 * 25 * 32
    conv2 = next(b for b in im2col["blocks"] if b["name"] == "conv2")
    # the definition: (15) and (17) one GEMM each, (16) as the report writes it (substituted)
    assert conv2["algorithm"]["definition_step_flops"] == 3 * hand + 64 + B * 14 * 14 * 64 * 2 + 2 * B * 14 * 14 * 32


def test_each_contraction_carries_its_spec_equation_and_report_number(im2col):
    z = contraction(im2col, "conv2/forward/z")
    assert z["source"] == "z[b,i,j,k] = xc[b,i,j,p,q,r] * w[P-p, Q-q, r, k] + b[k]"
    assert z["cite"] == "(15), plus (2)"
    assert contraction(im2col, "conv2/backward/dxu")["cite"] == "(16) with p = P + s1*i - t"
    kinds = {v["tensor"]: v["kind"] for v in contraction(im2col, "conv2/forward/xc")["products"][0]["views"]}
    assert kinds == {"xp": "window"}
    fold = contraction(im2col, "conv2/backward/dxu")["products"][0]["fold"]
    assert fold["kind"] == "slice-add" and fold["adds"] == 5  # across the width only


def test_totals_add_up_and_leave_out_what_training_does_not_run(seven):
    t = seven["totals"]
    assert t["step_flops"] == t["forward_flops"] + t["backward_flops"]
    assert t["step_flops"] == sum(r["forward_flops"] + r["backward_flops"] for r in t["by_block"])
    assert t["per_image"]["step"] == t["step_flops"] / B
    assert t["dominant"] == t["largest"][0]["id"]
    assert [c["id"] for c in t["not_in_step"]] == ["dense2.softmax/backward/dz"]  # the loss gives dz (26)
    ids = [c["id"] for b in seven["blocks"] for c in b["contractions"]]
    assert "conv1/backward/dx" not in ids  # the first layer needs no input gradient


def test_the_plan_follows_an_edit_of_layers_yaml(tmp_path):
    text = SPEC.read_text()
    old = "{name: conv1, kind: conv2d, filters: 32, kernel: 5"
    assert old in text
    edited = tmp_path / "layers.yaml"
    edited.write_text(text.replace(old, old[:-1] + "3"))
    doc = plans.collect(engine.load(edited, check=False), B)
    z = contraction(doc, "conv1/forward/z")
    w = next(v for v in z["products"][0]["views"] if v["tensor"] == "w")
    assert w["shape"] == [3, 3, 1, 32]
    assert contraction(doc, "conv1/forward/xc")["result_shape"] == [3, 3, 1, B, 28, 28]  # channels first
    assert z["products"][0]["optimized_flops"] == 2 * B * 28 * 28 * 3 * 3 * 1 * 32
    assert z["cite"] == "(15), plus (2)"


def test_step_flops_sum_to_the_paths_cost(custom_spec):
    doc = plans.collect(engine.load(custom_spec, check=False), B)
    z = contraction(doc, "out/forward/z")["products"][0]
    assert len(z["steps"]) == 2 and all(s["kind"] == "GEMM" for s in z["steps"])
    assert sum(s["flops"] for s in z["steps"]) == z["optimized_flops"]


# -- forms -------------------------------------------------------------------------------------
def test_network_plans_is_the_text_form(seven):
    net = engine.load(SPEC, check=False)
    assert net.plans(batch=B) == plans.render_text(plans.collect(net, B))


def test_text_fits_100_columns(seven, custom_spec):
    custom = plans.collect(engine.load(custom_spec, optimize="greedy", check=False), B)
    custom["compare"] = plans.compare(custom, plans.collect(engine.load(custom_spec, check=False), B))
    for doc in (seven, custom):
        text = plans.render_text(doc)
        assert max(len(line) for line in text.splitlines()) <= 100
    assert "path pqrbij,pqrk->bijk [GEMM -> np.matmul]" in plans.render_text(seven)  # conv1, windows channels first


def test_markdown_is_a_table(seven):
    lines = plans.render_markdown(seven).splitlines()
    head = lines.index(next(line for line in lines if line.startswith("| block | pass |")))
    cells = lines[head].count(" | ")
    assert set(lines[head + 1].replace(" ", "").strip("|").split("|")) <= {"---", "---:"}
    rows = []
    for line in lines[head + 2:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    assert len(rows) == sum(len(c["products"]) for b in seven["blocks"] for c in b["contractions"])
    assert all(r.replace("\\|", "").count(" | ") == cells for r in rows)
    assert any("`z[b,i,j,k] = xc[p,q,r,b,i,j] * w[P-p, Q-q, r, k] + b[k]`" in r for r in rows)  # conv1


# -- the script --------------------------------------------------------------------------------
def check_schema(doc):
    """The schema scripts/plan.py documents (engine/plan_schema.py), key by key and type by type,
    and what the types alone cannot say."""
    plan_schema.check(doc)
    assert doc["schema"] == "einsum-plan/2"
    for b in doc["blocks"]:
        for c in b["contractions"]:
            assert c["strategies"] == [p["strategy"]["name"] for p in c["products"]]
            for p in c["products"]:
                assert all(isinstance(s["flops"], int) for s in p["steps"])
                walked = p["strategy"]["steps"]
                assert [s["runs"] for s in p["steps"]] == ([w["runs"] for w in walked] if walked
                                                            else [None] * len(p["steps"]))


def test_the_schema_check_catches_a_missing_key_and_a_wrong_type(seven):
    broken = copy.deepcopy(seven)
    del broken["blocks"][0]["contractions"][0]["products"][0]["strategy"]
    with pytest.raises(AssertionError, match=r"products\[0\]: missing \['strategy'\]"):
        plan_schema.check(broken)
    broken = copy.deepcopy(seven)
    broken["batch"] = "8"
    with pytest.raises(AssertionError, match="document.batch: '8' is not int"):
        plan_schema.check(broken)


def test_the_script_prints_the_schema_it_follows():
    text = plan("--schema")
    assert text.strip() == plan_schema.render()
    assert text.startswith("Document = {") and '"schema": "einsum-plan/2",' in text
    assert '"strategy": Strategy,' in text and "Strategy = {" in text


@pytest.mark.parametrize("network", ["seven-layer", "softmax-regression"])
def test_the_script_prints_json_that_follows_the_schema(network):
    doc = json.loads(plan("--network", network, "--batch", str(B), "--format", "json"))
    check_schema(doc)
    assert doc["network"] == network and doc["batch"] == B


def test_the_script_text_is_network_plans():
    text = plan("--batch", str(B))
    net_text = engine.load(SPEC, check=False).plans(batch=B)
    def body(t):  # all but the header, which names the spec's path and may wrap
        lines = t.splitlines()
        return lines[next(n for n, line in enumerate(lines) if line.startswith("FLOPs:")):]
    assert body(text) == body(net_text)


def test_compare_shows_where_two_optimisers_differ_on_a_custom_spec(custom_spec):
    # at batch 64 greedy contracts x with u first (64x784x64), optimal u with v (784x64x10)
    text = plan("--spec", str(custom_spec), "--optimize", "greedy", "--compare", "optimal")
    section = text[text.index("== optimize 'greedy' vs 'optimal'"):]
    assert "out/forward/z: bi,ir,rj->bj" in section
    assert max(len(line) for line in text.splitlines()) <= 100
    doc = json.loads(plan("--spec", str(custom_spec), "--optimize", "greedy", "--compare", "optimal",
                                "--format", "json"))
    check_schema(doc)
    diff = next(d for d in doc["compare"]["differences"] if d["id"] == "out/forward/z")
    assert diff["b"]["optimized_flops"] < diff["a"]["optimized_flops"]
    md = plan("--spec", str(custom_spec), "--batch", str(B), "--compare", "greedy", "--format", "markdown")
    assert "### optimize `auto` vs `greedy`" in md


def test_an_unknown_optimiser_is_refused_with_the_valid_names():
    out = run_script("plan.py", "--optimize", "fastest", ok=False)
    assert out.returncode == 2 and "'fastest' not found, valid options are" in out.stderr


def test_each_contraction_heading_keeps_its_name_apart_from_its_equation():
    text = plan("--network", "zoo", "--batch", "2")
    heads = [line for line in text.splitlines() if line.split(" ", 1)[0] in ("forward", "backward", "update", "eval")]
    assert heads and all("[" not in line.split()[1] for line in heads), [h for h in heads if "[" in h.split()[1]]


def test_speed_up_is_shown_only_where_the_path_beats_the_naive_sum():
    text = plan("--network", "seven-layer-bn", "--batch", "2")
    assert "speed-up 0.5x" not in text and "speed-up 1x" not in text
    assert "speed-up" in text  # (12)'s dense products: a path over three operands does beat it


def test_a_derived_coefficient_is_written_as_the_spec_would_write_it():
    assert derive(Equation("z[b] = 0.0356774081 * x[b]"), "x") == "dx[b] = 0.0356774081 * dz[b]"
    assert derive(Equation("z[b] = -x[b] / 8"), "x") == "dx[b] = -0.125 * dz[b]"
    assert derive(Equation("z[b] = x[b] / 3"), "x") == "dx[b] = 1/3 * dz[b]"
