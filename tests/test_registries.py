"""Registries, not edits: a function, an initialiser or an optimizer is added by name, then used."""
import math

import numpy as np
import pytest
import yaml

import engine
from engine.compiler import init
from engine.training import optim
from notation import FUNCTIONS, Equation, UserError, register_function
from notation.mathematics.derive import derive
from notation.mathematics.reference import evaluate_run

from conftest import SPEC


@pytest.fixture
def softplus():
    """softplus and its derivative (the logistic), registered for one test and removed after it."""
    register_function("dsoftplus", lambda z, out=None: FUNCTIONS["sigmoid"].array(z, out=out),
                      lambda v: 1.0 / (1.0 + math.exp(-v)))
    register_function("softplus", lambda z, out=None: np.logaddexp(0, z, out=out),
                      lambda v: math.log1p(math.exp(v)), derivative="dsoftplus", latex=r"\zeta")
    yield
    del FUNCTIONS["softplus"], FUNCTIONS["dsoftplus"]


def test_a_registered_function_runs_in_equations_and_derives(softplus):
    eq = Equation("a[b,i] = softplus(z[b,i])")
    run = eq.compile(shapes={"z": (3, 4)})
    z = np.random.default_rng(0).standard_normal((3, 4))
    np.testing.assert_allclose(run(z=z), evaluate_run(run, z=z), rtol=1e-12)
    assert eq.latex() == r"a_{bi} = \zeta\left(z_{bi}\right)"
    assert "dsoftplus(z[b,i])" in derive(eq, "z")


@pytest.mark.parametrize("name", ["relu", "max", "2x", ""])
def test_a_taken_or_malformed_function_name_is_refused(name):
    with pytest.raises(UserError, match="function|name"):
        register_function(name, np.abs, abs)


@pytest.fixture
def registries():
    """The initialiser and optimizer registries as they were, after the test."""
    before = dict(init.INITIALISERS), dict(optim.OPTIMIZERS)
    yield
    for registry, was in zip((init.INITIALISERS, optim.OPTIMIZERS), before):
        registry.clear()
        registry.update(was)


def test_a_registered_initialiser_and_optimizer_are_used_by_name(registries):
    init.register_initialiser("halves", lambda rng, shape: np.full(shape, 0.5))

    @optim.register_optimizer
    class Halving(optim.SGD):
        name = "halving"

        def step(self, params, grads):
            for ps in params.values():
                for w in ps.values():
                    w *= 0.5

    spec = yaml.safe_load(SPEC.read_text())
    spec["networks"]["softmax-regression"]["layers"][-1]["init"] = "halves"
    net = engine.load(spec, network="softmax-regression", check=False)
    w = net.params["dense"]["w"]
    assert np.all(w == 0.5)
    optim.make("halving", net.params, 0.1).step(net.params, None)
    assert np.all(net.params["dense"]["w"] == 0.25)
    with pytest.raises(UserError, match="taken"):
        optim.register_optimizer(Halving)
    with pytest.raises(UserError, match="taken"):
        init.register_initialiser("he", init.he)


@pytest.mark.parametrize("source, wrt, written", [
    ("ex[b,i] = exp(s[b,i] - m[b])", "s", "ds[b,i] = dex[b,i] * ex[b,i]"),
    ("ex[b,i] = exp(s[b,i] - m[b])", "m", "dm[b] = -1 * dex[b,i] * ex[b,i]"),
    ("ex[b,i] = 2 * exp(s[b,i])", "s", "ds[b,i] = 2 * dex[b,i] * exp(s[b,i])"),  # the result is not exp's value
    ("ex[b,i] = exp(s[b,i]) + s[b,i]", "s", "ds[b,i] = dex[b,i] * exp(s[b,i]) + dex[b,i]"),
])
def test_a_function_that_is_its_own_derivative_reads_the_result_where_the_result_is_its_value(source, wrt, written):
    assert derive(Equation(source), wrt) == written
