"""The transformer's kinds: checked as the zoo's are on random sizes (hypothesis), derived through
attention's chain (a stable softmax, a fan-out, products of two activations), refused with one line
for bad hyperparameters, and planned on np.matmul."""
import copy
import dataclasses

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from test_zoo import ZOO, check_kind

import engine
from engine.compiler.layer import Block
from notation.mathematics.derive import grad

from conftest import SPEC, spec_error

BASE = yaml.safe_load(SPEC.read_text())
FEW = settings(max_examples=8, deadline=None)


# -- every token kind as the zoo's, on random sizes --------------------------------------------

@FEW
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.integers(0, 99))
def test_attention_matches_central_differences_and_float32_on_random_sizes(b, n, heads, e, seed):
    check_kind("attention", {"x": (b, n, heads * e)}, seed=seed, heads=heads)


@FEW
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(1, 3),
       st.integers(1, 4))
def test_patch_embedding_matches_central_differences_on_random_sizes(b, patch, rows, cols, channels, dim):
    check_kind("patch_embedding", {"x": (b, patch * rows, patch * cols, channels)}, patch=patch, dim=dim)


@FEW
@given(st.lists(st.integers(1, 3), min_size=1, max_size=3), st.integers(3, 6), st.integers(0, 99))
def test_layernorm_normalises_the_last_axis_under_any_leading_axes(lead, features, seed):
    block = check_kind("layernorm", {"x": (*lead, features)}, seed=seed)  # 2 features: z = +-1, dx = 0
    x = np.random.default_rng(seed).standard_normal((*lead, features)) * 3 + 2
    z = block.forward({"x": x, "g": np.ones(features), "beta": np.zeros(features)})["z"]
    np.testing.assert_allclose(z.mean(axis=-1), 0, atol=1e-10)


@FEW
@given(st.lists(st.integers(1, 3), min_size=1, max_size=3), st.integers(1, 4), st.integers(1, 4))
def test_dense_applies_to_each_token_under_any_leading_axes(lead, features, units):
    check_kind("dense", {"x": (*lead, features)}, units=units)


@FEW
@given(st.integers(1, 3), st.integers(2, 4), st.integers(2, 4), st.integers(1, 4))
def test_token_mixing_and_the_token_kinds_match_central_differences(b, n, d, units):
    check_kind("token_mixing", {"x": (b, n, d)}, units=units)
    check_kind("positional_embedding", {"x": (b, n, d)})
    check_kind("mean_pool", {"x": (b, n, d)})
    check_kind("add", {"x1": (b, n, d), "x2": (b, n, d)})


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_dropout_masks_each_entry_of_a_token_tensor(mode):
    block = check_kind("dropout", {"x": (2, 3, 4)}, mode=mode, rate=0.3)
    assert [shape for _, shape, _ in block.random] == ([(2, 3, 4)] if mode == "train" else [])


def test_gelu_is_the_tanh_form():
    block = check_kind("gelu", {"z": (2, 7)}, section="activations")
    z = np.linspace(-4, 4, 14).reshape(2, 7)
    a = block.forward({"z": z})["a"]
    np.testing.assert_allclose(a, 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3))), rtol=1e-14)


# -- derive through attention's chain ----------------------------------------------------------

def derived(kind, x_shape, **hyper):
    """The attention kind (or a variant) built in float64 with its derived backward: {gradient: equation}."""
    block = Block(ZOO, kind, {**ZOO.kinds["attention"].hyper, **hyper}, {"x": x_shape}, "attention", dtype=np.float64)
    return block, {step.result: str(step.run.equation) for step in block.backward_runs}


def test_a_tensor_read_by_three_projections_gets_one_gradient_of_three_terms():
    _, eqs = derived(ZOO.kinds["attention"], (2, 3, 4), heads=2)
    assert eqs["dx"] == ("dx[b,n,i] = dq[b,n,h,e] * wq[i, E*h + e] + dk[b,n,h,e] * wk[i, E*h + e] "
                         "+ dv[b,n,h,e] * wv[i, E*h + e]")


def test_a_product_of_two_activations_sends_each_the_other_as_its_gradient():
    _, eqs = derived(ZOO.kinds["attention"], (2, 3, 4), heads=2)
    assert eqs["dq"] == "dq[b,n,h,e] = ds[b,h,n,m] * k[b,m,h,e] * scale"
    assert eqs["dk"] == "dk[b,m,h,e] = ds[b,h,n,m] * q[b,n,h,e] * scale"
    assert eqs["dp"] == "dp[b,h,n,m] = do[b,n,h,e] * v[b,m,h,e]"
    assert eqs["dv"] == "dv[b,m,h,e] = do[b,n,h,e] * p[b,h,n,m]"


def test_the_softmax_shift_is_a_constant_for_derive_and_passes_no_gradient():
    _, eqs = derived(ZOO.kinds["attention"], (2, 3, 4), heads=2)
    assert "dsm" not in eqs
    assert eqs["ds"] == "ds[b,h,n,m] = dex[b,h,n,m] * ex[b,h,n,m]"  # exp's own result, not computed again


def test_differentiating_through_the_softmax_shift_leaves_every_gradient_unchanged():
    """The max, taken through its positions (as (19) does), adds nothing: (22) is shift-invariant."""
    kind = ZOO.kinds["attention"]
    through = dataclasses.replace(kind, no_gradient=(), positions={"sm": "pm"})
    rng = np.random.default_rng(4)
    shapes = {"x": (2, 4, 6)}
    a, _ = derived(kind, shapes["x"], heads=3)
    b, eqs = derived(through, shapes["x"], heads=3)
    assert "dsm" in eqs
    env = {"x": rng.standard_normal(shapes["x"])}
    env.update({p: rng.standard_normal(s) for p, s in a.param_shapes.items()})
    upstream = rng.standard_normal(a.out_shape)
    results = []
    for block in (a, b):
        work = block.forward(dict(env))
        work[grad("z")] = upstream
        block.backward(work)
        results.append({t: work[grad(t)].copy() for t in ["x", *block.param_shapes]})
    for t, want in results[0].items():
        np.testing.assert_allclose(results[1][t], want, rtol=1e-12, atol=1e-13, err_msg=t)


def test_differentiating_through_the_softmax_shift_matches_central_differences_too():
    kind = dataclasses.replace(ZOO.kinds["attention"], no_gradient=(), positions={"sm": "pm"})
    ZOO.kinds["attention_through_the_max"] = kind
    try:
        check_kind("attention_through_the_max", {"x": (2, 3, 4)}, heads=2)
    finally:
        del ZOO.kinds["attention_through_the_max"]


# -- plans ----------------------------------------------------------------------------------------

PRODUCTS = {"q", "k", "v", "s", "o", "z", "dq", "dk", "dv", "dp", "do", "dx", "dwq", "dwk", "dwv", "dwo"}


def test_every_product_of_attention_runs_on_np_matmul():
    block = Block(ZOO, ZOO.kinds["attention"], {"heads": 4, "init": "glorot"}, {"x": (64, 16, 64)}, "attention")
    runs = {step.result: step.run for step in block.forward_runs}
    runs.update({step.result: step.run for step in block.backward_runs})
    assert PRODUCTS <= set(runs)
    for name in PRODUCTS:
        products = [p for p in runs[name].describe()["products"] if "," in p["einsum"]]  # not a bias
        assert products, name
        for p in products:
            assert "np.matmul" in p["strategy"]["runs"] and p["optimized_flops"] > 0, (name, p["strategy"])
    assert {runs[n].strategies[0] for n in ("s", "o", "dq", "dk", "dp", "dv")} == {"stacked GEMM"}


# -- bad hyperparameters: one line naming the layer and the field ---------------------------------

def vit_with(change):
    data = copy.deepcopy(BASE)
    change(next(layer for layer in data["networks"]["vit"]["layers"] if layer["name"] == change.layer))
    return data


def changed(layer, **values):
    def change(entry):
        entry.update(values)
    change.layer = layer
    return change


@pytest.mark.parametrize("layer, values, fragments", [
    ("b1_attn", {"heads": 3}, ["layer 'b1_attn' (attention), field 'heads'", "heads = 3 does not divide features = 64",
                               "[1, 2, 4, 8, 16, 32, 64]"]),
    ("b1_attn", {"heads": 0}, ["layer 'b1_attn' (attention), field 'heads'", "heads = 0 must be a positive whole"]),
    ("patches", {"patch": 5}, ["layer 'patches' (patch_embedding), field 'patch'",
                               "patch = 5 does not divide height = 28"]),
], ids=["heads not dividing d", "zero heads", "a patch not dividing the image"])
def test_a_bad_hyperparameter_of_a_token_kind_is_one_line_naming_the_layer_and_field(tmp_path, layer, values,
                                                                                    fragments):
    message = spec_error(tmp_path, vit_with(changed(layer, **values)), network="vit")
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("change, fragments", [
    (lambda k: k.update(divides={"nope": ["features"]}), ["kind 'attention', divides 'nope'", "not a hyperparameter"]),
    (lambda k: k.update(divides={"heads": "features"}), ["kind 'attention', divides 'heads'", "must list sizes"]),
    (lambda k: k.update(no_gradient=["mx"]), ["kind 'attention', no_gradient 'mx'", "not written by a forward"]),
    (lambda k: k.update(input=["b", "...", "features"]), ["kind 'attention', field 'input'", "write it first"]),
], ids=["divides an unknown hyperparameter", "divides not a list", "no_gradient of no result", "... not first"])
def test_a_malformed_token_field_of_a_kind_is_one_line(tmp_path, change, fragments):
    data = copy.deepcopy(BASE)
    change(data["kinds"]["attention"])
    message = spec_error(tmp_path, data, network="vit")
    for fragment in fragments:
        assert fragment in message


def test_a_network_of_tokens_loads_with_its_kinds_checked():
    net = engine.load(SPEC, network="vit")
    assert net.param_shapes["b1_attn"]["wq"] == (64, 64) and net.param_shapes["patches"]["w"] == (7, 7, 1, 64)
    assert net.compiled(2)[1].layer.out_shape == (2, 16, 64)


def test_an_activation_gets_the_tokens_as_b_by_entries_without_a_copy():
    net = engine.load(SPEC, network="vit")
    stage = next(s for s in net.compiled(2) if s.name == "b1_mlp1")
    assert stage.activation.shapes["z"] == (2, 16 * 128)
    net.forward(np.zeros((2, 28, 28, 1), dtype=np.float32))
    assert np.shares_memory(stage.act_env["z"], stage.env["z"])
