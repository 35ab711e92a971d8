"""Algorithms beside the definition: conv2d's im2col and Fourier chains give what (15)-(17) say.

The definition is the report's equations; an algorithm is another evaluation of them.  Each
chain is checked here against the literal loop interpreter (notation.mathematics.reference) on small odd
shapes, 'valid' and 'same' padding, and the stride where it applies; against finite differences
in test_engine_jacobians.py; and against the definition when a network loads.
"""
import numpy as np
import pytest

import engine
from engine import SpecError
from engine.compiler import algorithms as compiler_algorithms
from engine.compiler import plans
from engine.compiler.layer import Block
from notation import Equation
from notation.lowering import cost
from notation.mathematics.constants import CONSTANTS
from notation.mathematics.reference import evaluate

from conftest import SPEC as SPEC_PATH
from conftest import spec_with

SPEC = engine.read(SPEC_PATH)
CONV = SPEC.kinds["conv2d"]


def conv(shape, algorithm, dtype=np.float64, **hyper):
    return Block(SPEC, CONV, {**CONV.hyper, **hyper}, {"x": shape}, "test conv2d", dtype=dtype,
                 algorithm=algorithm)


def literal(source, block, arrays, result_shape):
    """An equation of the report evaluated by the reference interpreter, one loop per index."""
    eq = Equation(source)
    shapes = {n: a.shape for n, a in arrays.items()}
    run = eq.compile(shapes={**shapes, eq.result: result_shape}, symbols=block.symbols)
    return evaluate(eq, arrays, run.extents, block.symbols, result_shape)


def padded(x, s):
    xp = np.zeros((x.shape[0], x.shape[1] + s["pt"] + s["pb"], x.shape[2] + s["pl"] + s["pr"], x.shape[3]))
    xp[:, s["pt"]:s["pt"] + x.shape[1], s["pl"]:s["pl"] + x.shape[2]] = x
    return xp


CASES = [  # (input shape, kernel, stride, padding): odd and even sizes, kernels wider than half
    ((2, 7, 5, 2), 3, 1, "same"), ((2, 6, 7, 3), 2, 1, "same"), ((1, 7, 6, 2), 4, 1, "valid"),
    ((2, 5, 5, 1), 5, 1, "same"), ((2, 7, 6, 2), 3, 2, "same"), ((1, 8, 7, 2), 3, 2, "valid"),
]


@pytest.mark.parametrize("algorithm", ["im2col", "im2col_cf", "col2im", "fourier", "definition"])
@pytest.mark.parametrize("shape,kernel,stride,padding", CASES)
def test_each_chain_gives_eq_15_16_17_as_the_reference_interpreter_evaluates_them(
        algorithm, shape, kernel, stride, padding):
    if algorithm == "fourier" and stride > 1:
        pytest.skip("fourier refuses a stride (test below)")
    block = conv(shape, algorithm, filters=3, kernel=kernel, stride=stride, padding=padding)
    assert block.algorithm == (None if algorithm == "definition" else algorithm)
    rng = np.random.default_rng(kernel * 10 + stride)
    x, w, b = (rng.standard_normal(block.shapes[n]) for n in ("x", "w", "b"))
    dz = rng.standard_normal(block.out_shape)
    env = block.forward({"x": x, "w": w, "b": b})
    env["dz"] = dz
    block.backward(env)
    s = block.symbols
    xp = padded(x, s)
    z = literal("z[b,i,j,k] = xp[b, s1*i+p, s2*j+q, r] * w[P-p, Q-q, r, k]", block, {"xp": xp, "w": w},
                block.out_shape) + b
    dxp = literal("dx[c,t,u,v] = dz[c,i,j,k] * w[P+s1*i-t, Q+s2*j-u, v, k]", block, {"dz": dz, "w": w}, xp.shape)
    dw = literal("dw[m,n,u,v] = dz[b,i,j,v] * xp[b, s1*i+P-m, s2*j+Q-n, u]", block, {"dz": dz, "xp": xp},
                 w.shape)
    np.testing.assert_allclose(env["z"], z, rtol=1e-10, atol=1e-10)  # (15)
    np.testing.assert_allclose(env["dx"], dxp[:, s["pt"]:s["pt"] + shape[1], s["pl"]:s["pl"] + shape[2]],
                               rtol=1e-10, atol=1e-10)  # (16), cropped to the input
    np.testing.assert_allclose(env["dw"], dw, rtol=1e-10, atol=1e-10)  # (17)
    np.testing.assert_allclose(env["db"], dz.sum((0, 1, 2)), rtol=1e-12)


def test_fourier_refuses_a_stride_and_says_what_to_choose():
    with pytest.raises(SpecError) as exc:
        conv((2, 8, 8, 2), "fourier", filters=3, kernel=3, stride=2, padding="same")
    msg = str(exc.value)
    assert "algorithm 'fourier' does not apply here: it needs stride = 1 and this layer has stride = 2" in msg
    assert "test conv2d" in msg and "im2col" in msg


def test_auto_passes_over_an_algorithm_that_does_not_apply():
    assert conv((2, 8, 8, 2), "auto", filters=3, kernel=3, stride=2, padding="same").algorithm != "fourier"


@pytest.mark.parametrize("kernel", [1, 3])
def test_auto_takes_col2im_where_a_stride_would_make_im2col_multiply_zeros(kernel):
    """At stride 2 im2col's (16) spreads dz with zero rows and multiplies them; col2im's is one GEMM of
    the product's own FLOPs, added back per window (modelled here, under the reference rates)."""
    block = conv((8, 14, 14, 32), "auto", filters=64, kernel=kernel, stride=2, padding="same")
    assert block.algorithm == "col2im"


def test_auto_decides_once_at_load_by_modelled_cost_and_says_so():
    text = spec_with(conv1="auto", conv2="auto")
    net = engine.load(text)
    assert net.algorithms["conv1"] == "im2col"  # one input channel: the transforms cost more than they save
    assert net.algorithms["conv2"] == "fourier"  # 32 channels: 4.8x fewer FLOPs
    doc = plans.collect(net, 32)  # another batch size, the same choice
    chosen = {b["name"]: b["algorithm"] for b in doc["blocks"] if b["algorithm"]}
    assert {name: a["name"] for name, a in chosen.items()} == net.algorithms
    for a in chosen.values():
        assert a["chosen"] == "auto, by modelled cost"
        modelled = {m["algorithm"]: m["seconds"] for m in a["modelled"]}
        assert modelled[a["name"]] == min(modelled.values()) and a["modelled_at_batch"] == 64


def test_an_unknown_algorithm_names_the_choices(tmp_path):
    text = spec_with(conv2="winograd")
    with pytest.raises(SpecError) as exc:
        engine.load(text)
    msg = str(exc.value)
    assert "layer 'conv2', field 'algorithm'" in msg and "'winograd' not found" in msg
    assert "'auto', 'definition', 'col2im', 'fourier', 'im2col', 'im2col_cf'" in msg


def test_a_chain_that_disagrees_with_the_definition_stops_the_load_naming_layer_chain_and_error():
    right = "gi: {idft: [nw, zw, Q - pl]}"
    assert right in spec_with(conv2="fourier")
    text = spec_with(conv2="fourier").replace(right, "gi: {idft: [nw, zw, Q]}")  # the shift forgotten
    with pytest.raises(SpecError) as exc:
        engine.load(text)
    msg = str(exc.value)
    assert "layer 'conv2' (conv2d), algorithm 'fourier'" in msg
    assert "its output disagrees with the definition by" in msg and "float64; at most 1e-10" in msg


def test_a_wrong_gradient_step_is_named_too():
    right = "dwg[g,m,n,r,k] = dwb[u,v,e,r,g,k] * kt[g,m,n,u,v,e]"
    text = spec_with(conv2="fourier")
    assert right in text
    text = text.replace(right, "dwg[g,m,n,r,k] = dwb[u,v,e,r,g,k] * kt[e,m,n,u,v,g]")  # the block transposed
    with pytest.raises(SpecError) as exc:
        engine.load(text)
    assert "algorithm 'fourier'" in str(exc.value) and "its gradient 'dw' disagrees" in str(exc.value)


def test_a_chain_missing_a_gradient_says_which():
    last = "          - db[k] = dz[b,i,j,k]                                       # (6), (8)\n\n  maxpool"
    text = spec_with(conv2="fourier").replace(last, "\n  maxpool")
    with pytest.raises(SpecError) as exc:
        engine.load(text)
    assert "algorithm 'fourier', backward" in str(exc.value) and "no equation writes 'db'" in str(exc.value)


def test_an_unknown_constant_lists_the_closed_forms():
    text = SPEC_PATH.read_text().replace("cm: {cmul: []}", "cm: {dct: []}")
    with pytest.raises(SpecError) as exc:
        engine.read(text)
    assert "constant 'cm'" in str(exc.value) and "no constant 'dct'" in str(exc.value) and "rdft" in str(exc.value)


def test_constants_are_built_in_the_run_dtype_and_are_not_parameters():
    net = engine.load(spec_with(conv2="fourier"), check=False)
    stage = next(s for s in net.compiled(4) if s.name == "conv2")
    assert stage.layer.algorithm == "fourier"
    assert {v.dtype for v in stage.layer.constants.values()} == {np.dtype(np.float32)}
    assert set(net.params["conv2"]) == {"w", "b"}  # nothing else is trained or checkpointed


def test_shared_intermediates_run_once_and_unneeded_steps_not_at_all():
    doc = plans.collect(engine.load(spec_with(conv1="im2col", conv2="fourier"), check=False), 4)
    ids = [c["id"] for b in doc["blocks"] for c in b["contractions"]]
    # dz's spectrum serves (16) and (17) and is computed once; x's comes from the forward
    assert ids.count("conv2/backward/dzs") == 1 and ids.count("conv2/forward/xs") == 1
    conv2 = [c for b in doc["blocks"] if b["name"] == "conv2" for c in b["contractions"]]
    reads = {c["writes"]: {v["tensor"] for p in c["products"] for v in p["views"]} for c in conv2}
    assert "dzs" in reads["dxs"] and "dzs" in reads["dwb"] and "xs" in reads["dwb"]
    assert "wb" in reads["dxs"]  # the kernel's spectrum, from the forward
    # conv1 is the first layer: no input gradient, so none of the chain's steps for it
    assert not any(i.startswith("conv1/backward/dz") or i == "conv1/backward/dx" for i in ids)


def test_the_plan_names_the_algorithm_its_flops_and_the_definitions():
    net = engine.load(spec_with(conv2="fourier"), check=False)
    doc = plans.collect(net, 8)
    conv2 = next(b for b in doc["blocks"] if b["name"] == "conv2")
    a = conv2["algorithm"]
    assert a["name"] == "fourier" and a["chosen"] == "named in the spec"
    B, bins = 8, 16 * 9  # nh = 14 + 2, nw = 16 // 2 + 1
    mix = next(c for c in conv2["contractions"] if c["writes"] == "zs")
    assert mix["optimized_flops"] == bins * 2 * B * (2 * 32) * (2 * 64)  # one real GEMM per frequency
    assert a["step_flops"] == sum(c["optimized_flops"] for c in conv2["contractions"])
    # the kernel's spectrum costs the same at any batch: 2.3x fewer flops at batch 8, 4.5x at 64
    assert a["definition_step_flops"] > 2 * a["step_flops"]
    text = net.plans(batch=8)
    assert "algorithm fourier ((15)-(17) as products of spectra), named in the spec:" in text
    assert "in place of the definition's" in text
    assert "constants fr 14x16x2, fc 2x14x9x2, kg 2x16x9x2x5x5, kt 2x5x5x16x9x2" in text


# -- the closed forms against numpy.fft ------------------------------------------------------
def as_complex(a, axis):
    return np.take(a, 0, axis) + 1j * np.take(a, 1, axis)


@pytest.mark.parametrize("n,size", [(5, 8), (7, 7), (4, 9)])
def test_dft_constants_match_numpy_fft(n, size):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n)
    np.testing.assert_allclose(as_complex(np.einsum("a,ave->ve", x, CONSTANTS["rdft"](n, size)), -1),
                               np.fft.rfft(x, size), atol=1e-12)
    c = rng.standard_normal((n, 2))
    got = np.einsum("ae,aeuf->uf", c, CONSTANTS["dft"](n, size))
    np.testing.assert_allclose(got[:, 0] + 1j * got[:, 1], np.fft.fft(c[:, 0] + 1j * c[:, 1], size), atol=1e-12)
    shift = 3
    spectrum = rng.standard_normal((size, 2))
    got = np.einsum("ue,ueif->if", spectrum, CONSTANTS["idft"](size, n, shift))
    full = np.fft.ifft(spectrum[:, 0] + 1j * spectrum[:, 1])
    np.testing.assert_allclose(got[:, 0] + 1j * got[:, 1], full[(np.arange(n) + shift) % size], atol=1e-12)
    half = np.fft.rfft(rng.standard_normal(size))
    pairs = np.stack([half.real, half.imag], -1)
    got = np.einsum("ve,vej->j", pairs, CONSTANTS["irdft"](size, n, shift))
    np.testing.assert_allclose(got, np.fft.irfft(half, size)[(np.arange(n) + shift) % size], atol=1e-12)


@pytest.mark.parametrize("size,n,shift", [(16, 14, 2), (9, 7, 1), (8, 8, 0)])
def test_hermitian_weights_with_the_complex_inverse_give_the_real_inverse_as_their_real_part(size, n, shift):
    """fourier's gc (the width's inverse of a half spectrum, complex): its real part is irdft's."""
    gc = np.einsum("vt,tejf->vejf", CONSTANTS["hermitian"](size), CONSTANTS["idft"](size, n, shift))
    np.testing.assert_allclose(gc[..., 0], CONSTANTS["irdft"](size, n, shift), rtol=0, atol=1e-15)
    assert CONSTANTS["unit"](2, 0).tolist() == [1.0, 0.0] and CONSTANTS["unit"](3, 2).tolist() == [0, 0, 1]


def test_a_unit_vector_out_of_range_is_one_line_naming_the_constant():
    text = SPEC_PATH.read_text().replace("re: {unit: [2, 0]}", "re: {unit: [2, 2]}")
    with pytest.raises(SpecError) as exc:
        engine.load(text)
    assert "constant 're'" in str(exc.value) and "k must be at least 0 and less than n" in str(exc.value)


def test_cmul_multiplies_complex_numbers():
    a, b = 1.5 - 2j, -0.5 + 3j
    got = np.einsum("e,f,efg->g", [a.real, a.imag], [b.real, b.imag], CONSTANTS["cmul"]())
    assert complex(*got) == pytest.approx(a * b)


TWICE_FLIPPED = """
    algorithms:
      twice_flipped:
        cites: "(12)"
        constants: {f: {NAME: [features]}}
        forward:
          - xf[b,m] = x[b,i] * f[i,m]
          - z[b,j] = xf[b,m] * f[m,i] * w[i,j] + b[j]
        backward:
          - dx[c,k] = dz[c,j] * w[k,j]
          - dw[k,m] = dz[b,m] * x[b,k]
          - db[i] = dz[b,i]
"""


def test_a_registered_constant_can_be_read_by_an_algorithm():
    import notation
    name = "flipped_eye_for_test"
    notation.register_constant(name, ("n",), lambda n: (n, n), lambda n: np.eye(n)[::-1])
    try:
        with pytest.raises(notation.UserError, match="registered already"):
            notation.register_constant(name, ("n",), lambda n: (n, n), lambda n: np.eye(n))
        # a toy algorithm of dense: (12) with the features reversed twice, through the constant
        anchor = "      b: db[i] = dz[...,i]                                            # (6), (8)\n"
        text = SPEC_PATH.read_text()
        assert anchor in text
        text = text.replace(anchor, anchor + TWICE_FLIPPED.lstrip("\n").replace("NAME", name), 1)
        text = text.replace("units: 1024, activation: relu}",
                            "units: 1024, activation: relu, algorithm: twice_flipped}")
        net = engine.load(text)  # checked against (12)-(14) at load
        assert [s.layer.algorithm for s in net.compiled(2) if s.name == "dense1"] == ["twice_flipped"]
    finally:
        CONSTANTS.pop(name)


FOLDED = "kb: kb[m,n,u,v,e,g] = kh[m,h,u,f] * kw[n,v,h] * cm[e,f,g]"


def test_a_constant_may_be_a_product_of_the_constants_above_it_folded_once():
    """fourier's kb is kh, kw and cm folded at compile time, and kg, kt are kb laid out for the
    stacked GEMMs of the kernel's spectrum and of (17): the chain reads kg and kt alone, each that
    product (float64, from the closed forms)."""
    assert FOLDED in SPEC_PATH.read_text()
    net = engine.load(spec_with(conv2="fourier"), dtype=np.float64)
    block = net.compiled(2)[2].layer
    assert {"kg", "kt"} <= set(block.constants) and not {"kh", "kw", "cm", "kb"} & set(block.constants)
    kh, kw, cm = CONSTANTS["dft"](5, 16), CONSTANTS["rdft"](5, 16), CONSTANTS["cmul"]()
    kb = np.einsum("mhuf,nvh,efg->mnuveg", kh, kw, cm)
    np.testing.assert_allclose(block.constants["kg"], kb.transpose(5, 2, 3, 4, 0, 1), rtol=0, atol=1e-15)
    np.testing.assert_allclose(block.constants["kt"], kb.transpose(5, 0, 1, 2, 3, 4), rtol=0, atol=1e-15)


@pytest.mark.parametrize("folded, says", [
    ("kb: kb[m,n,u,v,e,g] = kh[m,h,u,f] * kw[n,v,h] * ws[e,f,g]",
     "reads 'ws', which is not a constant above it"),
    ("kb: kc[m,n,u,v,e,g] = kh[m,h,u,f] * kw[n,v,h] * cm[e,f,g]", "its equation writes 'kc'; write kb[...]"),
    ("kb: kb[m,n,u,v,e,g] = kh[m,h,u,f] * kw[n,v,h] * cm[e,f,g",  "constant 'kb'"),
])
def test_a_bad_folded_constant_is_one_line_naming_it(folded, says):
    text = SPEC_PATH.read_text().replace(FOLDED, folded)
    with pytest.raises(SpecError) as exc:
        engine.read(text)
    assert "constant 'kb'" in str(exc.value) and says in str(exc.value) and "\n" not in str(exc.value)


def test_the_kernels_spectrum_is_computed_again_only_when_the_kernel_changes(monkeypatch):
    """wb reads only w and constants: a forward on the same weights (inference, evaluation) keeps it,
    a changed w (a training step, an edit in place) computes it again, and the result is always
    the one a fresh network gives."""
    net = engine.load(spec_with(conv2="fourier"))
    rng = np.random.default_rng(0)
    x = rng.random((4, 28, 28, 1), dtype=np.float32)
    block = net.compiled(4)[2].layer
    wb = next(step.run for step in block.forward_runs if step.result == "wb")
    calls = []
    real = type(wb).evaluate
    monkeypatch.setattr(type(wb), "evaluate", lambda self, *a, **k: (calls.append(self is wb), real(self, *a, **k))[1])
    first = net.forward(x)
    np.testing.assert_array_equal(net.forward(x), first)
    assert calls.count(True) == 1  # the second forward kept the spectrum
    net.params["conv2"]["w"][0, 0, 0, 0] += 0.5
    changed = net.forward(x)
    assert calls.count(True) == 2
    fresh = engine.load(spec_with(conv2="fourier"))
    for layer, ps in net.params.items():
        for p, w in ps.items():
            fresh.params[layer][p][...] = w
    np.testing.assert_array_equal(changed, fresh.forward(x))
    assert not np.array_equal(changed, first)


# -- auto on this machine: timed once, kept, and recorded for a resume ----------------------------------
MEASURED = cost.Rates(gemm=1e11, bandwidth=2e10, einsum=5e9, call=1e-6, block=1e-7, source="measured on a test")


@pytest.fixture
def measured(tmp_path, monkeypatch):
    """Rates as if measured on this machine (so `auto` times the chains), the cache under tmp_path; the
    chains' timings counted."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    timed = []
    real = compiler_algorithms.timed_seconds
    monkeypatch.setattr(compiler_algorithms, "timed_seconds", lambda block, chains: timed.extend(
        c["name"] for c in chains) or real(block, chains, rounds=1))
    cost.use(MEASURED)
    yield timed
    cost.use(None)


def test_auto_times_each_chain_on_this_machine_once_and_keeps_the_timings(measured, tmp_path):
    text = spec_with(conv1="auto", conv2="auto")
    net = engine.load(text)
    assert sorted(measured) == sorted(["im2col", "im2col_cf", "col2im", "fourier"] * 2)  # each layer's chains, once
    assert (tmp_path / "einsum-engine" / "algorithms.json").is_file()
    again = engine.load(text)
    assert len(measured) == 8 and again.algorithms == net.algorithms  # the kept timings decide
    chosen = [b["algorithm"] for b in plans.collect(net, 64)["blocks"] if b["algorithm"]]
    assert all(a["chosen"] == "auto, by timed cost" for a in chosen)
    assert "timed on this machine" in net.plans(64)


def test_recorded_algorithms_decide_instead_of_auto(measured):
    net = engine.load(spec_with(conv1="auto", conv2="auto"), algorithms={"conv1": "fourier", "conv2": "im2col_cf"})
    assert net.algorithms == {"conv1": "fourier", "conv2": "im2col_cf"} and measured == []


@pytest.mark.parametrize("given", [{"conv1": "im2col"}, {"conv1": "winograd", "conv2": "im2col"}, ["im2col"]])
def test_a_recorded_algorithm_that_is_missing_or_unknown_is_one_line_naming_the_layer(given):
    with pytest.raises(SpecError) as exc:
        engine.load(spec_with(conv1="auto", conv2="auto"), algorithms=given)
    assert "field 'algorithm'" in str(exc.value) and "the recorded algorithm" in str(exc.value)
