"""Batched products: a pairwise step that keeps an index of both operands runs on np.matmul over
stacked matrices, and equals the literal loop interpreter whatever the mix and order of indices."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from notation import Equation
from notation.mathematics.reference import evaluate_run

seeds = st.integers(0, 2**32 - 1)
ROLES = ("batch", "contracted", "left", "right")


@st.composite
def batched_products(draw):
    """x[...] * w[...] -> z[...] with 1-2 batch, 1-2 contracted and 0-2 free indices a side, each
    operand's and the result's axes in a random order, sizes 1-3."""
    letters = iter("abcdefghijkmn")
    roles = {"batch": draw(st.integers(1, 2)), "contracted": draw(st.integers(1, 2)),
             "left": draw(st.integers(0, 2)), "right": draw(st.integers(0, 2))}
    idx = {r: [next(letters) for _ in range(n)] for r, n in roles.items()}
    x = draw(st.permutations(idx["batch"] + idx["contracted"] + idx["left"]))
    w = draw(st.permutations(idx["batch"] + idx["contracted"] + idx["right"]))
    z = draw(st.permutations(idx["batch"] + idx["left"] + idx["right"]))
    sizes = {i: draw(st.integers(1, 3)) for r in ROLES for i in idx[r]}
    return x, w, z, sizes


def _eq(x, w, z):
    return f"z[{','.join(z)}] = x[{','.join(x)}] * w[{','.join(w)}]"


@given(batched_products(), seeds)
@settings(max_examples=120, deadline=None)
def test_a_batched_product_equals_the_reference_in_any_index_order(g, seed):
    x, w, z, sizes = g
    run = Equation(_eq(x, w, z)).compile(shapes={"x": [sizes[i] for i in x], "w": [sizes[i] for i in w]})
    assert run.strategies == ("batched GEMM",)
    rng = np.random.default_rng(seed)
    arrays = {"x": rng.standard_normal([sizes[i] for i in x]), "w": rng.standard_normal([sizes[i] for i in w])}
    expected = evaluate_run(run, **arrays)
    np.testing.assert_allclose(run(**arrays), expected, rtol=1e-12, atol=1e-12)
    out = np.full(run.result_shape, np.nan)  # every entry written, none accumulated
    np.testing.assert_allclose(run(out=out, **arrays), expected, rtol=1e-12, atol=1e-12)
    transposed = np.full(run.result_shape[::-1], np.nan).T  # not C-ordered: still written
    np.testing.assert_allclose(run(out=transposed, **arrays), expected, rtol=1e-12, atol=1e-12)


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), seeds)
@settings(max_examples=60, deadline=None)
def test_a_batched_product_over_strided_windows_and_a_flip(b, i, p, r, k, seed):
    """Grouped convolution, one group per g: windows and a flipped kernel, batched over g."""
    n = 2 * (i - 1) + p
    source = "z[b,g,i,k] = x[b, g, 2*i+q, r] * w[g, Q-q, r, k]"
    run = Equation(source).compile(shapes={"x": (b, 2, n, r), "w": (2, p, r, k)})
    assert run.strategies == ("batched GEMM",)
    rng = np.random.default_rng(seed)
    arrays = {"x": rng.standard_normal((b, 2, n, r)), "w": rng.standard_normal((2, p, r, k))}
    np.testing.assert_allclose(run(**arrays), evaluate_run(run, **arrays), rtol=1e-12, atol=1e-12)


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), seeds)
@settings(max_examples=60, deadline=None)
def test_a_batched_product_folded_into_a_scatter(b, i, p, k, seed):
    """A batch index with a scatter on the left: the (batched) product is folded, one add per offset."""
    source = "dx[b, g, i+p, r] = dz[b,g,i,k] * w[g,p,r,k]"
    shapes = {"dz": (b, 2, i, k), "w": (2, p, 2, k), "dx": (b, 2, i + p - 1, 2)}
    run = Equation(source).compile(shapes=shapes)
    assert run.strategies[0] in ("batched GEMM", "scatter in batch slices")
    rng = np.random.default_rng(seed)
    arrays = {n: rng.standard_normal(s) for n, s in shapes.items() if n != "dx"}
    np.testing.assert_allclose(run(**arrays), evaluate_run(run, **arrays), rtol=1e-12, atol=1e-12)


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), seeds)
@settings(max_examples=60, deadline=None)
def test_batched_steps_inside_a_multi_operand_path(h, i, j, d, seed):
    """Attention's scores times values in one equation of three operands: opt_einsum's path has
    batched steps, and each runs on np.matmul."""
    source = "o[b,h,i,e] = q[b,h,i,d] * k[b,h,j,d] * v[b,h,j,e]"
    shapes = {"q": (2, h, i, d), "k": (2, h, j, d), "v": (2, h, j, 3)}
    run = Equation(source).compile(shapes=shapes)
    product = run.describe()["products"][0]
    assert product["strategy"]["name"] == "batched GEMM"
    assert all(s["runs"].startswith("np.matmul, batched over") for s in product["steps"])
    rng = np.random.default_rng(seed)
    arrays = {n: rng.standard_normal(s) for n, s in shapes.items()}
    np.testing.assert_allclose(run(**arrays), evaluate_run(run, **arrays), rtol=1e-12, atol=1e-12)


def test_a_scaled_batched_product_in_a_sum_of_terms():
    source = "z[b,i,k] = 1/2 * x[b,i,j] * w[b,j,k] - y[b,i,k]"
    shapes = {"x": (3, 2, 4), "w": (3, 4, 5), "y": (3, 2, 5)}
    run = Equation(source).compile(shapes=shapes)
    assert run.strategies[0] == "batched GEMM"
    rng = np.random.default_rng(0)
    arrays = {n: rng.standard_normal(s) for n, s in shapes.items()}
    np.testing.assert_allclose(run(**arrays), evaluate_run(run, **arrays), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(run(**arrays), 0.5 * arrays["x"] @ arrays["w"] - arrays["y"], rtol=1e-12)
