"""A product that is one GEMM per block of a stack runs on strided views, with no copy in or out,
and gives what np.einsum gives; where a layout differs from the one planned, the plain road runs."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notation import Equation, counting
from notation.lowering import stacked
from notation.mathematics.reference import evaluate_run


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Small shapes, so a block of any size is worth its call here (MIN_BLOCK_FLOPS is for speed)."""
    monkeypatch.setattr(stacked, "MIN_BLOCK_FLOPS", 0)


def test_blocks_too_small_to_pay_for_their_calls_are_not_stacked(monkeypatch):
    monkeypatch.setattr(stacked, "MIN_BLOCK_FLOPS", 8192)
    assert stacked.plan("bufcr,fcvg->buvgr", dict(b=2, u=3, f=2, c=5, r=6, v=3, g=2)) is None
    assert stacked.plan("bufcr,fcvg->buvgr", dict(b=2, u=3, f=2, c=14, r=32, v=9, g=2)) is not None


# the fourier chain's steps, each with the blocks it should take
CHAIN = [
    ("xh[b,u,f,c,r] = x[b,a,c,r] * fr[a,u,f]", {"x": (3, 5, 4, 6), "fr": (5, 7, 2)}, "b", 3),
    ("xs[b,u,v,g,r] = xh[b,u,f,c,r] * fc[f,c,v,g]", {"xh": (3, 7, 2, 4, 6), "fc": (2, 4, 3, 2)}, "bu", 21),
    ("zs[b,u,v,g,k] = xs[b,u,v,e,r] * wb[u,v,e,r,g,k]", {"xs": (3, 7, 3, 2, 6), "wb": (7, 3, 2, 6, 2, 5)}, "uv", 21),
    ("z[b,i,j,k] = zj[b,u,e,j,k] * gr[u,e,i]", {"zj": (3, 7, 2, 4, 5), "gr": (7, 2, 6)}, "b", 3),
]


@pytest.mark.parametrize("source,shapes,stack,blocks", CHAIN, ids=[c[0] for c in CHAIN])
def test_each_step_of_the_chain_is_one_gemm_per_block_with_no_copy(source, shapes, stack, blocks):
    run = Equation(source).compile(shapes=shapes)
    step = run.describe()["products"][0]["strategy"]
    assert step["name"] == "stacked GEMM" and f"over {blocks} blocks ({','.join(stack)})" in step["runs"]
    rng = np.random.default_rng(1)
    arrays = {n: rng.standard_normal(s) for n, s in shapes.items()}
    out = np.empty(run.result_shape)
    with counting() as counts:
        result = run(out=out, **arrays)
    assert result is out and counts.runs[run]["stacked GEMM"] > 0
    np.testing.assert_allclose(out, evaluate_run(run, **arrays), rtol=1e-12, atol=1e-12)


def test_a_layout_other_than_planned_takes_the_plain_road():
    """Operands the plan did not expect (a transposed view) give the same result, by the plain path."""
    run = Equation("xs[b,u,v,g,r] = xh[b,u,f,c,r] * fc[f,c,v,g]").compile(
        shapes={"xh": (3, 4, 2, 5, 6), "fc": (2, 5, 3, 2)})
    rng = np.random.default_rng(2)
    xh = np.asfortranarray(rng.standard_normal((3, 4, 2, 5, 6)))
    fc = rng.standard_normal((2, 5, 3, 2))
    block = run._rhs.products[0].strategy.block
    assert block(xh, fc, np.empty(run.result_shape)) is None
    np.testing.assert_allclose(run(xh=xh, fc=fc), np.einsum("bufcr,fcvg->buvgr", xh, fc), rtol=1e-12)


@pytest.mark.parametrize("einsum", [
    "ab,cd->abcd",  # an outer product: nothing summed
    "acb,cd->dba",  # no unit stride for a block in the result
    "abc,bac->",  # nothing left
])
def test_no_stack_is_planned_where_there_is_no_gemm_worth_the_calls(einsum):
    assert stacked.plan(einsum, dict.fromkeys("abcd", 3)) is None


def test_the_fewest_blocks_win():
    plan = stacked.plan("bufcr,fcvg->buvgr", dict(b=8, u=16, f=2, c=14, r=32, v=9, g=2))
    assert (plan.stack, plan.left, plan.con, plan.right, plan.blocks) == ("bu", "r", "fc", "vg", 128)


letters = st.permutations("abcde")


@settings(max_examples=60, deadline=None)
@given(order_x=letters, order_y=st.permutations("cdefg"), order_out=st.permutations("abfg"),
       sizes=st.lists(st.integers(1, 5), min_size=7, max_size=7))
def test_any_layout_gives_einsums_result(order_x, order_y, order_out, sizes):
    """x[a,b,c,d,e] * y[c,d,e,f,g] -> out[a,b,f,g] summed over c, d, e, each side in any axis order:
    stacked where a plan exists (the views checked at run time), the plain road otherwise."""
    dims = dict(zip("abcdefg", sizes))
    x, y, out = "".join(order_x), "".join(order_y), "".join(order_out)
    rng = np.random.default_rng(3)
    xs = rng.standard_normal([dims[i] for i in x])
    ys = rng.standard_normal([dims[i] for i in y])
    want = np.einsum(f"{x},{y}->{out}", xs, ys)
    block = stacked.plan(f"{x},{y}->{out}", dims)
    if block is not None:
        got = np.empty(want.shape)
        assert block(xs, ys, got) is got
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    src = f"z[{','.join(out)}] = x[{','.join(x)}] * y[{','.join(y)}]"
    run = Equation(src).compile(shapes={"x": xs.shape, "y": ys.shape})
    np.testing.assert_allclose(run(x=xs, y=ys), want, rtol=1e-10, atol=1e-10)


def test_the_same_buffers_again_reuse_their_views_and_new_ones_get_their_own():
    """A run's buffers come back every step, so their block views are made once; other arrays are
    viewed afresh (a product written into the wrong array would fail here)."""
    dims = dict(b=4, u=3, f=2, c=14, r=32, v=9, g=2)
    block = stacked.plan("bufcr,fcvg->buvgr", dims)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 3, 2, 14, 32))
    y = rng.standard_normal((2, 14, 9, 2))
    out, other = np.empty((4, 3, 9, 2, 32)), np.empty((4, 3, 9, 2, 32))
    first = block.views(x, y, out)
    assert all(a is b for a, b in zip(block.views(x, y, out), first))  # made once
    for dest in (other, out):
        x[...] = rng.standard_normal(x.shape)
        assert block(x, y, dest) is dest
        np.testing.assert_allclose(dest, np.einsum("bufcr,fcvg->buvgr", x, y), rtol=1e-10, atol=1e-10)


ATTENTION = [  # attention's products over (b, h) blocks of 16x16: whether BLAS would read a right operand
    # column by column (then its blocks are copied the other way first)
    ("s[b,h,n,m] = q[b,n,h,e] * k[b,m,h,e]", {"q": (3, 16, 2, 16), "k": (3, 16, 2, 16)}, True),
    ("dp[b,h,n,m] = do[b,n,h,e] * v[b,m,h,e]", {"do": (3, 16, 2, 16), "v": (3, 16, 2, 16)}, True),
    ("o[b,n,h,e] = p[b,h,n,m] * v[b,m,h,e]", {"p": (3, 2, 16, 16), "v": (3, 16, 2, 16)}, False),
    ("dv[b,m,h,e] = do[b,n,h,e] * p[b,h,n,m]", {"do": (3, 16, 2, 16), "p": (3, 2, 16, 16)}, False),
    ("dk[b,m,h,e] = ds[b,h,n,m] * q[b,n,h,e]", {"ds": (3, 2, 16, 16), "q": (3, 16, 2, 16)}, False),
    # two rows a block: each entry of k copied would serve two multiply-adds, less than the copy costs
    ("s[b,h,n,m] = q[b,n,h,e] * k[b,m,h,e]", {"q": (3, 2, 2, 16), "k": (3, 16, 2, 16)}, False),
]


@pytest.mark.parametrize("source,shapes,turned", ATTENTION, ids=[f"{a[0]} {a[1]}" for a in ATTENTION])
def test_small_blocks_read_column_by_column_are_copied_the_other_way_first(source, shapes, turned):
    run = Equation(source).compile(shapes=shapes)
    assert run.strategies == ("stacked GEMM",)
    assert run._rhs.products[0].strategy.block.turned == turned
    assert ("copied row by row first" in run.plan()) == turned
    rng = np.random.default_rng(3)
    arrays = {n: rng.standard_normal(s) for n, s in shapes.items()}
    for _ in range(2):  # the second run into the buffer kept from the first
        np.testing.assert_allclose(run(**arrays), evaluate_run(run, **arrays), rtol=1e-12, atol=1e-12)
