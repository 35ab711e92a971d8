"""Consecutive equations over the same rows run row by row in one loop (notation/lowering/rowwise.py,
fused.c's ROWS): which equations are taken together, the loop interpreter's values, the same bits in
C and in numpy's passes, on any split of the rows, and a network's results as the equations one by one."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine
from notation import Equation
from notation.lowering import rowwise
from notation.mathematics.reference import evaluate_run
from notation.runtime import fused

from conftest import ROOT, needs_the_library

LAYER_NORM = [  # layers.yaml's layernorm, forward, with `...` written out
    "mu[b,n] = x[b,n,i] / 16",
    "xc[b,n,i] = x[b,n,i] - mu[b,n]",
    "v[b,n] = square(xc[b,n,i]) / 16 + 0.00001",
    "r[b,n] = rsqrt(v[b,n])",
    "xh[b,n,i] = xc[b,n,i] * r[b,n]",
    "z[b,n,i] = xh[b,n,i] * g[i] + beta[i]",
]
GRADIENT = [  # and its input's gradient
    "dxh[b,n,i] = dz[b,n,i] * g[i]",
    "m[b,n] = dxh[b,n,k] / 16",
    "p[b,n] = dxh[b,n,k] * xh[b,n,k] / 16",
    "dx[b,n,i] = r[b,n] * (dxh[b,n,i] - m[b,n] - xh[b,n,i] * p[b,n])",
]

SOFTMAX = [  # attention's, forward
    "sm[b,h,n] = max[m] s[b,h,n,m]",
    "ex[b,h,n,m] = exp(s[b,h,n,m] - sm[b,h,n])",
    "den[b,h,n] = ex[b,h,n,m]",
    "r[b,h,n] = recip(den[b,h,n])",
    "p[b,h,n,m] = ex[b,h,n,m] * r[b,h,n]",
]
SOFTMAX_GRADIENT = [  # as derive writes it
    "dr[b,h,n] = dp[b,h,n,m] * ex[b,h,n,m]",
    "dden[b,h,n] = dr[b,h,n] * drecip(den[b,h,n])",
    "dex[b,h,n,m] = dden[b,h,n] + dp[b,h,n,m] * r[b,h,n]",
    "ds[b,h,n,m] = dex[b,h,n,m] * ex[b,h,n,m]",
]
SCORES = {"s": (2, 3, 5, 5), "dp": (2, 3, 5, 5)}


def compile_all(sources, shapes):
    """(result, run) of each equation in order, each result's shape known to those after it."""
    shapes, steps = dict(shapes), []
    for source in sources:
        eq = Equation(source)
        run = eq.compile(shapes={n: shapes[n] for n in eq.operands})
        shapes[eq.result] = run.result_shape
        steps.append((eq.result, run))
    return steps


def programs(sources, shapes):
    return [program.results for program, _ in rowwise.find(compile_all(sources, shapes)).values()]


TOKENS = {"x": (3, 5, 16), "g": (16,), "beta": (16,), "dz": (3, 5, 16), "xh": (3, 5, 16), "r": (3, 5)}


@pytest.mark.parametrize("sources, shapes, taken", [
    (LAYER_NORM, TOKENS, [["mu", "xc", "v", "r", "xh", "z"]]),
    (GRADIENT, TOKENS, [["dxh", "m", "p", "dx"]]),
    # batch norm's sums run over the batch, not along a row: each equation on its own road
    (["dg[i] = dz[b,n,i] * xh[b,n,i]", "dbeta[i] = dz[b,n,i]"], TOKENS, []),
    # elementwise alone, no sum along the row: the chains' work (chains.py), not a program
    (["a[b,n,i] = x[b,n,i] * g[i]", "c[b,n,i] = a[b,n,i] + beta[i]"], TOKENS, []),
    # a max over the row whose positions are not kept is its largest entry, in the program; over a
    # window of two axes it runs on its own
    (["m[b,n] = max[i] x[b,n,i]", "e[b,n,i] = x[b,n,i] - m[b,n]", "s[b,n] = e[b,n,i]"], TOKENS,
     [["m", "e", "s"]]),
    (["m[b] = max[n,i] x[b,n,i]", "mu[b,n] = x[b,n,i]", "xc[b,n,i] = x[b,n,i] - mu[b,n]"], TOKENS,
     [["mu", "xc"]]),
    # a function the loop does not have (tanh) ends the program before it
    (["mu[b,n] = x[b,n,i] / 16", "xc[b,n,i] = x[b,n,i] - mu[b,n]", "e[b,n,i] = tanh(xc[b,n,i])"], TOKENS,
     [["mu", "xc"]]),
    # attention's softmax (layers.yaml), its exp of a difference made row by row first, and its gradient
    (SOFTMAX + SOFTMAX_GRADIENT, SCORES, [["sm", "ex", "den", "r", "p", "dr", "dden", "dex", "ds"]]),
    # a sum along rows of another length is another program's
    (["mu[b,n] = x[b,n,i] / 16", "s[b,n] = w[b,n,j]"], dict(TOKENS, w=(3, 5, 7)), []),
    # a transposed read is not a row
    (["mu[b,n] = x[b,n,i] / 16", "xc[n,b,i] = x[b,n,i] - mu[b,n]"], TOKENS, []),
    # a result written twice ends the program before the second; a read before a write is not taken
    (["mu[b,n] = x[b,n,i]", "c[b,n] = mu[b,n] * r[b,n]", "mu[b,n] = x[b,n,i] * x[b,n,i]"], TOKENS,
     [["mu", "c"]]),
    (["c[b,n] = mu[b,n] * r[b,n]", "mu[b,n] = x[b,n,i]"], dict(TOKENS, mu=(3, 5)), []),
    # rows longer than fused.c's ROWS_MAX
    (LAYER_NORM[:2], {"x": (2, 1, rowwise.MOST + 1)}, []),
])
def test_which_equations_run_as_one_row_program(sources, shapes, taken):
    assert programs(sources, shapes) == taken


def run_program(program, env, dtype, numpy_passes=False):
    """Every result of the program on env's arrays, in fresh buffers."""
    if numpy_passes:
        outs = {r: np.full(run.result_shape, np.nan, dtype) for r, run in zip(program.results, program.runs)}
        made = {t: np.empty(program.shapes[t], dtype) for t in program.scratch}  # its functions' arguments
        program._numpy([outs.get(t, made.get(t, env.get(t))) for t in program.tensors], np.dtype(dtype))
        return outs
    env = dict(env)
    arrays = {}
    assert program.run(env, lambda name, shape: arrays.setdefault(name, np.full(shape, np.nan, dtype)))
    return arrays


def one_by_one(steps, env):
    env = dict(env)
    for result, run in steps:
        env[result] = run.evaluate(env)
    return env


def operands(shapes, rng, dtype):
    return {n: (rng.standard_normal(s) + (2 if n == "v" else 0)).astype(dtype) for n, s in shapes.items()}


def agrees_with_the_interpreter(steps, shapes, seed):
    """All the steps are one program, and each result is the loop interpreter's, in float64."""
    found = rowwise.find(steps)
    assert [p.results for p, _ in found.values()] == [[r for r, _ in steps]]
    env = operands(shapes, np.random.default_rng(seed), np.float64)
    got = run_program(found[0][0], env, np.float64)
    expected = dict(env)
    for result, run in steps:
        expected[result] = evaluate_run(run, **{k: expected[k] for k in run.shapes})
        np.testing.assert_allclose(got[result], expected[result], rtol=1e-11, atol=1e-12, err_msg=result)


@settings(max_examples=25, deadline=None)
@given(rows=st.lists(st.integers(1, 4), min_size=1, max_size=3), n=st.integers(1, 37), seed=st.integers(0, 99))
def test_a_program_gives_the_loop_interpreters_values(rows, n, seed):
    rows = tuple(rows)
    sources = [s.replace("[b,n", "[" + ",".join("abc"[:len(rows)])).replace("/ 16", f"/ {n}")
               for s in LAYER_NORM + GRADIENT]
    shapes = {"x": rows + (n,), "g": (n,), "beta": (n,), "dz": rows + (n,)}
    agrees_with_the_interpreter(compile_all(sources, shapes), shapes, seed)


@settings(max_examples=15, deadline=None)
@given(rows=st.lists(st.integers(1, 3), min_size=3, max_size=3), n=st.integers(1, 19), seed=st.integers(0, 99))
def test_a_softmax_program_gives_the_loop_interpreters_values(rows, n, seed):
    shapes = {"s": tuple(rows) + (n,), "dp": tuple(rows) + (n,)}
    agrees_with_the_interpreter(compile_all(SOFTMAX + SOFTMAX_GRADIENT, shapes), shapes, seed)


def norms(n):
    """A layer norm and its gradient over 7 x 3 rows of n, as one program: (steps, operands' shapes, rows)."""
    shapes = {"x": (7, 3, n), "g": (n,), "beta": (n,), "dz": (7, 3, n)}
    return compile_all([s.replace("/ 16", f"/ {n}") for s in LAYER_NORM + GRADIENT], shapes), shapes, 21


def softmax(n):
    """Attention's softmax, its max included, and its gradient over 2 x 3 x 5 rows of n."""
    shapes = {"s": (2, 3, 5, n), "dp": (2, 3, 5, n)}
    return compile_all(SOFTMAX + SOFTMAX_GRADIENT, shapes), shapes, 30


@pytest.mark.parametrize("case", [norms, softmax])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [3, 8, 64, 100, 2000])
def test_the_loop_and_numpys_passes_give_the_same_bits_on_any_split(case, dtype, n):
    needs_the_library()
    steps, shapes, rows = case(n)
    program = rowwise.find(steps)[0][0]
    env = operands(shapes, np.random.default_rng(n), dtype)
    env[next(iter(shapes))].reshape(-1)[:2] = -0.0
    if case is softmax:  # a row whose largest entries are -0 and +0, in both orders: which one is kept
        env["s"][0, 0, 0] = -np.abs(env["s"][0, 0, 0]) - 1
        env["s"][0, 0, 0, 0], env["s"][0, 0, 0, n // 2] = -0.0, 0.0
        env["s"][0, 0, 1] = -np.abs(env["s"][0, 0, 1]) - 1
        env["s"][0, 0, 1, 0], env["s"][0, 0, 1, n // 2] = 0.0, -0.0
    buffers = run_program(program, env, dtype)
    whole = {r: a.copy() for r, a in buffers.items()}
    for parts in (2, 5):
        for a in buffers.values():
            a[...] = np.nan
        program.last[1](rows, parts, 0)  # the same buffers, the rows in other spans
        for r in whole:
            assert buffers[r].tobytes() == whole[r].tobytes(), (r, parts)
    passes = run_program(program, env, dtype, numpy_passes=True)
    for r in whole:
        assert passes[r].tobytes() == whole[r].tobytes(), r
    reference = one_by_one(steps, env)  # the equations' own roads: other sums, the same values
    for r in whole:
        np.testing.assert_allclose(whole[r], reference[r], rtol=2e-4 if dtype == np.float32 else 1e-12,
                                   atol=1e-5 if dtype == np.float32 else 1e-13)


def test_a_program_leaves_the_equations_to_run_one_by_one_for_a_dtype_it_does_not_take():
    steps = compile_all(LAYER_NORM[:2], TOKENS)
    program = rowwise.find(steps)[0][0]
    env = {"x": np.ones(TOKENS["x"], np.float16)}
    assert not program.run(env, lambda name, shape: np.empty(shape, np.float16))
    assert set(env) == {"x"}


def test_a_network_gives_the_equations_values_in_a_row_program(monkeypatch):
    """vit's layer norms run as row programs; its loss and gradients are those of the equations one by one."""
    def loss_and_grads():
        net = engine.load(ROOT / "layers.yaml", network="vit", dtype=np.float64, seed=0)
        x = np.random.default_rng(1).random((4,) + tuple(net.input_shape))
        loss, grads = net.loss_and_grads(x, np.arange(4))
        taken = [p.results for s in net.compiled(4) for p in set(s.layer.row_programs().values())]
        return loss, grads, taken

    loss, grads, taken = loss_and_grads()
    assert taken.count(["mu", "xc", "v", "r", "xh", "z"]) == 9 and taken.count(["dxh", "m", "p", "dx"]) == 9
    monkeypatch.setattr(rowwise, "find", lambda steps: {})
    loss0, grads0, taken0 = loss_and_grads()
    assert taken0 == []
    assert loss == pytest.approx(loss0, rel=1e-13)
    for layer, g in grads0.items():
        for name, value in g.items():
            scale = max(np.max(np.abs(v)) for v in g.values())
            np.testing.assert_allclose(grads[layer][name], value, rtol=0, atol=1e-12 * max(scale, 1e-3),
                                       err_msg=f"{layer}.{name}")


def test_plans_name_the_program_each_equation_runs_in():
    from engine.compiler.plans import collect
    net = engine.load(ROOT / "layers.yaml", network="zoo")
    doc = collect(net, 8)
    norm = next(b for b in doc["blocks"] if b["name"] == "norm")
    programs = {c["writes"]: c["row_program"] for c in norm["contractions"]}
    assert programs["mu"] == programs["z"] and "6 equations (mu, xc, v, r, xh, z)" in programs["mu"]
    assert programs["dx"].startswith("4 equations (dxh, m, p, dx)") and programs["dg"] is None
    assert fused.POOL["rows"] == 4
