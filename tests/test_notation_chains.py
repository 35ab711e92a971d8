"""A right side whose terms sum nothing runs in one pass (notation/lowering/chains.py, fused.c's CHAIN)
where that is modelled cheaper than its terms' own roads: numpy's bits, the loop interpreter's values,
on one thread or two."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notation import Equation
from notation.lowering import chains, cost
from notation.mathematics.reference import evaluate_run
from notation.runtime import parallel

from conftest import needs_the_library

BN = (64, 28, 28, 32)  # batch norm's tensors after resnet's stem at batch 64
K = (32,)
TOKENS = (8, 64, 96)  # a layer norm over tokens: [b, n, d]
CHOICES = [  # equation, shapes, whether the chain runs it
    # batch norm's forward and derived backward (layers.yaml): a per-channel vector over b,i,j,k
    ("xc[b,i,j,k] = x[b,i,j,k] - mu[k]", {"x": BN, "mu": K}, True),
    ("z[b,i,j,k] = xh[b,i,j,k] * g[k] + beta[k]", {"xh": BN, "g": K, "beta": K}, True),
    ("dxc[b,i,j,k] = dv[k] * twice(xc[b,i,j,k]) / 50176 + dxh[b,i,j,k] * r[k]",
     {"dv": K, "xc": BN, "dxh": BN, "r": K}, True),
    ("dx[b,i,j,k] = dmu[k] / 50176 + dxc[b,i,j,k]", {"dmu": K, "dxc": BN}, True),
    # an activation's derivative: the function made in the same pass, not written first
    ("dz[b,i] = da[b,i] * drelu(z[b,i])", {"da": (64, 25088), "z": (64, 25088)}, True),
    # a layer norm over tokens: per-token and per-feature vectors, a transposed operand
    ("xc[b,n,d] = x[b,n,d] - mu[b,n]", {"x": TOKENS, "mu": TOKENS[:2]}, True),
    ("z[b,n,d] = xh[n,b,d] * g[d] + beta[d] + x[b,n,d]", {"xh": (64, 8, 96), "g": (96,), "beta": (96,),
                                                          "x": TOKENS}, True),
    # fused.c's own functions, NaN, -0.0 and infinities included (the bits test's operands)
    ("y[b,i] = relu(x[b,i]) * g[i] + square(t[b,i]) - x[b,i]", {"x": (64, 4096), "g": (4096,), "t": (64, 4096)},
     True),
    # functions on tanh (GELU's tanh form and its derivative, tanh, sigmoid): numpy's passes on a block in
    # cache, numpy's own tanh loop in the middle; one function alone is worth the pass too
    ("a[b,i] = gelu(z[b,i])", {"z": (64, 2048)}, True),
    ("dz[b,i] = da[b,i] * dgelu(z[b,i])", {"da": (64, 2048), "z": (64, 2048)}, True),
    ("y[b,i] = tanh(x[b,i]) + dtanh(t[b,i]) * sigmoid(x[b,i]) - dsigmoid(t[b,i])",
     {"x": (3, 1031), "t": (3, 1031)}, True),
    # a function fused.c does not have is evaluated by numpy first, the rest in the pass
    ("y[b,i] = x[b,i] * exp(t[b,i]) + x[b,i]", {"x": (64, 4096), "t": (64, 4096)}, True),
    # a small result: three numpy calls against one (a running mean)
    ("rm[k] = 0.9 * rm0[k] + 0.1 * mu[k]", {"rm0": K, "mu": K}, True),
    # one product of plain views is one numpy pass already
    ("xh[b,i,j,k] = xc[b,i,j,k] * r[k]", {"xc": BN, "r": K}, False),
    # a sum over an index, a scatter, a max: not elementwise
    ("dg[k] = dz[b,i,j,k] * xh[b,i,j,k]", {"dz": BN, "xh": BN}, False),
    ("dx[b, 2*i+p, 2*j+q, k] = dz[b,i,j,k] * m[b,i,j,k,p,q] + dz[b,i,j,k]",
     {"dz": (8, 14, 14, 32), "m": (8, 14, 14, 32, 2, 2)}, False),
]


@pytest.mark.parametrize("source,shapes,chained", CHOICES, ids=[c[0] for c in CHOICES])
def test_an_elementwise_right_side_runs_in_one_pass_where_that_is_cheaper(source, shapes, chained):
    run = Equation(source).compile(shapes=shapes)
    chain = run._rhs.chain
    assert (chain is not None) == chained
    if chained:
        figures = chain.alternatives
        assert figures["fused elementwise chain"] * 1.25 < figures["term by term"]
        assert "fused elementwise chain" in run.plan()


def _operands(shapes, dtype, seed):
    """Random operands with the awkward values in them: NaN, -0.0, exact zeros (drelu's 1/2), infinities."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in shapes.items():
        a = rng.standard_normal(shape).astype(dtype)
        flat = a.reshape(-1)
        flat[::97] = 0.0
        flat[5::89] = -0.0
        flat[7::1009] = np.nan
        flat[11::1201] = np.inf
        arrays[name] = a
    return arrays


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("source,shapes", [c[:2] for c in CHOICES if c[2]], ids=[c[0] for c in CHOICES if c[2]])
def test_the_chain_gives_the_bits_of_numpys_passes(source, shapes, dtype, monkeypatch):
    needs_the_library()
    run = Equation(source).compile(shapes=shapes)
    arrays = _operands(shapes, dtype, 7)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: numpy's warnings, the loop's silence
        fused = run(**arrays)
        monkeypatch.setenv("NOTATION_FUSED", "0")  # every product on its own road, in numpy's passes
        passes = run(**arrays)
    assert fused.dtype == dtype
    assert np.array_equal(fused.view(f"u{fused.itemsize}"), passes.view(f"u{passes.itemsize}"))


def test_the_chain_gives_the_same_bits_on_one_thread_or_two(monkeypatch):
    needs_the_library()
    source, shapes, _ = CHOICES[2]
    run = Equation(source).compile(shapes=shapes)
    arrays = _operands(shapes, np.float32, 3)
    outs = []
    for workers in (1, 2):
        monkeypatch.setattr(parallel, "WORKERS", workers)
        outs.append(run(**arrays).view(np.uint32))
    assert np.array_equal(*outs)


@pytest.mark.parametrize("shape", [(64, 16, 256), (64, 1568), (7919 * 3,), (64, 3, 3)])
def test_one_long_row_is_cut_in_rows_the_pool_can_share_to_the_same_bits(shape, monkeypatch):
    """An activation over a contiguous tensor is one row to the loop: it is cut in rows of about
    chains.ROW entries (where its length has such a divisor) for the two threads to share, and each
    entry comes out as it does from the uncut row, on one thread or two."""
    needs_the_library()
    n = int(np.prod(shape))
    rows = chains.layout(list(shape), [list(np.cumprod((1,) + shape[:0:-1])[::-1])] * 2)[0]
    assert (rows > 1) == (n >= 2 * chains.ROW)
    run = Equation(f"dz[{_letters(shape)}] = da[{_letters(shape)}] * dgelu(z[{_letters(shape)}])").compile(
        shapes={"da": shape, "z": shape})
    arrays = _operands({"da": shape, "z": shape}, np.float32, 5)
    outs = [run(**arrays).view(np.uint32)]
    monkeypatch.setattr(parallel, "WORKERS", 1)
    outs.append(run(**arrays).view(np.uint32))
    monkeypatch.setattr(chains, "ROW", 1 << 40)  # never cut (compiled afresh: the loop's rows are planned once)
    run = Equation(f"dz[{_letters(shape)}] = da[{_letters(shape)}] * dgelu(z[{_letters(shape)}])").compile(
        shapes={"da": shape, "z": shape})
    outs.append(run(**arrays).view(np.uint32))
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


def test_a_long_row_read_with_a_stride_is_cut_to_the_bits_of_numpys_passes(monkeypatch):
    """An operand that is every other entry of its memory merges into the same one long row: cut, the
    loop walks it with its stride, and each entry is numpy's."""
    needs_the_library()
    shape = (64, 4096)
    run = Equation("dz[b,i] = da[b,i] * dgelu(z[b,i])").compile(shapes={"da": shape, "z": shape})
    rng = np.random.default_rng(6)
    da, z = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(2 * 64 * 4096).astype(np.float32)
    z = z[::2].reshape(shape)  # one stride of 2 entries over all of it
    assert chains.layout(list(shape), [[4096, 1], [4096, 1], [8192, 2]])[0] > 1
    loop = run(da=da, z=z).copy()
    monkeypatch.setenv("NOTATION_FUSED", "0")
    np.testing.assert_array_equal(loop.view(np.uint32), run(da=da, z=z).view(np.uint32))


def _letters(shape) -> str:
    return ",".join("bijk"[:len(shape)])


CHEAP_LOOP = cost.Rates(gemm=1e11, bandwidth=1e9, einsum=1e9, call=1e-9, block=1e-9)  # the chain on tiny shapes


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.integers(0, 2**16), st.integers(1, 4),
       st.sampled_from(["id", "square", "twice", "drelu", "relu", "tanh", "exp", "gelu", "dgelu", "sigmoid"]))
def test_a_chain_agrees_with_the_loop_interpreter(sizes, seed, terms, func):
    """Any shape, layout and broadcast: each term a product of one or two factors, the first a
    function, over a random subset and order of the result's indices."""
    rng = np.random.default_rng(seed)
    letters = "bijk"[:len(sizes)]
    shapes, parts = {}, []
    for t in range(terms):
        factors = []
        for f in range(rng.integers(1, 3)):  # at most 8 operands: fused.CHAIN_OPS
            every = t == 0 and f == 0  # the result's every index on the right
            idx = "".join(rng.permutation(list(letters))[:len(letters) if every else rng.integers(1, len(letters) + 1)])
            name = f"a{t}{f}"
            shapes[name] = tuple(sizes[letters.index(i)] for i in idx)
            ref = f"{name}[{','.join(idx)}]"
            factors.append(f"{func}({ref})" if f == 0 and func != "id" else ref)
        parts.append(" * ".join(factors) + (f" * {t + 2}" if t % 2 else ""))
    source = f"y[{','.join(letters)}] = " + " + ".join(parts)
    cost.use(CHEAP_LOOP)
    try:
        run = Equation(source).compile(shapes=shapes)
    finally:
        cost.use(None)
    if run._rhs.chain is None:  # one product of plain views: nothing to fuse
        assert len(parts) == 1
        return
    arrays = {n: rng.standard_normal(s) for n, s in shapes.items()}
    np.testing.assert_allclose(run(**arrays), evaluate_run(run, **arrays), rtol=1e-12, atol=1e-12)


def test_a_chain_writes_a_strided_out_to_the_same_bits(monkeypatch):
    """out= a strided view (every other row of a larger array): its rows gathered, made and written back."""
    needs_the_library()
    source, shapes, _ = CHOICES[1]
    run = Equation(source).compile(shapes=shapes)
    arrays = _operands(shapes, np.float32, 5)
    big = np.full((2 * BN[0],) + BN[1:], 7.0, np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        out = run(out=big[::2], **arrays)
        monkeypatch.setenv("NOTATION_FUSED", "0")
        want = run(**arrays)
    assert np.array_equal(out.view(np.uint32), want.view(np.uint32)) and (big[1::2] == 7.0).all()
