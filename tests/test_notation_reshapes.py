"""A result whose index terms only split its axes (a weight read as [features, heads, E], tokens as
i*J + j, (19)'s windows at stride = window) is a reshape of it: the product writes it as an array of
that shape, a GEMM straight into it, with no fold and no zeroing; the loop interpreter's values, on a
C-ordered result or a strided one."""
import numpy as np
import pytest

from notation import Equation
from notation.mathematics.reference import evaluate_run

B = 2
CASES = [  # equation, shapes, symbols, the roads, how the first product's result is reached
    # attention's weight gradients, the heads folded into the columns: one GEMM into the result
    ("dw[i, E*h + e] = dq[b,n,h,e] * x[b,n,i]", {"dq": (B, 5, 3, 4), "x": (B, 5, 12)}, {"E": 4},
     ("GEMM into the result",), "in place"),
    ("dwo[E*h + e, j] = dz[b,n,j] * o[b,n,h,e]", {"dz": (B, 5, 12), "o": (B, 5, 3, 4)}, {"E": 4},
     ("GEMM into the result",), "in place"),
    ("db[E*h + e] = dq[b,n,h,e]", {"dq": (B, 5, 3, 4)}, {"E": 4}, ("sum as GEMV",), "in place"),
    # patch embedding, kernel = stride: the tokens i*J + j are a reshape, the product one GEMM and its bias
    ("z[b, i*J + j, k] = x[b, s1*i+p, s1*j+q, r] * w[p,q,r,k] + c[k]",
     {"x": (B, 12, 12, 2), "w": (3, 3, 2, 8), "c": (8,)}, {"s1": 3, "J": 4},
     ("GEMM into the result", "add of a view"), "in place"),
    # flatten's (10): a copy into the reshaped result
    ("z[b, i*J*K + j*K + k] = x[b,i,j,k]", {"x": (B, 3, 4, 5)}, {"J": 4, "K": 5}, ("gather copy",), "in place"),
    # the heads' index outermost in the result: a reshape too, the GEMM's columns in its order
    ("dw[E*h + e, i] = dq[b,n,h,e] * x[b,n,i]", {"dq": (B, 5, 3, 4), "x": (B, 5, 12)}, {"E": 4},
     ("GEMM into the result",), "in place"),
    # e outer, h inner: no reshape (h's stride is 1, e's 4), folded as before
    ("dw[i, h + H*e] = dq[b,n,h,e] * x[b,n,i]", {"dq": (B, 5, 3, 4), "x": (B, 5, 12)}, {"H": 3},
     ("opt_einsum path",), "strided add"),
    # overlapping windows: no reshape
    ("dx[b, i+p, k] = dz[b,i,k] * m[p]", {"dz": (B, 6, 5), "m": (3,)}, {}, ("elementwise ufunc",), "slice-add"),
]


def _arrays(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s) for n, s in shapes.items()}


@pytest.mark.parametrize("source,shapes,symbols,roads,fold", CASES, ids=[c[0] for c in CASES])
def test_a_result_that_is_a_reshape_is_written_as_one(source, shapes, symbols, roads, fold):
    run = Equation(source).compile(shapes=shapes, symbols=symbols)
    assert run.strategies == roads
    assert run.describe()["products"][0]["fold"]["kind"] == fold
    arrays = _arrays(shapes)
    np.testing.assert_allclose(run(**arrays), evaluate_run(run, **arrays), rtol=1e-12, atol=1e-12)


def test_a_bias_over_a_reshaped_result_is_added_by_the_gemm_s_workers():
    source, shapes, symbols = CASES[3][:3]
    run = Equation(source).compile(shapes=shapes, symbols=symbols)
    strategies = [p["strategy"]["runs"] for p in run.describe()["products"]]
    assert strategies[0].endswith("c[k] added to each worker's part as it is made")
    assert strategies[1] == "added by the product before it, to each of its parts"


@pytest.mark.parametrize("source,shapes,symbols", [c[:3] for c in CASES[:5]], ids=[c[0] for c in CASES[:5]])
def test_a_strided_result_is_written_through_a_c_ordered_copy(source, shapes, symbols):
    run = Equation(source).compile(shapes=shapes, symbols=symbols)
    arrays = _arrays(shapes, 1)
    want = evaluate_run(run, **arrays)
    big = np.full(want.shape[:-1] + (2 * want.shape[-1],), 7.0)
    run(out=big[..., ::2], **arrays)
    np.testing.assert_allclose(big[..., ::2], want, rtol=1e-12, atol=1e-12)
    assert (big[..., 1::2] == 7.0).all()
