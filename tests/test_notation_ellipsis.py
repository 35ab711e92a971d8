"""notation: the ellipsis `...` stands for the leading axes of the tensors read, as numpy's einsum's does."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from notation import Equation, NotationError
from notation.mathematics.derive import derive
from notation.mathematics.reference import evaluate, evaluate_run

DENSE = "z[...,j] = x[...,i] * w[i,j] + b[j]"


@pytest.mark.parametrize("source, printed", [
    ("z[...,j]=x[...,i]*w[i,j]+b[j]", DENSE),
    ("m[...] = max[k] z[...,k]", "m[...] = max[k] z[...,k]"),
    ("db[j] = dz[..., j]", "db[j] = dz[...,j]"),
    ("y[..., 2*i + p] = x[...,i] * g[p]", "y[..., 2*i + p] = x[...,i] * g[p]"),
])
def test_an_ellipsis_prints_back_and_parses_to_the_same_products(source, printed):
    eq = Equation(source)
    assert str(eq) == printed
    assert Equation(str(eq)).products == eq.products


def test_an_ellipsis_is_typeset_as_ldots():
    assert Equation(DENSE).latex() == r"z_{\ldots j} = \sum_{i} x_{\ldots i} w_{ij} + b_{j}"


def test_an_einsum_string_may_start_a_part_with_an_ellipsis():
    assert str(Equation("...i,ij->...j", operands=["x", "w"])) == "z[...,j] = x[...,i] * w[i,j]"


@pytest.mark.parametrize("shape, einsum", [((5, 3), "bi,ij->bj"), ((2, 5, 3), "bni,ij->bnj"),
                                           ((2, 2, 5, 3), "bnmi,ij->bnmj"), ((3,), "i,ij->j")])
def test_the_ellipsis_binds_as_many_fresh_indices_as_the_leading_axes(shape, einsum):
    run = Equation(DENSE).compile(shapes={"x": shape, "w": (3, 4), "b": (4,)})
    assert run.einsum.split(" + ")[0] == einsum
    assert run.result_shape == shape[:-1] + (4,)


def test_fresh_indices_avoid_those_the_equation_names():
    run = Equation("z[...,b] = x[...,n] * w[n,b]").compile(shapes={"x": (2, 5, 3), "w": (3, 4)})
    assert run.einsum == "mtn,nb->mtb"


def test_an_ellipsis_on_the_right_only_is_summed():
    dz = np.arange(24.0).reshape(2, 3, 4)
    run = Equation("db[j] = dz[...,j]").compile(shapes={"dz": dz.shape})
    assert_allclose(run(dz=dz), dz.sum(axis=(0, 1)))


EQUATIONS = [
    (DENSE, {"x": (-1, 3), "w": (3, 4), "b": (4,)}),
    ("z[...,i] = x[...,i] * y[...,i] - x[...,i]", {"x": (-1, 3), "y": (-1, 3)}),
    ("db[j] = dz[...,j]", {"dz": (-1, 4)}),
    ("dw[i,j] = dz[...,j] * x[...,i]", {"dz": (-1, 4), "x": (-1, 3)}),
    ("m[...] = max[k] z[...,k]", {"z": (-1, 4)}),
    ("e[...,i] = exp(z[...,i] - m[...])", {"z": (-1, 4), "m": (-1,)}),
    ("s[...,h,n,m] = q[...,n,h,e] * k[...,m,h,e]", {"q": (-1, 2, 3, 2), "k": (-1, 2, 3, 2)}),
]


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(EQUATIONS), st.lists(st.integers(1, 3), min_size=0, max_size=3), st.integers(0, 2 ** 31))
def test_an_ellipsis_lowers_to_what_the_reference_loops_compute(case, lead, seed):
    source, given_shapes = case
    rng = np.random.default_rng(seed)
    shapes = {k: tuple(lead) + s[1:] if s[0] == -1 else s for k, s in given_shapes.items()}
    arrays = {k: rng.standard_normal(s) for k, s in shapes.items()}
    run = Equation(source).compile(shapes=shapes)
    assert_allclose(run(**arrays), evaluate_run(run, **arrays), rtol=1e-10, atol=1e-10)
    assert_allclose(run(**arrays), evaluate(run.equation, arrays, run.extents, run.symbols, run.result_shape),
                    rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("wrt, written", [("x", "dx[...,i] = dz[...,j] * w[i,j]"),
                                          ("w", "dw[i,j] = dz[...,j] * x[...,i]"),
                                          ("b", "db[j] = dz[...,j]")])
def test_derive_keeps_the_ellipsis(wrt, written):
    assert derive(Equation(DENSE), wrt) == written


def test_the_derived_jacobian_through_an_ellipsis_matches_finite_differences():
    rng = np.random.default_rng(1)
    x, w, b, dz = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5)), rng.standard_normal(5), \
        rng.standard_normal((2, 3, 5))
    forward = Equation(DENSE).compile(shapes={"x": x.shape, "w": w.shape, "b": b.shape})
    dw = Equation(derive(Equation(DENSE), "w")).compile(shapes={"dz": dz.shape, "x": x.shape})(dz=dz, x=x)
    h, e = 1e-6, np.zeros_like(w)
    e[1, 2] = h
    numeric = ((forward(x=x, w=w + e, b=b) - forward(x=x, w=w - e, b=b)) * dz).sum() / (2 * h)
    assert dw[1, 2] == pytest.approx(numeric, rel=1e-7)


def test_a_max_over_an_ellipsis_derives_with_its_positions_led_by_the_ellipsis():
    assert derive(Equation("m[...] = max[k] z[...,k]"), "z", positions="p") == "dz[...,k] = dm[...] * p[...,k]"


@pytest.mark.parametrize("source, message", [
    ("z[...,j] = x[...,...,i]", "x has two ellipses"),
    ("z[...,j] = x[i,...]", "the ellipsis of x stands after an axis"),
    ("z[...,j] = x[b,i] * w[i,j]", "the ellipsis of z stands for no axes"),
])
def test_a_misplaced_ellipsis_is_one_error_pointing_at_it(source, message):
    with pytest.raises(NotationError, match=message) as caught:
        Equation(source)
    assert caught.value.source == source and source[slice(*caught.value.span)] == "..."


@pytest.mark.parametrize("shapes, message", [
    ({"x": (2, 3, 4), "y": (2, 4)}, r"stands for 1 axis in y \(shape \(2, 4\)\) but for 2 in x"),
    ({"x": (), "y": (4,)}, "x has 0 axes"),
])
def test_ellipses_standing_for_different_axes_are_refused(shapes, message):
    with pytest.raises(NotationError, match=message):
        Equation("z[...,i] = x[...,i] + y[...,i]").compile(shapes=shapes)


def test_an_ellipsis_with_no_shape_to_bind_it_says_which_shape_to_give():
    with pytest.raises(NotationError, match=r"cannot tell how many axes \.\.\. stands for.*give the shape of x"):
        Equation(DENSE).compile(shapes={"w": (3, 4), "b": (4,)})
