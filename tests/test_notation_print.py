"""notation: equations print back in our notation and in LaTeX, show their lowering, and accept einsum strings."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from opt_einsum.contract import PathInfo

from notation import Equation, NotationError

TOL = dict(rtol=1e-10, atol=1e-10)


def compile_eq(source, shapes, **symbols):
    return Equation(source).compile(shapes=shapes, symbols=symbols)


# -- str(eq) ---------------------------------------------------------------------------------

@pytest.mark.parametrize("source, printed", [
    ("z[b,j]=x[b,i]*w[i,j]", "z[b,j] = x[b,i] * w[i,j]"),
    ("z[b,i,j,k] = x[b, s1*i+p, s2*j+q, r] * w[P-p, Q-q, r, k] + bias[k]",
     "z[b,i,j,k] = x[b, s1*i + p, s2*j + q, r] * w[P - p, Q - q, r, k] + bias[k]"),
    ("dx[c,t,u,v] = dz[c,i,j,k] * w[P+s1*i-t, Q+s2*j-u, v, k]",
     "dx[c,t,u,v] = dz[c,i,j,k] * w[P + s1*i - t, Q + s2*j - u, v, k]"),
    ("z[b, i*J*K + j*K + k] = x[b,i,j,k]", "z[b, J*K*i + K*j + k] = x[b,i,j,k]"),
    ("z[b,i,j,k] = max[p,q] x[b, s1*i+p, s2*j+q, k]", "z[b,i,j,k] = max[p,q] x[b, s1*i + p, s2*j + q, k]"),
    ("dz[c,i] = da[b,j]*delta[b,c]*delta[i,j]*drelu(z[c,i])",
     "dz[c,i] = da[b,j] * delta[b,c] * delta[i,j] * drelu(z[c,i])"),
    ("J = -1/B * y[b,i] * log(s[b,i])", "J = -1 / B * y[b,i] * log(s[b,i])"),
    ("z[b,j] = 0.5*eta*x[b,j]", "z[b,j] = 0.5 * eta * x[b,j]"),
])
def test_str_prints_the_normal_form(source, printed):
    assert str(Equation(source)) == printed


@pytest.mark.parametrize("source", [
    "z[i] = x[i] - (y[i] - u[i])",
    "z[i] = -(x[i] - y[i])",
    "z[i] = x[i] - -y[i]",
    "z[i] = x[i] / (2*eta)",
    "z[i] = x[i] / eta / 2",
    "z[i] = x[i] * (y[i] + u[i]) * 3",
    "z[b,i] = max[p] (x[b, 2*i+p] * y[b,p])",
    "z[b,i] = max[p] (x[b, 2*i+p] + y[b,p])",
    "z[b,i] = max[p] x[b, 2*i+p] * y[b,i]",
    "dz[b,i] = s[b,i] * (delta[i,j] - s[b,j]) * g[b,j]",
])
def test_printed_equation_parses_back_to_the_same_products(source):
    eq = Equation(source)
    again = Equation(str(eq))
    assert again.products == eq.products
    assert str(again) == str(eq)


atoms = st.sampled_from(["x[i]", "y[j]", "delta[i,j]", "relu(x[i])", "2", "0.5", "eta"])


def combine(parts):
    left, op, right = parts
    return f"({left}) {op} ({right})"


expressions = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*"]), inner).map(combine),
        inner.map(lambda e: f"-({e})"),
        st.tuples(inner, st.sampled_from(["2", "eta", "(2*eta)"])).map(lambda t: f"({t[0]}) / {t[1]}"),
    ),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None)
@given(expressions)
def test_printed_expression_computes_the_same_values(expression):
    eq = Equation(f"z[i,j] = x[i] * y[j] * ({expression})")
    shapes, symbols = {"x": (3,), "y": (3,)}, {"eta": 0.7}
    arrays = {"x": np.array([1.0, -2.0, 0.5]), "y": np.array([0.25, 3.0, -1.5])}
    original = eq.compile(shapes, symbols)(**arrays)
    printed = Equation(str(eq)).compile(shapes, symbols)(**arrays)
    assert_allclose(printed, original, **TOL)


# -- eq.latex() ------------------------------------------------------------------------------

@pytest.mark.parametrize("source, latex", [
    ("z[b,j] = x[b,i] * w[i,j]", r"z_{bj} = \sum_{i} x_{bi} w_{ij}"),
    ("z[b,i,j,k] = x[b, s1*i+p, s2*j+q, r] * w[P-p, Q-q, r, k]",
     r"z_{bijk} = \sum_{p,q,r} x_{b(s_{1}i+p)(s_{2}j+q)r} w_{(P-p)(Q-q)rk}"),
    ("dx[c,t,u,v] = dz[c,i,j,k] * w[P+s1*i-t, Q+s2*j-u, v, k]",
     r"\partial x_{ctuv} = \sum_{i,j,k} \partial z_{cijk} w_{(P+s_{1}i-t)(Q+s_{2}j-u)vk}"),
    ("z[b,i,j,k] = max[p,q] x[b, s1*i+p, s2*j+q, k]", r"z_{bijk} = \max_{p,q} x_{b(s_{1}i+p)(s_{2}j+q)k}"),
    ("z[b, i*J*K + j*K + k] = x[b,i,j,k]", r"z_{b(JKi+Kj+k)} = x_{bijk}"),
    ("dz[b,i] = s[b,i] * (delta[i,j] - s[b,j]) * g[b,j]",
     r"\partial z_{bi} = \sum_{j} s_{bi} \left(\delta_{ij} - s_{bj}\right) g_{bj}"),
    ("d[b,i] = drelu(z[b,i])", r"d_{bi} = \operatorname{R}'\left(z_{bi}\right)"),
    ("J = -1/B * y[b,i] * log(s[b,i])", r"J = -\sum_{b,i} \frac{1}{B} y_{bi} \log\left(s_{bi}\right)"),
    ("z[b,j] = 2 * eta * x[b,j]", r"z_{bj} = 2 \eta x_{bj}"),
    ("z[i] = x[i] - (y[i] - u[i])", r"z_{i} = x_{i} - \left(y_{i} - u_{i}\right)"),
    ("z[b,i] = max[p] (x[b, 2*i+p] * y[b,p])", r"z_{bi} = \max_{p} \left(x_{b(2i+p)} y_{bp}\right)"),
    ("z[b,i] = max[p] x[b, 2*i+p] * y[b,i]", r"z_{bi} = \left(\max_{p} x_{b(2i+p)}\right) y_{bi}"),
])
def test_latex_reads_like_the_report(source, latex):
    assert Equation(source).latex() == latex


# -- run.einsum and run.path_info -------------------------------------------------------------

@pytest.mark.parametrize("source, shapes, symbols, einsum", [
    ("z[b,j] = x[b,i] * w[i,j]", {"x": (3, 4), "w": (4, 5)}, {}, "bi,ij->bj"),
    ("z[b,j] = x[b,i] * w[i,j] + bias[j]", {"x": (3, 4), "w": (4, 5), "bias": (5,)}, {}, "bi,ij->bj + j->j"),
    ("z[b,i,j,k] = x[b, s1*i+p, s2*j+q, r] * w[P-p, Q-q, r, k]", {"x": (2, 9, 9, 3), "w": (3, 3, 3, 4)},
     {"s1": 2, "s2": 2}, "bipjqr,pqrk->bijk"),
    ("dx[c, s1*i+p, s2*j+q, v] = dz[c,i,j,k] * w[P-p, Q-q, v, k]", {"dz": (2, 4, 4, 3), "w": (3, 3, 2, 3)},
     {"s1": 2, "s2": 2}, "cijk,pqvk->cipjqv"),
    ("z[b, i*J*K + j*K + k] = x[b,i,j,k]", {"x": (2, 3, 4, 5)}, {}, "bijk->bijk"),
    ("dz[c,i] = dr[c,j] * delta[i,j] * drelu(z[c,i])", {"dr": (3, 4), "z": (3, 4)}, {}, "ci,ci->ci"),
])
def test_einsum_shows_the_lowered_subscripts(source, shapes, symbols, einsum):
    assert compile_eq(source, shapes, **symbols).einsum == einsum


def contraction(info):
    """A plan's input subscripts (in any order) and output subscripts."""
    inputs, output = info.eq.split("->")
    return sorted(inputs.split(",")), output


def test_path_info_is_opt_einsums_plan_of_the_contraction():
    info = compile_eq("z[b,j] = x[b,i] * w[i,j]", {"x": (3, 4), "w": (4, 5)}).path_info
    assert isinstance(info, PathInfo)
    assert info.path == [(0, 1)]
    assert contraction(info) == (["bi", "ij"], "bj")
    assert info.opt_cost == 2 * 3 * 4 * 5


def test_path_info_of_a_sum_has_one_plan_per_product():
    infos = compile_eq("z[b,j] = x[b,i] * w[i,j] + bias[j]", {"x": (3, 4), "w": (4, 5), "bias": (5,)}).path_info
    assert [contraction(info) for info in infos] == [(["bi", "ij"], "bj"), (["j"], "j")]


# -- einsum strings with named operands ---------------------------------------------------------

def test_einsum_string_becomes_an_equation():
    eq = Equation("bi,ij->bj", operands=["x", "w"])
    assert str(eq) == "z[b,j] = x[b,i] * w[i,j]"
    assert eq.operands == ("x", "w") and eq.result == "z"


def test_einsum_string_names_its_result():
    assert str(Equation("bi,ij->bj", operands=["x", "w"], result="y")) == "y[b,j] = x[b,i] * w[i,j]"


def test_einsum_string_computes_like_numpy_einsum():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((3, 4)), rng.standard_normal((4, 5))
    run = Equation("bi,ij->jb", operands=["x", "w"]).compile({"x": x.shape, "w": w.shape})
    assert_allclose(run(x=x, w=w), np.einsum("bi,ij->jb", x, w), **TOL)


@pytest.mark.parametrize("subscripts, operands, reason", [
    ("bi,ij", ["x", "w"], "needs an explicit output"),
    ("bi,ij->bj", ["x"], "the einsum string has 2 operand(s) but 1 name(s)"),
    ("bI,Ij->bj", ["x", "w"], "einsum subscripts are lower-case letters; found 'I'"),
])
def test_bad_einsum_string_says_what_is_wrong(subscripts, operands, reason):
    with pytest.raises(NotationError, match=None) as info:
        Equation(subscripts, operands=operands)
    assert reason in str(info.value) and f"in: {subscripts}" in str(info.value)


def test_a_compiled_run_shows_its_equation_and_shapes_in_a_repl():
    run = Equation("z[b,j] = x[b,i] * w[i,j]").compile(shapes={"x": (4, 3), "w": (3, 2)})
    assert repr(run) == "<Run z[b,j] = x[b,i] * w[i,j] for x (4, 3), w (3, 2)>"
