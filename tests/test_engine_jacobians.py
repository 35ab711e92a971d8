"""Every layer kind's Jacobian contractions agree with central finite differences (float64)."""
import numpy as np
import pytest

import engine
from engine.compiler.layer import Block

from conftest import SPEC as SPEC_PATH

SPEC = engine.read(SPEC_PATH)


def build(kind, shape, section="kinds", **hyper):
    k = getattr(SPEC, section)[kind]
    return Block(SPEC, k, {**k.hyper, **hyper}, {k.in_name: shape}, f"test {kind}", dtype=np.float64)


def inputs(block, rng):
    names = [block.kind.in_name] + list(block.param_shapes)
    return {n: rng.standard_normal(block.shapes[n]) for n in names}


def objective(block, env, g):
    out = block.forward(dict(env))[block.kind.out_name]
    return float(np.sum(g * out))


def finite_difference_error(block, seed=0, entries=40, h=1e-6):
    """Largest relative error over every input and parameter, entry by entry (sampled if large)."""
    rng = np.random.default_rng(seed)
    env = inputs(block, rng)
    g = rng.standard_normal(block.out_shape)
    work = block.forward(dict(env))
    work["d" + block.kind.out_name] = g
    analytic = {t: block.backward(work)["d" + t].copy() for t in env}
    worst = 0.0
    for t, value in env.items():
        flat = list(np.ndindex(value.shape))
        picks = [flat[i] for i in rng.choice(len(flat), min(entries, len(flat)), replace=False)]
        numeric, exact = [], []
        for idx in picks:
            plus, minus = dict(env), dict(env)
            plus[t], minus[t] = value.copy(), value.copy()
            plus[t][idx] += h
            minus[t][idx] -= h
            numeric.append((objective(block, plus, g) - objective(block, minus, g)) / (2 * h))
            exact.append(analytic[t][idx])
        numeric, exact = np.array(numeric), np.array(exact)
        worst = max(worst, np.max(np.abs(numeric - exact)) / max(np.max(np.abs(exact)), 1e-8))
    return worst


@pytest.mark.parametrize("size", [7, 8])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("kernel", [2, 3])
@pytest.mark.parametrize("algorithm", ["definition", "im2col", "im2col_cf", "col2im", "fourier"])
def test_conv2d_jacobians_match_finite_differences(size, stride, padding, kernel, algorithm):
    if algorithm == "fourier" and stride > 1:
        pytest.skip("fourier refuses a stride: tests/test_algorithms.py")
    block = build("conv2d", (2, size, size + 1, 2), filters=3, kernel=kernel, stride=stride, padding=padding,
                  algorithm=algorithm)
    assert block.algorithm == (None if algorithm == "definition" else algorithm)
    assert finite_difference_error(block) < 1e-6


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d_input_gradient_is_eq16_as_the_report_writes_it(stride, padding):
    """The im2col chain evaluates (16) as a gather down the height; the report's sum, term by term,
    restricted to the terms in range, must give the same numbers (then cropped to the input)."""
    from notation import Equation
    from notation.mathematics.reference import evaluate
    block = build("conv2d", (2, 7, 6, 2), filters=3, kernel=3, stride=stride, padding=padding, algorithm="im2col")
    rng = np.random.default_rng(stride)
    env = block.forward(inputs(block, rng))
    env["dz"] = rng.standard_normal(block.out_shape)
    dx = block.backward(env)["dx"]
    sym = block.symbols
    eq16 = Equation("dxp[c,t,u,v] = dz[c,i,j,k] * w[P+s1*i-t, Q+s2*j-u, v, k]")
    run = eq16.compile(shapes={"dz": env["dz"].shape, "w": env["w"].shape, "dxp": env["xp"].shape}, symbols=sym)
    dxp = evaluate(eq16, {"dz": env["dz"], "w": env["w"]}, run.extents, sym, env["xp"].shape)
    np.testing.assert_allclose(dx, dxp[:, sym["pt"]:sym["pt"] + 7, sym["pl"]:sym["pl"] + 6], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size", [7, 8])
@pytest.mark.parametrize("window,stride", [(2, 2), (3, 2), (2, 1)])
def test_maxpool_jacobian_matches_finite_differences(size, window, stride):
    block = build("maxpool", (2, size, size, 3), size=window, stride=stride)
    assert finite_difference_error(block) < 1e-6


def test_flatten_jacobian_matches_finite_differences():
    assert finite_difference_error(build("flatten", (2, 3, 4, 5))) < 1e-6


@pytest.mark.parametrize("features,units", [(5, 3), (6, 4)])
def test_dense_jacobians_match_finite_differences(features, units):
    assert finite_difference_error(build("dense", (3, features), units=units)) < 1e-6


@pytest.mark.parametrize("name", ["relu", "softmax"])
def test_activation_jacobians_match_finite_differences(name):
    assert finite_difference_error(build(name, (3, 7), section="activations")) < 1e-6


def test_relu_derivative_is_one_half_at_exactly_zero():
    block = build("relu", (1, 3), section="activations")
    env = block.forward({"z": np.array([[-1.0, 0.0, 2.0]])})
    env["da"] = np.ones((1, 3))
    assert block.backward(env)["dz"].tolist() == [[0.0, 0.5, 1.0]]


def test_maxpool_sends_the_gradient_to_the_first_of_tied_maxima():
    block = build("maxpool", (1, 2, 2, 1), size=2, stride=2)
    env = block.forward({"x": np.ones((1, 2, 2, 1))})
    env["dz"] = np.ones((1, 1, 1, 1))
    assert block.backward(env)["dx"][0, :, :, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_softmax_cross_entropy_gradient_is_eq_26_and_matches_finite_differences():
    act = build("softmax", (3, 5), section="activations")
    rng = np.random.default_rng(1)
    z = rng.standard_normal((3, 5))
    y = np.eye(5)[[0, 3, 4]]
    loss = Block(SPEC, SPEC.losses["softmax_cross_entropy"], {}, {**act.shapes, "y": (3, 5), "dJ": ()},
                 "test loss", needs={"z"}, dtype=np.float64)

    def J(zz):
        env = act.forward({"z": zz})
        env = {k: v.copy() for k, v in env.items()}
        env["y"] = y
        return float(loss.forward(env)["J"]), env

    value, env = J(z)
    s = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    assert value == pytest.approx(-np.mean(np.log(s[y == 1])), rel=1e-12)
    env["dJ"] = np.ones(())
    dz = loss.backward(env)["dz"]
    numeric = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        e = np.zeros_like(z)
        e[idx] = 1e-6
        numeric[idx] = (J(z + e)[0] - J(z - e)[0]) / 2e-6
    assert np.max(np.abs(numeric - dz)) / np.max(np.abs(dz)) < 1e-6
