"""notation.runtime.pool and fused.c's pool: a split product or C loop shared between the caller and the
crew's helpers without the GIL gives the bits of numpy's own calls, or is left to numpy."""
import numpy as np
import pytest

from notation.runtime import fused, parallel, pool

from conftest import needs_the_library


@pytest.fixture(autouse=True)
def library():
    needs_the_library()
    if pool._bound() is None:
        pytest.skip("numpy's BLAS is not the scipy-openblas its wheels carry: products stay numpy's")


def pieces_by_numpy(a, b, add, cut):
    """What parallel.matmul's crew computes: np.matmul on each fixed piece, then the addend."""
    out = np.empty(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1]), a.dtype)
    pieces = [(a, b, out, add)] if cut == "stack" else parallel._pieces(cut, a, b, out, add)[0]
    for x, y, o, d in pieces:
        np.matmul(x, y, out=o)
        if d is not None:
            np.add(o, d, out=o)
    return out


def operand(rng, shape, dtype, transposed):
    """A random matrix (or stack) of `shape`, stored transposed (a view BLAS reads with its trans flag) or not."""
    if not transposed:
        return rng.standard_normal(shape).astype(dtype)
    stored = rng.standard_normal(shape[:-2] + shape[-2:][::-1]).astype(dtype)
    return np.swapaxes(stored, -1, -2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cut, m, k, n, stack", [
    ("rows", 1024, 64, 256, ()),       # a transformer's dense layer: cut along the rows
    ("columns", 64, 256, 1024, ()),    # a few rows against a wide matrix: cut along the columns
    ("rows", 301, 7, 5, ()),           # an odd number of rows, small sizes
    ("stack", 16, 16, 16, (64, 4)),    # attention's scores: each (batch, head) matrix whole
    ("stack", 64, 16, 64, (64,)),      # token mixing: a stack of (b) blocks
])
@pytest.mark.parametrize("transposed", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("with_addend", [False, True])
def test_a_product_on_the_pool_gives_numpys_bits(dtype, cut, m, k, n, stack, transposed, with_addend):
    rng = np.random.default_rng(0)
    a = operand(rng, stack + (m, k), dtype, transposed[0])
    b = operand(rng, stack + (k, n), dtype, transposed[1])
    add = rng.standard_normal(n).astype(dtype) if with_addend else None
    out = np.empty(stack + (m, n), dtype)
    assert pool.products(a, b, out, add, cut, 4)
    np.testing.assert_array_equal(out.view(np.uint8), pieces_by_numpy(a, b, add, cut).view(np.uint8))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, k, n, stack, broadcast", [
    (64, 16, 64, (64,), True),      # token mixing z[b,n,k] = x[b,m,k] w[m,n]: each block's result F-ordered
    (64, 64, 16, (64,), True),
    (16, 16, 16, (8, 4), False),
    (33, 7, 5, (3,), False),
])
@pytest.mark.parametrize("transposed", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("with_addend", [False, True])
def test_a_stack_whose_results_are_f_ordered_gives_numpys_bits(dtype, m, k, n, stack, broadcast, transposed,
                                                             with_addend):
    """numpy multiplies such a stack as o^T = b^T a^T, each operand read as it lies: so does the pool."""
    rng = np.random.default_rng(2)
    a = operand(rng, stack + (m, k), dtype, transposed[0])
    b = operand(rng, ((k, n) if broadcast else stack + (k, n)), dtype, transposed[1])
    add = rng.standard_normal((m, 1)).astype(dtype) if with_addend else None
    out, numpys = (np.empty(stack + (n, m), dtype).swapaxes(-1, -2) for _ in range(2))
    assert pool.products(a, b, out, add, "stack", 4)
    np.matmul(a, b, out=numpys)
    if add is not None:
        np.add(numpys, add, out=numpys)
    np.testing.assert_array_equal(np.ascontiguousarray(out).view(np.uint8), np.ascontiguousarray(numpys).view(np.uint8))


def test_a_stack_against_one_matrix_is_each_matrix_of_the_stack_times_it():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((7, 30, 40)), rng.standard_normal((40, 50))
    out = np.empty((7, 30, 50))
    assert pool.products(a, b, out, None, "stack", 4)
    np.testing.assert_array_equal(out, np.matmul(a, b))


def test_a_matrix_times_its_own_transpose_is_left_to_numpy():
    """np.matmul takes syrk there (and copies a triangle): other bits, so the pool does not pretend."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 16, 32)).astype(np.float32)
    out = np.empty((8, 16, 16), np.float32)
    assert not pool.products(x, np.swapaxes(x, -1, -2), out, None, "stack", 4)
    y = rng.standard_normal((8, 16, 32)).astype(np.float32)  # the same layout, another matrix: gemm
    assert pool.products(x, np.swapaxes(y, -1, -2), out, None, "stack", 4)
    np.testing.assert_array_equal(out, np.matmul(x, np.swapaxes(y, -1, -2)))


@pytest.mark.parametrize("layout", ["a vector", "a strided operand", "another dtype", "an overlapping result"])
def test_what_numpy_would_not_hand_whole_to_gemm_is_left_to_numpy(layout):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((64, 32)), rng.standard_normal((32, 48))
    out = np.empty((64, 48))
    if layout == "a vector":
        a, out = a[:, :1].T.copy(), np.empty((1, 48))
    elif layout == "a strided operand":
        a = rng.standard_normal((64, 64))[:, ::2]
    elif layout == "another dtype":
        b = b.astype(np.float32)
    else:
        big = rng.standard_normal((64, 64))
        a, out = big[:, :32], big[:, 16:]
    assert not pool.products(a, b, out, None, "rows", 2)


def test_a_floating_point_error_is_left_to_numpys_errstate():
    a = np.full((400, 400), 1e30, dtype=np.float32)
    out = np.empty_like(a)
    assert not pool.products(a, a, out, None, "rows", 2)  # overflowed: numpy makes it again, and warns or raises
    with np.errstate(over="raise"), pytest.raises(FloatingPointError):
        parallel.matmul(a, a)


def test_a_blas_other_than_numpys_wheels_leaves_every_product_to_numpy(monkeypatch):
    monkeypatch.setitem(np.__config__.CONFIG["Build Dependencies"], "blas", {"name": "openblas"})
    assert pool._numpy_gemm() is None


@pytest.mark.parametrize("parts, share", [(1, 0), (4, 1), (7, 1)])
def test_a_c_loop_gives_the_same_bits_in_any_number_of_spans(parts, share):
    """fused.c's chunked sum over chunks of rows, whole or in spans taken by whichever thread is free."""
    rng = np.random.default_rng(4)
    rows, n, per = 64 * 28 * 28, 32, 1024
    x, y = (rng.standard_normal((rows, n)).astype(np.float32) for _ in range(2))
    chunks = -(-rows // per)
    partial, whole = np.zeros((chunks, n), np.float32), np.zeros((chunks, n), np.float32)
    fused.colsum_arguments(per, rows, n, [x, y], whole)(chunks, 1, 0)
    if share:
        parallel._setup()  # the crew's helpers, to take spans
    fused.colsum_arguments(per, rows, n, [x, y], partial)(chunks, parts, share)
    np.testing.assert_array_equal(partial, whole)
    np.testing.assert_allclose(whole.sum(axis=0), (x * y).sum(axis=0), rtol=1e-3, atol=1e-2)


def test_a_thin_product_cut_along_its_sum_gives_the_bits_of_numpys_two_halves():
    """A thin result (a 3x3 kernel's gradient: 9 x 50,176 @ 50,176 x 32): the second half of the sum made
    apart, in `part`, and added after, as the crew's two halves are."""
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((9, 5000)).astype(np.float32), rng.standard_normal((5000, 32)).astype(np.float32)
    out, part = np.empty((9, 32), np.float32), np.empty((9, 32), np.float32)
    assert not pool.products(a, b, out, None, "sum", 2)  # nowhere to make the second half
    assert pool.products(a, b, out, None, "sum", 2, part)
    want = np.matmul(a[:, :2500], b[:2500]) + np.matmul(a[:, 2500:], b[2500:])
    np.testing.assert_array_equal(out + part, want)
    np.testing.assert_array_equal(parallel.matmul(a, b), want)
