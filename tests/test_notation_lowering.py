"""Lowering choices that must not change results: chunked scatters, operand order, fast paths."""
import numpy as np
import pytest

import notation.lowering.lowering as lowering
from notation import Equation
from notation.mathematics.reference import evaluate_run

EQ16 = "dx[c,t,u,v] = dz[c,i,j,k] * w[P+s1*i-t, Q+s2*j-u, v, k]"


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("chunk_elements", [1, 40, 100])
def test_a_scatter_made_in_batch_slices_equals_the_reference(monkeypatch, stride, chunk_elements):
    monkeypatch.setattr(lowering, "CHUNK_ELEMENTS", chunk_elements)
    rng = np.random.default_rng(stride)
    n = (4 - 1) * stride + 3
    run = Equation(EQ16).compile(shapes={"dz": (5, 4, 4, 2), "w": (3, 3, 2, 2), "dx": (5, n, n, 2)},
                                 symbols={"s1": stride, "s2": stride})
    assert run.strategies == ("scatter in batch slices",)
    arrays = {"dz": rng.standard_normal((5, 4, 4, 2)), "w": rng.standard_normal((3, 3, 2, 2))}
    np.testing.assert_allclose(run(**arrays), evaluate_run(run, **arrays), rtol=1e-10, atol=1e-10)


def test_the_operand_leading_the_output_goes_last_to_the_gemm():
    run = Equation("z[b,j] = x[b,i] * w[i,j]").compile(shapes={"x": (64, 300), "w": (300, 10)})
    assert run.einsum == "bi,ij->bj"  # as written
    assert run.path_info.contraction_list[0][2] == "bi,ij->bj"  # tensordot(x, w): no transposed result


def test_window_max_marks_only_the_first_of_tied_maxima():
    inner = np.array([[[3.0, 1.0], [3.0, 2.0]]])  # one window of 2x2 with a tie
    values, mask = lowering.window_max(inner, 2, positions=True)
    assert values.tolist() == [3.0] and mask.tolist() == [[[1.0, 0.0], [0.0, 0.0]]]


@pytest.mark.parametrize("window", [(2, 2), (3,), (1, 2), (2, 2, 2)])
def test_window_max_in_halves_on_the_workers_is_the_same_as_whole(monkeypatch, window):
    """A large max is split between the workers by its first axis; ties (many zeros, as after a
    ReLU) still go to the first maximum of each window, and nothing differs from the whole run."""
    from notation.lowering import maxima
    rng = np.random.default_rng(0)
    inner = np.maximum(rng.integers(-3, 3, size=(5, 4, 3) + window), 0).astype(np.float32)
    whole = lowering.window_max(inner, len(window), positions=True)
    monkeypatch.setattr(maxima, "SPLIT", 1)
    halves = lowering.window_max(inner, len(window), positions=True)
    for a, b in zip(whole, halves):
        np.testing.assert_array_equal(a, b)
    flat = inner.reshape(inner.shape[:3] + (-1,))
    first = np.eye(flat.shape[-1], dtype=bool)[np.argmax(flat, axis=-1)]  # argmax: the first maximum
    np.testing.assert_array_equal(whole[1].reshape(first.shape), first)
    np.testing.assert_array_equal(whole[0], flat.max(axis=-1))


def test_plan_names_the_views_the_gemm_and_the_scatter_of_eq16():
    text = Equation(EQ16).compile(shapes={"dz": (2, 4, 4, 3), "w": (3, 3, 2, 3), "dx": (2, 9, 9, 2)},
                                  symbols={"s1": 2, "s2": 2}).plan()
    assert "einsum cijk,TUvk->cTiUjv" in text and "[GEMM -> np.matmul]" in text
    assert "strategy opt_einsum path: np.matmul, folded" in text
    assert "result slice-add looped over (t',u'), 9 adds" in text


def test_a_function_in_an_elementwise_product_runs_once_per_evaluation(monkeypatch):
    from notation.mathematics import functions
    calls = []
    drelu = functions.FUNCTIONS["drelu"]
    counted = functions.Function("drelu", lambda z, out=None: calls.append(1) or drelu.array(z, out=out),
                                 drelu.scalar, None, drelu.latex)
    monkeypatch.setitem(functions.FUNCTIONS, "drelu", counted)
    run = Equation("dz[c,i] = da[c,i] * drelu(z[c,i])").compile(shapes={"da": (3, 4), "z": (3, 4)})
    rng = np.random.default_rng(0)
    arrays = {"da": rng.standard_normal((3, 4)), "z": rng.standard_normal((3, 4))}
    np.testing.assert_allclose(run(**arrays), evaluate_run(run, **arrays), rtol=1e-12)
    assert len(calls) == 1


def test_positions_masks_live_in_reused_buffers_only_when_out_is_given():
    eq18 = "z[b,i,j,k] = max[p,q] x[b, s1*i+p, s2*j+q, k]"
    run = Equation(eq18).compile(shapes={"x": (2, 4, 6, 3), "z": (2, 2, 3, 3)},
                                 symbols={"s1": 2, "s2": 2, "P": 1, "Q": 1})
    rng = np.random.default_rng(3)
    x1, x2 = rng.standard_normal((2, 2, 4, 6, 3)).round(1)  # rounded: ties occur
    out = np.empty(run.result_shape)
    for x in (x1, x2):  # the second run rewrites every entry of the kept buffer
        z, m = run(out=out, positions=True, x=x)
        ref_z, ref_m = evaluate_run(run, positions=True, x=x)
        np.testing.assert_array_equal(z, ref_z)
        np.testing.assert_array_equal(m, ref_m)
    _, fresh1 = run(positions=True, x=x1)
    _, fresh2 = run(positions=True, x=x2)
    assert not np.shares_memory(fresh1, fresh2)


@pytest.mark.parametrize("source,shapes", [
    ("z[b,j] = x[b,i] * w[i,j]", {"x": (3, 4), "w": (4, 5)}),
    ("dw[k,m] = dz[b,m] * x[b,k]", {"dz": (3, 5), "x": (3, 4)}),                # both operands transposed
    ("dx[c,k] = 1/2 * dz[c,j] * w[k,j]", {"dz": (3, 5), "w": (4, 5)}),          # a scale after the GEMM
    ("z[b,i,k] = x[b,i,p,q] * w[P-p, Q-q, k]", {"x": (2, 3, 2, 3), "w": (2, 3, 4)}),  # several axes, a flip
])
def test_a_single_gemm_writes_straight_into_the_result(source, shapes):
    run = Equation(source).compile(shapes=shapes)
    assert run.strategies == ("GEMM into the result",)
    rng = np.random.default_rng(0)
    arrays = {n: rng.standard_normal(s) for n, s in shapes.items()}
    expected = evaluate_run(run, **arrays)
    np.testing.assert_allclose(run(**arrays), expected, rtol=1e-12)
    out = np.empty(run.result_shape)
    assert run(out=out, **arrays) is out
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    strided = np.empty(run.result_shape[::-1]).T  # not C-contiguous: opt_einsum's path writes it
    np.testing.assert_allclose(run(out=strided, **arrays), expected, rtol=1e-12)


def test_a_batch_index_runs_as_a_batched_gemm_not_einsum():
    run = Equation("z[b,i,k] = x[b,i,j] * w[b,j,k]").compile(shapes={"x": (2, 3, 4), "w": (2, 4, 5)})
    product = run.describe()["products"][0]
    assert product["strategy"]["name"] == "batched GEMM"
    assert product["steps"][0]["blas"] is None  # opt_einsum alone would run np.einsum
    assert product["steps"][0]["runs"] == "np.matmul, batched over (b)"
