"""Where several roads could run a product, the one of least modelled cost on the machine's rates runs
(the tests hold the fixed reference rates, NOTATION_RATES=reference in conftest); every road agrees
with the literal loop interpreter, and plans show each product's modelled time beside its roofline."""
import json
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notation import Equation
from notation.lowering import cost, roads, stacked
from notation.lowering.reductions import ChunkedSum
from notation.mathematics.reference import evaluate_run

from conftest import ROOT, needs_the_library

BN = (64, 28, 28, 32)  # batch norm's dz, xh after resnet's stem at batch 64
CHOICES = [  # equation, shapes, the road that runs
    # per-channel sums of a product (batch norm's dg, dr): one pass, not a 1xN by Nx1 GEMM per channel
    ("dg[k] = dz[b,i,j,k] * xh[b,i,j,k]", {"dz": BN, "xh": BN}, "chunked sum of a product"),
    ("dr[k] = dxh[b,i,j,k] * xc[b,i,j,k] * m[b,i,j,k]", {"dxh": BN, "xc": BN, "m": BN}, "chunked sum of a product"),
    # a factor on the result's indices alone multiplies the sum once, after it (not a GEMM per channel)
    ("dg[k] = dz[b,i,j,k] * xc[b,i,j,k] * r[k]", {"dz": BN, "xc": BN, "r": BN[-1:]}, "chunked sum of a product"),
    # per-token sums over the last axis (a layer norm's): rows of a chunk times ones
    ("s[b,n] = x[b,n,i] * y[b,n,i]", {"x": (64, 16, 64), "y": (64, 16, 64)}, "chunked sum of a product"),
    # long rows: each block a unit-stride dot of 4,096 entries, as fast as a chunk: the GEMM road stays
    ("s[b] = x[b,i] * y[b,i]", {"x": (256, 4096), "y": (256, 4096)}, "batched GEMM"),
    # the channel leading in memory: each block is one unit-stride dot, and the GEMM road stays
    ("dg[k] = dz[k,n] * xh[k,n]", {"dz": (32, 50176), "xh": (32, 50176)}, "batched GEMM"),
    # true matrix products keep their GEMM
    ("s[b,h,i,j] = q[b,h,i,d] * k[b,h,j,d]", {"q": (8, 4, 16, 16), "k": (8, 4, 16, 16)}, "batched GEMM"),
    ("z[b,j] = x[b,i] * w[i,j]", {"x": (64, 3136), "w": (3136, 1024)}, "GEMM into the result"),
    # one operand summed over its leading axes stays one GEMV
    ("db[k] = dz[b,i,j,k]", {"dz": BN}, "sum as GEMV"),
    # token mixing's weight gradient: a GEMM per b on strided views, then summed over b (a single GEMM
    # over (b, k) would first copy both operands transposed)
    ("dw[m,n] = dz[b,n,k] * x[b,m,k]", {"dz": (64, 64, 64), "x": (64, 16, 64)}, "stacked GEMM, summed"),
    # a dense layer's: (b) is already the GEMM's sum, with no copy; it stays one GEMM
    ("dw[i,j] = x[b,i] * dz[b,j]", {"x": (64, 1024), "dz": (64, 256)}, "GEMM into the result"),
    # a stack of results too large to sum cheaply: the single GEMM stays
    ("dw[m,n] = dz[b,n,k] * x[b,m,k]", {"dz": (4096, 64, 8), "x": (4096, 64, 8)}, "GEMM into the result"),
]


@pytest.mark.parametrize("source,shapes,road", CHOICES, ids=[c[0] for c in CHOICES])
def test_the_cheapest_road_is_chosen(source, shapes, road):
    run = Equation(source).compile(shapes=shapes)
    assert run.strategies == (road,)
    c = run.describe()["products"][0]["cost"]
    assert 0 < c["bound_s"] <= c["modelled_s"] * 1.0001  # no road beats the roofline
    if c["alternatives"]:  # the rule's road keeps its place unless another is MARGIN times faster
        assert c["alternatives"][road] <= min(c["alternatives"].values()) * roads.MARGIN


def test_the_plan_shows_every_road_weighed_with_its_modelled_time_and_the_bound():
    run = Equation("dg[k] = dz[b,i,j,k] * xh[b,i,j,k]").compile(shapes={"dz": BN, "xh": BN})
    line = run.plan().splitlines()[-1]
    assert line.startswith("  modelled ") and "roofline bound" in line
    assert "weighed: batched GEMM" in line and "chunked sum of a product" in line


DEAR_BLOCKS = cost.Rates(gemm=1e11, bandwidth=1e10, einsum=1e3, call=1e-6, block=1.0)  # stacks and np.einsum dear


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 40), st.integers(2, 9), st.integers(1, 3), st.booleans(),
       st.integers(1, 64), st.booleans())
def test_a_chunked_sum_agrees_with_the_loop_interpreter(b, n, k, factors, channel_last, chunk, scaled):
    """Chunks of a few entries (many chunks, a short last one), one to three factors, either layout, with or
    without a factor on the result's index alone (`r[k]`, taken out of the sum); rates under which a stack
    of blocks and np.einsum are dear, so that the chunked road is the one weighed cheapest."""
    idx = "b,n,k" if channel_last else "k,b,n"
    terms = [f"a{f}[{idx}]" for f in range(factors)]
    source = "y[k] = " + (" * ".join(terms) if factors > 1 else f"square({terms[0]})")  # a function's result, summed
    source += " * r[k]" if scaled else ""
    shape = (b, n, k) if channel_last else (k, b, n)
    shapes = {f"a{f}": shape for f in range(factors)} | ({"r": (k,)} if scaled else {})
    with mock.patch.object(ChunkedSum, "CHUNK", chunk):
        cost.use(DEAR_BLOCKS)
        try:
            run = Equation(source).compile(shapes=shapes)
        finally:
            cost.use(None)
    assert run.strategies == ("chunked sum of a product",)
    rng = np.random.default_rng(b * 1000 + n * 10 + k)
    arrays = {name: rng.standard_normal(s) for name, s in shapes.items()}
    np.testing.assert_allclose(run(**arrays), evaluate_run(run, **arrays), rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 9), st.integers(1, 9), st.integers(2, 9), st.integers(1, 3),
       st.sampled_from([1.0, 0.5]), st.sampled_from(["alone", "first", "second"]))
def test_a_summed_stack_agrees_with_the_loop_interpreter(b, m, n, k, c, scale, term):
    """scale * dz[b,c,n,k] * x[b,c,m,k] summed over the leading (b, c), each (b, c) a GEMM: the whole right
    side, its first term (written into the result) or its second (added to it), on small sizes: blocks
    of any size allowed, and the road taken wherever it applies (no margin)."""
    product = f"{scale} * dz[b,c,n,k] * x[b,c,m,k]"
    source = "dw[m,n] = " + {"alone": product, "first": f"{product} + e[m,n]", "second": f"e[m,n] + {product}"}[term]
    shapes = {"dz": (b, c, n, k), "x": (b, c, m, k)} | ({"e": (m, n)} if term != "alone" else {})
    with mock.patch.object(stacked, "MIN_BLOCK_FLOPS", 1), mock.patch.object(roads, "MARGIN", 0.0):
        run = Equation(source).compile(shapes=shapes)
    assert run.strategies[term == "second"] == "stacked GEMM, summed"
    rng = np.random.default_rng(b * 100 + m * 10 + n)
    arrays = {name: rng.standard_normal(s) for name, s in shapes.items()}
    np.testing.assert_allclose(run(**arrays), evaluate_run(run, **arrays), rtol=1e-12, atol=1e-12)


def test_a_chunked_sum_gives_the_same_bits_on_one_thread_or_two(tmp_path):
    code = ("import numpy as np, sys; from notation import Equation\n"
            "s = (64, 28, 28, 32); r = np.random.default_rng(0)\n"
            "a, b = r.standard_normal(s).astype(np.float32), r.standard_normal(s).astype(np.float32)\n"
            "run = Equation('g[k] = a[b,i,j,k] * c[b,i,j,k]').compile(shapes={'a': s, 'c': s})\n"
            "assert run.strategies == ('chunked sum of a product',), run.strategies\n"
            "sys.stdout.write(run(a=a, c=b).tobytes().hex())\n")
    outs = []
    for threads in ("1", "2"):
        env = dict(os.environ, NOTATION_THREADS=threads, PYTHONPATH=str(ROOT))
        outs.append(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                   check=True, cwd=tmp_path).stdout)
    assert outs[0] == outs[1] and len(outs[0]) == 32 * 8


def test_the_rates_are_measured_once_and_kept_in_the_cache(tmp_path, monkeypatch):
    measured = []
    fake = cost.Rates(gemm=1e11, bandwidth=2e10, einsum=5e9, call=1e-6, block=1e-7, source="measured here")
    monkeypatch.setattr(cost, "measure", lambda: measured.append(1) or fake)
    path = tmp_path / "cache" / "rates.json"
    assert cost.cached(path) == fake and cost.cached(path) == fake
    assert len(measured) == 1 and cost.machine_key() in json.loads(path.read_text())


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", '{"%s": {"gemm": "fast"}}'])
def test_a_damaged_rates_cache_is_measured_again_not_an_error(tmp_path, monkeypatch, text):
    fake = cost.Rates(gemm=1e11, bandwidth=2e10, einsum=5e9, call=1e-6, block=1e-7)
    monkeypatch.setattr(cost, "measure", lambda: fake)
    path = tmp_path / "rates.json"
    path.write_text(text.replace("%s", cost.machine_key()))
    assert cost.cached(path) == fake
    assert json.loads(path.read_text())[cost.machine_key()]["gemm"] == 1e11


def test_measured_rates_are_positive_and_say_where_they_came_from():
    r = cost.measure()
    assert min(r.gemm, r.bandwidth, r.einsum, r.call) > 0 and r.block >= 0
    assert r.source.startswith("measured on this machine") and "GFLOP/s" in r.describe()


def test_of_two_terms_the_one_that_writes_the_whole_result_runs_first_to_the_same_bits():
    run = Equation("dx[b,k] = dmu[k] / 7 + dxc[b,k]").compile(shapes={"dmu": (5,), "dxc": (6, 5)})
    assert run.strategies == ("gather copy", "add of a view")
    rng = np.random.default_rng(1)
    dmu, dxc = rng.standard_normal(5), rng.standard_normal((6, 5))
    assert np.array_equal(run(dmu=dmu, dxc=dxc), dmu * (1 / 7) + dxc)  # the scale, then the sum, as written



def _term(t):
    return f"square({t[7:-1]}[b,n,k])" if t.startswith("square") else f"{t}[b,n,k]"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [2, 5, 32, 70, 130])
@pytest.mark.parametrize("factors", ["square(a0)", "a0 * a1", "square(a0) * a1", "a1 * square(a0)",
                                     "a0 * a1 * a2", "a0 * a1 * a2 * a3", "a0 * a1 * a2 * a3 * a4"])
def test_a_sum_over_the_leading_axes_gives_the_same_bits_in_the_fused_loop_as_in_numpys_passes(
        monkeypatch, dtype, k, factors):
    """fused.c's COLSUM (a leading square(x) read as x * x) against np.multiply and np.add.reduce, to the
    bit: rows wider than its 64 registers' worth, a short last chunk, one to five factors (five, or a
    square after the first factor: numpy's passes in both runs)."""
    needs_the_library()
    shape = (3, 37, k)
    terms = factors.split(" * ")
    names = sorted({t.removeprefix("square(").removesuffix(")") for t in terms})
    with mock.patch.object(ChunkedSum, "CHUNK", 40 * k):
        cost.use(DEAR_BLOCKS)  # the chunked road weighed cheapest, as on large shapes
        try:
            run = Equation("y[k] = " + " * ".join(map(_term, terms))).compile(shapes={n: shape for n in names})
        finally:
            cost.use(None)
    assert run.strategies == ("chunked sum of a product",)
    rng = np.random.default_rng(k)
    arrays = {n: (rng.standard_normal(shape) * 100).astype(dtype) for n in names}
    sums = []
    for flag in ("0", "1"):
        monkeypatch.setenv("NOTATION_FUSED", flag)
        sums.append(run(**arrays))
    np.testing.assert_array_equal(sums[0].view(np.uint8), sums[1].view(np.uint8))
    np.testing.assert_allclose(sums[1], evaluate_run(run, **arrays), rtol=1e-4 if dtype == np.float32 else 1e-12)


def test_a_single_column_is_not_summed_in_chunks_of_rows():
    """numpy sums one column pairwise, no loop of ours row after row: such a sum takes another road."""
    run = Equation("y[k] = a[b,n,k] * c[b,n,k]").compile(shapes={"a": (64, 784, 1), "c": (64, 784, 1)})
    assert run.strategies != ("chunked sum of a product",)


def test_a_chunked_sum_reads_the_arrays_of_each_call_not_the_last_ones():
    """The C loop's arguments are kept while the same arrays come back (a step's buffers); other
    arrays, or the same ones written again, give their own sums."""
    run = Equation("v[k] = square(x[b,i,j,k]) * y[b,i,j,k]").compile(shapes={"x": BN, "y": BN})
    assert run.strategies == ("chunked sum of a product",)
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal(BN).astype(np.float32), rng.standard_normal(BN).astype(np.float32)
    first = run(x=x, y=y)
    np.testing.assert_allclose(run(x=x * 2, y=y), 4 * first, rtol=1e-4)
    x *= 3
    np.testing.assert_allclose(run(x=x, y=y), 9 * first, rtol=1e-4)
