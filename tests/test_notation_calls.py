"""A compiled run called again: what it keeps between calls (views, BLAS's matrices, a scatter's keys)
follows the arrays it is given, whether the same ones changed in place or new ones."""
import numpy as np
import pytest

from notation import Equation
from notation.mathematics.reference import evaluate_run

CASES = [  # equation, operand shapes, symbols: a road each
    ("z[b,k] = x[b,i] * w[i,k]", {"x": (5, 6), "w": (6, 3)}, {}),  # GEMM into the result
    ("z[b,i,j,k] = x[b,i+p,j+q,r] * w[p,q,r,k]", {"x": (2, 6, 6, 3), "w": (3, 3, 3, 4)}, {}),  # windows
    ("dx[b, s1*i+p, s2*j+q, k] = dz[b,i,j,k] * w[P-p, Q-q, k]",
     {"dz": (2, 4, 4, 3), "w": (3, 3, 3)}, {"s1": 2, "s2": 2}),  # a scatter folded by slice-adds
    ("z[b,n,k] = x[b,n,k] * r[b,n]", {"x": (2, 4, 8), "r": (2, 4)}, {}),  # elementwise
    ("s[b,h,n,m] = q[b,n,h,e] * k[b,m,h,e]", {"q": (2, 5, 3, 4), "k": (2, 5, 3, 4)}, {}),  # batched
    ("dw[i, E*h + e] = x[b,n,i] * dq[b,n,h,e]", {"x": (2, 3, 4), "dq": (2, 3, 2, 5)}, {}),  # a reshape of the result
    ("dx[b, s1*i+p, s2*j+q, k] = dz[b,i,j,k] * m[b,i,j,k,p,q]",
     {"dz": (2, 3, 3, 4), "m": (2, 3, 3, 4, 2, 2)}, {"s1": 2, "s2": 2}),  # (19): an elementwise reshape
]


def fresh(shapes, rng):
    return {name: rng.standard_normal(shape) for name, shape in shapes.items()}


@pytest.mark.parametrize("source, shapes, symbols", CASES, ids=[c[0].split(" =")[0] for c in CASES])
def test_the_same_arrays_changed_in_place_give_the_new_result(source, shapes, symbols):
    run = Equation(source).compile(shapes=shapes, symbols=symbols)
    rng = np.random.default_rng(0)
    arrays = fresh(shapes, rng)
    out = np.empty(run.result_shape)
    run(out=out, **arrays)
    for a in arrays.values():
        a[...] = rng.standard_normal(a.shape)
    np.testing.assert_allclose(run(out=out, **arrays), evaluate_run(run, **arrays), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("source, shapes, symbols", CASES, ids=[c[0].split(" =")[0] for c in CASES])
def test_new_arrays_and_a_new_result_buffer_are_the_ones_used(source, shapes, symbols):
    run = Equation(source).compile(shapes=shapes, symbols=symbols)
    rng = np.random.default_rng(1)
    first = run(out=np.empty(run.result_shape), **fresh(shapes, rng))
    kept = first.copy()
    arrays = fresh(shapes, rng)
    out = np.empty(run.result_shape)
    assert run(out=out, **arrays) is out
    np.testing.assert_allclose(out, evaluate_run(run, **arrays), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(first, kept)  # the earlier result buffer is left as it was
