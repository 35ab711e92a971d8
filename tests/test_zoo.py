"""The zoo: every kind and activation of layers.yaml, on small random shapes in float64, runs its
forward equations as the reference interpreter reads them, and its Jacobians (declared or
derived) agree with central differences, in training and in eval mode where the two differ; built
in float32, each agrees with its float64 self to float32's precision."""
import dataclasses

import numpy as np
import pytest

import engine
from engine.compiler.layer import Block
from notation.mathematics.derive import grad
from notation.mathematics.reference import evaluate_run

from conftest import SPEC

ZOO = engine.read(SPEC)


def check_kind(name, in_shapes, mode="train", section="kinds", seed=0, tolerance=1e-6, **hyper):
    """Build one kind for `in_shapes` in `mode`, on random inputs, parameters and state (variances
    positive) and a drawn random mask; assert its forward equals the reference interpreter's,
    equation by equation (and its state update too), and that each input's and parameter's
    gradient matches the central difference of <g, z> along a random direction, with the masks
    held fixed.  Returns the block for further checks."""
    kind = getattr(ZOO, section)[name]
    block = Block(ZOO, kind, {**kind.hyper, **hyper}, in_shapes, f"{section} {name!r}", dtype=np.float64,
                  mode=mode)
    rng = np.random.default_rng(seed)
    env = {n: rng.standard_normal(s) for n, s in in_shapes.items()}
    env.update({p: rng.standard_normal(s) for p, s in block.param_shapes.items()})
    env.update({n: rng.uniform(0.5, 1.5, s) for n, s in block.state_shapes.items()})
    block.draw(env, rng)
    base = {k: np.array(v, copy=True) for k, v in env.items()}

    work = dict(base)
    block.forward(work)
    ref = dict(base)
    for result, _, run, reads in block.forward_runs:  # each equation against the literal loops
        ref[result] = evaluate_run(run, **{n: ref[n] for n in reads})
        np.testing.assert_allclose(work[result], ref[result], rtol=1e-10, atol=1e-12, err_msg=result)
    wants = {state: evaluate_run(run, **{n: ref[n] for n in reads}) for state, run, reads in block.update_runs}
    work.update({state: work[state].copy() for state in wants})
    block.update(work)
    for state, want in wants.items():
        np.testing.assert_allclose(work[state], want, rtol=1e-10, atol=1e-12, err_msg=state)

    out = kind.out_name
    g = rng.standard_normal(block.out_shape)
    work = dict(base)
    block.forward(work)
    work[grad(out)] = g
    block.backward(work)

    def value(env):
        env = dict(env)
        block.forward(env)
        return float(np.sum(g * env[out]))

    size = float(np.sum(np.abs(g * work[out])))  # the size of <g, z>'s terms

    targets = list(block.param_shapes) + list(kind.in_names)
    assert targets, f"{name} has nothing to differentiate"
    for t in targets:
        for _ in range(2):
            v = rng.standard_normal(base[t].shape)
            h = 1e-5  # about eps^(1/3): the central difference's truncation and rounding errors balanced
            plus, minus = dict(base), dict(base)
            plus[t], minus[t] = base[t] + h * v, base[t] - h * v
            numeric = (value(plus) - value(minus)) / (2 * h)
            analytic = float(np.sum(work[grad(t)] * v))
            # relative to the size of the sum's terms, not only its value: terms that cancel to a
            # small sum leave the difference quotient's rounding (~1e-10) large beside that sum
            scale = max(abs(numeric), abs(analytic), float(np.sum(np.abs(work[grad(t)] * v))), 1e-8)
            # the quotient's own rounding: each value's terms carry float64's eps, divided by 2h
            noise = 4 * np.finfo(np.float64).eps * size / (2 * h)
            err = max(abs(numeric - analytic) - noise, 0.0) / scale
            assert err < tolerance, f"{section} {name} ({mode}): d{t} is off by {err:.1e} (relative)"
    check_float32(kind, hyper, in_shapes, mode, section, base, g, work, targets)
    return block


def check_float32(kind, hyper, in_shapes, mode, section, base, g, want, targets, tolerance=1e-4):
    """The same kind built in float32, on the same inputs, masks and upstream gradient, agrees with
    the float64 forward and gradients to float32's precision (relative to each array's norm)."""
    block = Block(ZOO, kind, {**kind.hyper, **hyper}, in_shapes, f"{section} {kind.name!r}", dtype=np.float32,
                  mode=mode)
    work = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in base.items()}
    block.forward(work)
    work[grad(kind.out_name)] = g.astype(np.float32)
    block.backward(work)
    # a result whose terms cancel to a small sum (attention's z = o wo + bo, its dwq over two tokens, a
    # layer norm's dx over 3 features, two of whose 3 directions it removes) keeps float32's rounding of
    # those terms: it is held to the size of what flows through the layer, the inputs forward and, backward,
    # their gradients or the gradient it is handed
    forward = max(np.linalg.norm(base[x]) for x in kind.in_names)
    backward = max([np.linalg.norm(want[grad(x)]) for x in kind.in_names] + [np.linalg.norm(g)])
    for name in [kind.out_name] + [grad(t) for t in targets]:
        assert work[name].dtype == np.float32, f"{section} {kind.name} ({mode}): {name} is {work[name].dtype}"
        size = max(np.linalg.norm(want[name]), forward if name == kind.out_name else backward)
        err = np.linalg.norm(work[name] - want[name]) / max(size, 1e-30)
        assert err < tolerance, f"{section} {kind.name} ({mode}): {name} in float32 is off by {err:.1e} (relative)"


IMAGE = {"x": (3, 6, 5, 2)}
CASES = [
    # (section, kind, input shapes, hyperparameters, modes)
    ("kinds", "dense", {"x": (3, 4)}, {"units": 5}, ["train"]),
    ("kinds", "conv2d", {"x": (2, 7, 6, 2)}, {"filters": 3, "kernel": 3, "stride": 2, "padding": "same"}, ["train"]),
    ("kinds", "maxpool", IMAGE, {}, ["train"]),
    ("kinds", "flatten", IMAGE, {}, ["train"]),
    ("kinds", "batchnorm", IMAGE, {}, ["train", "eval"]),
    ("kinds", "layernorm", {"x": (3, 7)}, {}, ["train"]),
    ("kinds", "layernorm", {"x": (2, 3, 5)}, {}, ["train"]),  # each token of [b, n, d]
    ("kinds", "dense", {"x": (2, 3, 4)}, {"units": 5}, ["train"]),  # each token of [b, n, d]
    ("kinds", "add", {"x1": (2, 3, 4), "x2": (2, 3, 4)}, {}, ["train"]),  # a residual over tokens
    ("kinds", "dropout", {"x": (4, 9)}, {"rate": 0.3}, ["train", "eval"]),
    ("kinds", "avgpool", {"x": (2, 6, 5, 3)}, {}, ["train"]),
    ("kinds", "global_avgpool", IMAGE, {}, ["train"]),
    ("kinds", "dilated_conv2d", {"x": (2, 7, 8, 2)}, {"filters": 3, "kernel": 3, "dilation": 2}, ["train"]),
    ("kinds", "depthwise_conv2d", {"x": (2, 6, 7, 3)}, {}, ["train"]),
    ("kinds", "depthwise_conv2d", {"x": (2, 7, 7, 3)}, {"stride": 2, "kernel": 3}, ["train"]),
    ("kinds", "conv2d_transpose", {"x": (2, 3, 4, 2)}, {"filters": 3}, ["train"]),
    ("kinds", "conv2d_transpose", {"x": (2, 3, 4, 2)}, {"filters": 2, "kernel": 3}, ["train"]),  # overlapping
    ("kinds", "add", {"x1": (2, 3, 4, 2), "x2": (2, 3, 4, 2)}, {}, ["train"]),
    ("kinds", "concat", {"x1": (2, 3, 4, 2), "x2": (2, 3, 4, 3)}, {}, ["train"]),
    ("kinds", "patch_embedding", {"x": (2, 6, 4, 2)}, {"patch": 2, "dim": 3}, ["train"]),
    ("kinds", "positional_embedding", {"x": (2, 3, 4)}, {}, ["train"]),
    ("kinds", "attention", {"x": (2, 3, 4)}, {"heads": 2}, ["train"]),
    ("kinds", "attention", {"x": (2, 5, 3)}, {"heads": 1}, ["train"]),
    ("kinds", "token_mixing", {"x": (2, 3, 4)}, {"units": 5}, ["train"]),
    ("kinds", "mean_pool", {"x": (2, 3, 4)}, {}, ["train"]),
    ("activations", "relu", {"z": (3, 5)}, {}, ["train"]),
    ("activations", "gelu", {"z": (3, 5)}, {}, ["train"]),
    ("activations", "tanh", {"z": (3, 5)}, {}, ["train"]),
    ("activations", "sigmoid", {"z": (3, 5)}, {}, ["train"]),
    ("activations", "softmax", {"z": (3, 5)}, {}, ["train"]),
]


@pytest.mark.parametrize("section,name,shapes,hyper,mode",
                         [(s, n, sh, hy, m) for s, n, sh, hy, modes in CASES for m in modes],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_each_kind_runs_its_equations_and_its_jacobians_match_central_differences(section, name, shapes, hyper,
                                                                                   mode):
    check_kind(name, shapes, mode, section, **hyper)


def test_every_kind_and_activation_in_the_spec_is_in_the_zoo_test():
    covered = {(s, n) for s, n, *_ in CASES}
    assert {("kinds", n) for n in ZOO.kinds} <= covered
    assert {("activations", n) for n in ZOO.activations if ZOO.activations[n].forward} <= covered


def test_every_new_kind_cites_the_report_or_says_extension():
    for kind in list(ZOO.kinds.values()) + list(ZOO.activations.values()):
        assert kind.cites.startswith("(") or kind.cites.startswith("extension"), kind.name


def test_modes_differ_where_the_kind_says_so():
    x = np.random.default_rng(1).standard_normal((4, 3, 3, 2)) * 3 + 1
    train = Block(ZOO, ZOO.kinds["batchnorm"], ZOO.kinds["batchnorm"].hyper, {"x": x.shape}, "bn", dtype=np.float64)
    evals = Block(ZOO, ZOO.kinds["batchnorm"], ZOO.kinds["batchnorm"].hyper, {"x": x.shape}, "bn",
                  dtype=np.float64, mode="eval")
    env = {"x": x, "g": np.ones(2), "beta": np.zeros(2), "rm": np.zeros(2), "rv": np.ones(2)}
    z = train.forward(dict(env))["z"]
    np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0, atol=1e-12)  # batch statistics: centred, unit variance
    np.testing.assert_allclose(z.var(axis=(0, 1, 2)), 1, rtol=1e-4)
    np.testing.assert_allclose(evals.forward(dict(env))["z"], x / np.sqrt(1 + 1e-5))  # running statistics
    assert train.update_runs and not evals.update_runs and not evals.random


def test_batch_norm_updates_its_running_statistics_with_the_momentum():
    kind = ZOO.kinds["batchnorm"]
    block = Block(ZOO, kind, {**kind.hyper, "momentum": 0.25}, {"x": (5, 2, 3, 2)}, "bn", dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((5, 2, 3, 2))
    rm, rv = np.full(2, 0.5), np.full(2, 2.0)
    env = block.forward({"x": x, "g": np.ones(2), "beta": np.zeros(2), "rm": rm, "rv": rv})
    block.update(env)
    np.testing.assert_allclose(rm, 0.75 * 0.5 + 0.25 * x.mean(axis=(0, 1, 2)))
    np.testing.assert_allclose(rv, 0.75 * 2.0 + 0.25 * x.var(axis=(0, 1, 2)))


def test_dropout_keeps_each_entry_with_probability_one_minus_rate_and_rescales():
    kind = ZOO.kinds["dropout"]
    block = Block(ZOO, kind, {"rate": 0.25}, {"x": (200, 100)}, "drop", dtype=np.float64)
    env = block.draw({}, np.random.default_rng(3))
    assert set(np.unique(env["m"])) == {0.0, 1.0}
    assert abs(env["m"].mean() - 0.75) < 0.01
    env["x"] = np.ones((200, 100))
    z = block.forward(env)["z"]
    np.testing.assert_allclose(z, env["m"] / 0.75)


def derived(kind):
    """The kind with `backward: derive` in place of its declared Jacobians."""
    return dataclasses.replace(kind, backward="derive")


def test_a_gradient_summed_at_a_fan_out_is_one_equation_where_every_term_writes_it_alike():
    """Batch norm's x feeds its mean and its centring: derived, dx is one sum of two terms, made in one
    result, with the term that covers it first (no zeroing, no temporaries dx_1, dx_2)."""
    spec = engine.read(SPEC)
    block = Block(spec, derived(spec.kinds["batchnorm"]), {"momentum": 0.1, "eps": 1e-5}, {"x": (4, 3, 3, 2)},
                  "bn", needs={"x", "g", "beta"})
    steps = {b.result: b.run for b in block.backward_runs}
    assert str(steps["dx"].equation) == "dx[b,i,j,k] = dmu[k] / count + dxc[b,i,j,k]"
    assert steps["dx"].strategies == ("gather copy", "add of a view")
    assert not {"dx_1", "dx_2", "dxc_1", "dxc_2"} & set(steps)


@pytest.mark.parametrize("name,shape", [("batchnorm", (4, 3, 5, 2)), ("layernorm", (3, 7)),
                                        ("layernorm", (2, 3, 5))])
def test_the_norms_declared_jacobians_equal_reverse_mode_over_their_forward(name, shape):
    """Batch and layer norm declare the short form of their gradients (dx in one pass over dz and xh);
    reverse mode over the same forward gives the same values, in float64, on random inputs."""
    kind = ZOO.kinds[name]
    blocks = [Block(ZOO, k, kind.hyper, {"x": shape}, name, dtype=np.float64) for k in (kind, derived(kind))]
    rng = np.random.default_rng(5)
    env = {"x": rng.standard_normal(shape) * 2 + 1}
    env.update({p: rng.standard_normal(s) for p, s in blocks[0].param_shapes.items()})
    env.update({n: np.ones(s) for n, s in blocks[0].state_shapes.items()})
    dz = rng.standard_normal(blocks[0].out_shape)
    grads = []
    for block in blocks:
        work = block.forward(dict(env))
        work[grad(kind.out_name)] = dz
        grads.append(block.backward(work))
    assert len(blocks[0].backward_runs) < len(blocks[1].backward_runs)
    for t in ("x", "g", "beta"):
        np.testing.assert_allclose(grads[0][grad(t)], grads[1][grad(t)], rtol=1e-10, atol=1e-12, err_msg=t)
