"""notation: every construct, compiled to views + einsum, equals the literal loop-by-loop reference."""

from typing import NamedTuple

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from notation import Equation
from notation.mathematics.reference import evaluate_run

TOL = dict(rtol=1e-10, atol=1e-10)
FEW = settings(max_examples=25, deadline=None)
SOME = settings(max_examples=50, deadline=None)

seeds = st.integers(0, 2**32 - 1)
strides = st.integers(1, 3)
kernels = st.integers(1, 4)
channels = st.integers(1, 3)
batches = st.integers(1, 3)
sizes = st.integers(1, 4)

CONV = "z[b,i,j,k] = x[b, s1*i+p, s2*j+q, r] * w[P-p, Q-q, r, k]"                    # (15)
CONV_BIAS = CONV + " + bias[k]"                                                        # (15) + (2)
EQ16 = "dx[c,t,u,v] = dz[c,i,j,k] * w[P+s1*i-t, Q+s2*j-u, v, k]"                      # (16) as written
EQ16_SCATTER = "dx[c, s1*i+p, s2*j+q, v] = dz[c,i,j,k] * w[P-p, Q-q, v, k]"           # (16), t = s1*i + p
EQ17 = "dw[m,n,u,v] = dz[b,i,j,v] * x[b, s1*i+P-m, s2*j+Q-n, u]"                      # (17) as written
EQ17_WINDOW = "dw[P-p, Q-q, u, v] = dz[b,i,j,v] * x[b, s1*i+p, s2*j+q, u]"            # (17), m = P - p
POOL = "z[b,i,j,k] = max[p,q] x[b, s1*i+p, s2*j+q, k]"                                # (18)
UNPOOL = "dx[b, s1*i+p, s2*j+q, k] = dz[b,i,j,k] * m[b,i,j,k,p,q]"                    # (19)


class Conv(NamedTuple):
    """A valid convolution's sizes: batch, image, channels in/out, strides, kernel, output."""

    batch: int
    height: int
    width: int
    cin: int
    cout: int
    s1: int
    s2: int
    kh: int
    kw: int
    rows: int
    cols: int

    @property
    def strides(self):
        return {"s1": self.s1, "s2": self.s2}


ROWS = st.integers(1, 3)


@st.composite
def convs(draw, rows=ROWS):
    """Image sizes that fit `rows` windows, plus up to stride-1 leftover entries a window never reaches."""
    s1, s2, kh, kw = draw(strides), draw(strides), draw(kernels), draw(kernels)
    i, j = draw(rows), draw(rows)
    height = s1 * (i - 1) + kh + draw(st.integers(0, s1 - 1))
    width = s2 * (j - 1) + kw + draw(st.integers(0, s2 - 1))
    return Conv(draw(batches), height, width, draw(channels), draw(channels), s1, s2, kh, kw, i, j)


def compile_eq(source, shapes, **symbols):
    return Equation(source).compile(shapes=shapes, symbols=symbols)


def normal_operands(run, seed):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape) for name, shape in run.shapes.items()}


def assert_matches_reference(run, **arrays):
    got = run(**arrays)
    assert_allclose(got, evaluate_run(run, **arrays), **TOL)
    return got


def check(source, shapes, seed, **symbols):
    """Compile, run on random normal operands, compare with the reference; the result and operands."""
    run = compile_eq(source, shapes, **symbols)
    arrays = normal_operands(run, seed)
    return assert_matches_reference(run, **arrays), arrays


def distinct_values(shape, seed):
    """A random permutation of 0..n-1: no two entries tie, so every maximum is unique."""
    return np.random.default_rng(seed).permutation(int(np.prod(shape))).reshape(shape).astype(float)


def with_exact_zeros(shape, seed):
    return np.random.default_rng(seed).integers(-2, 3, size=shape).astype(float) / 2


# -- plain indices, scalar factors, bias ----------------------------------------------------

@SOME
@given(batches, sizes, sizes, seeds)
def test_dense_layer_eq12_matches_reference_and_matmul(b, n_in, n_out, seed):
    z, ops = check("z[b,j] = x[b,i] * w[i,j]", {"x": (b, n_in), "w": (n_in, n_out)}, seed)
    assert_allclose(z, ops["x"] @ ops["w"], **TOL)


@SOME
@given(batches, sizes, sizes, sizes, seeds)
def test_three_operands_contract_into_a_transposed_result(b, n, m, k, seed):
    z, ops = check("z[k,b] = x[b,i] * w[i,j] * v[j,k]", {"x": (b, n), "w": (n, m), "v": (m, k)}, seed)
    assert_allclose(z, (ops["x"] @ ops["w"] @ ops["v"]).T, **TOL)


@SOME
@given(batches, sizes, sizes, st.floats(-3, 3), seeds)
def test_numbers_and_named_symbols_scale_the_product(b, n_in, n_out, eta, seed):
    run = compile_eq("z[b,j] = -2 * eta * x[b,i] * w[i,j] / 3", {"x": (b, n_in), "w": (n_in, n_out)}, eta=eta)
    ops = normal_operands(run, seed)
    z = assert_matches_reference(run, **ops)
    assert_allclose(z, -2 * eta / 3 * (ops["x"] @ ops["w"]), **TOL)


@SOME
@given(batches, sizes, seeds)
def test_upper_case_divisor_is_the_batch_count(b, n, seed):
    J, ops = check("J = -1/B * y[b,i] * x[b,i]", {"y": (b, n), "x": (b, n)}, seed)
    assert_allclose(J, -(ops["y"] * ops["x"]).sum() / b, **TOL)


@SOME
@given(batches, sizes, sizes, seeds)
def test_bias_term_is_added_once_per_output(b, n_in, n_out, seed):
    z, ops = check("z[b,j] = x[b,i] * w[i,j] + bias[j]", {"x": (b, n_in), "w": (n_in, n_out), "bias": (n_out,)},
                   seed)
    assert_allclose(z, ops["x"] @ ops["w"] + ops["bias"], **TOL)


@SOME
@given(batches, sizes, seeds)
def test_difference_of_products_and_a_constant_term(b, n, seed):
    z, ops = check("z[b,i] = x[b,i] - (y[b,i] - 2) * x[b,i] + 3", {"x": (b, n), "y": (b, n)}, seed)
    assert_allclose(z, ops["x"] - (ops["y"] - 2) * ops["x"] + 3, **TOL)


# -- gather windows: eq. (15) ---------------------------------------------------------------

@SOME
@given(convs(), seeds)
@example(Conv(2, 5, 5, 2, 3, 1, 1, 3, 3, 3, 3), 0)      # overlapping windows
@example(Conv(2, 9, 9, 2, 3, 3, 3, 2, 2, 3, 3), 0)      # gaps between windows, a leftover entry
def test_convolution_eq15_with_bias_matches_reference(g, seed):
    shapes = {"x": (g.batch, g.height, g.width, g.cin), "w": (g.kh, g.kw, g.cin, g.cout), "bias": (g.cout,)}
    z, _ = check(CONV_BIAS, shapes, seed, **g.strides)
    assert z.shape == (g.batch, g.rows, g.cols, g.cout)


@FEW
@given(convs(), seeds)
def test_unit_stride_window_written_without_a_stride_is_the_same_convolution(g, seed):
    shapes = {"x": (g.batch, g.height, g.width, g.cin), "w": (g.kh, g.kw, g.cin, g.cout)}
    plain, ops = check("z[b,i,j,k] = x[b, i+p, j+q, r] * w[P-p, Q-q, r, k]", shapes, seed)
    assert_allclose(plain, compile_eq(CONV, shapes, s1=1, s2=1)(**ops), **TOL)


@SOME
@given(st.integers(1, 3), st.integers(0, 2), kernels, st.integers(1, 3), channels, channels, seeds)
def test_integer_coefficient_and_offset_window(c, d, kernel, rows, cin, cout, seed):
    length = c * (rows - 1) + kernel + d
    z, _ = check(f"z[b,i,k] = x[b, {c}*i + p + {d}, r] * w[p,r,k]",
                 {"x": (2, length, cin), "w": (kernel, cin, cout)}, seed)
    assert z.shape == (2, rows, cout)


@SOME
@given(st.integers(2, 6), kernels, seeds)
def test_index_inside_windows_on_both_sides_matches_reference(length, kernel, seed):
    check("z[b, i + p + 1] = x[b, i + P - p] * w[p]", {"x": (2, length + kernel - 1), "w": (kernel,)}, seed)


@SOME
@given(kernels, channels, seeds)
def test_flip_on_the_right_reverses_the_axis(kernel, n, seed):
    z, ops = check("z[p,r] = w[P-p, r]", {"w": (kernel, n)}, seed)
    assert_array_equal(z, ops["w"][::-1])


@SOME
@given(kernels, channels, seeds)
def test_flip_on_the_left_reverses_the_axis(kernel, n, seed):
    z, ops = check("z[P-p, r] = w[p,r]", {"w": (kernel, n)}, seed)
    assert_array_equal(z, ops["w"][::-1])


def test_operands_may_be_strided_views():
    run = compile_eq(CONV, {"x": (2, 7, 7, 3), "w": (3, 3, 3, 2)}, s1=2, s2=2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 14, 7, 6))[:, ::2, :, ::2]
    w = rng.standard_normal((2, 3, 3, 3)).transpose(1, 2, 3, 0)
    assert_allclose(run(x=x, w=w), run(x=x.copy(), w=w.copy()), **TOL)


# -- scatter: eq. (16) as windows on the left -----------------------------------------------

@FEW
@given(convs(rows=st.integers(1, 2)), seeds)
@example(Conv(2, 5, 5, 2, 2, 1, 1, 3, 3, 3, 3), 0)      # stride < kernel: windows overlap
@example(Conv(2, 8, 7, 2, 2, 3, 3, 2, 1, 3, 3), 0)      # stride > kernel: gaps stay zero
def test_scatter_eq16_matches_reference(g, seed):
    shapes = {"dz": (g.batch, g.rows, g.cols, g.cout), "w": (g.kh, g.kw, g.cin, g.cout),
              "dx": (g.batch, g.height, g.width, g.cin)}
    check(EQ16_SCATTER, shapes, seed, **g.strides)


def test_scatter_leaves_gaps_zero():
    run = compile_eq("z[s1*i + p] = x[i] * w[p]", {"x": (3,), "w": (2,)}, s1=3)
    z = run(x=np.array([1.0, 2.0, 3.0]), w=np.array([10.0, 1.0]))
    assert_array_equal(z, [10, 1, 0, 20, 2, 0, 30, 3])


def test_scatter_adds_where_windows_overlap():
    run = compile_eq("z[s1*i + p] = x[i] * w[p]", {"x": (3,), "w": (3,)}, s1=1)
    z = run(x=np.array([1.0, 2.0, 3.0]), w=np.array([1.0, 1.0, 1.0]))
    assert_array_equal(z, [1, 3, 6, 5, 3])


def eq16_operands(g, seed):
    rng = np.random.default_rng(seed)
    return {"dz": rng.standard_normal((g.batch, g.rows, g.cols, g.cout)),
            "w": rng.standard_normal((g.kh, g.kw, g.cin, g.cout))}


@FEW
@given(convs(rows=st.integers(1, 2)), seeds)
@example(Conv(1, 7, 7, 1, 1, 2, 2, 3, 3, 3, 3), 0)
def test_eq16_as_written_equals_scatter_form_and_reference(g, seed):
    shapes = {"dz": (g.batch, g.rows, g.cols, g.cout), "w": (g.kh, g.kw, g.cin, g.cout),
              "dx": (g.batch, g.height, g.width, g.cin)}
    ops = eq16_operands(g, seed)
    written = assert_matches_reference(compile_eq(EQ16, shapes, **g.strides), **ops)
    scatter = assert_matches_reference(compile_eq(EQ16_SCATTER, shapes, **g.strides), **ops)
    assert written.shape == (g.batch, g.height, g.width, g.cin)
    assert_allclose(written, scatter, **TOL)


@FEW
@given(convs(rows=st.integers(1, 2)), seeds)
def test_eq16_without_image_shape_stops_at_the_last_window(g, seed):
    shapes = {"dz": (g.batch, g.rows, g.cols, g.cout), "w": (g.kh, g.kw, g.cin, g.cout)}
    ops = eq16_operands(g, seed)
    bare = assert_matches_reference(compile_eq(EQ16, shapes, **g.strides), **ops)
    reach = (g.s1 * (g.rows - 1) + g.kh, g.s2 * (g.cols - 1) + g.kw)
    assert bare.shape == (g.batch, *reach, g.cin)
    full = compile_eq(EQ16, dict(shapes, dx=(g.batch, g.height, g.width, g.cin)), **g.strides)(**ops)
    assert_allclose(full[:, :reach[0], :reach[1]], bare, **TOL)
    assert not full[:, reach[0]:].any() and not full[:, :, reach[1]:].any()


# -- eq. (17) ---------------------------------------------------------------------------------

@FEW
@given(convs(rows=st.integers(1, 2)), seeds)
def test_eq17_as_written_equals_window_form_and_reference(g, seed):
    shapes = {"dz": (g.batch, g.rows, g.cols, g.cout), "x": (g.batch, g.height, g.width, g.cin),
              "dw": (g.kh, g.kw, g.cin, g.cout)}
    run = compile_eq(EQ17, shapes, **g.strides)
    ops = normal_operands(run, seed)
    written = assert_matches_reference(run, **ops)
    window = assert_matches_reference(compile_eq(EQ17_WINDOW, shapes, **g.strides), **ops)
    assert_allclose(written, window, **TOL)


@FEW
@given(convs(rows=st.integers(1, 2)), seeds)
def test_eq16_and_eq17_are_the_adjoints_of_eq15(g, seed):
    x_shape, w_shape = (g.batch, g.height, g.width, g.cin), (g.kh, g.kw, g.cin, g.cout)
    z_shape = (g.batch, g.rows, g.cols, g.cout)
    rng = np.random.default_rng(seed)
    x, w, dz = (rng.standard_normal(s) for s in (x_shape, w_shape, z_shape))
    z = compile_eq(CONV, {"x": x_shape, "w": w_shape}, **g.strides)(x=x, w=w)
    dx = compile_eq(EQ16, {"dz": z_shape, "w": w_shape, "dx": x_shape}, **g.strides)(dz=dz, w=w)
    dw = compile_eq(EQ17, {"dz": z_shape, "x": x_shape, "dw": w_shape}, **g.strides)(dz=dz, x=x)
    # <dz, conv(x, w)> is linear in x and in w, so its gradients are dx and dw
    assert_allclose(np.vdot(dz, z), np.vdot(dx, x), **TOL)
    assert_allclose(np.vdot(dz, z), np.vdot(dw, w), **TOL)


def test_scatter_folds_loop_over_kernel_offsets_not_image_positions():
    shapes = {"dz": (2, 4, 4, 3), "w": (3, 3, 2, 3), "dx": (2, 9, 9, 2)}
    written = compile_eq(EQ16, shapes, s1=2, s2=2)
    fold = written.describe()["products"][0]["fold"]
    assert fold["loop"] == ["t'", "u'"] and fold["adds"] == 9
    assert [written.extents[i] for i in fold["loop"]] == [3, 3]
    scatter = compile_eq(EQ16_SCATTER, shapes, s1=2, s2=2).describe()
    assert scatter["products"][0]["fold"]["loop"] == ["p", "q"]


def test_scatter_without_overlap_is_one_strided_add():
    shapes = {"dz": (2, 4, 4, 3), "w": (2, 2, 2, 3), "dx": (2, 8, 8, 2)}
    fold = compile_eq(EQ16, shapes, s1=2, s2=2).describe()["products"][0]["fold"]
    assert fold["kind"] == "strided add" and fold["loop"] == []


def test_out_buffer_is_overwritten_not_accumulated():
    shapes = {"dz": (2, 2, 2, 3), "w": (3, 3, 2, 3), "dx": (2, 5, 5, 2)}
    run = compile_eq(EQ16, shapes, s1=2, s2=2)
    ops = normal_operands(run, 0)
    out = np.full(run.result_shape, 7.0)
    assert run(out=out, **ops) is out
    assert_allclose(out, run(**ops), **TOL)


# -- flatten: eq. (10), (11) --------------------------------------------------------------------

@SOME
@given(batches, sizes, sizes, sizes, seeds)
def test_flatten_eq10_is_a_row_major_reshape(b, i, j, k, seed):
    z, ops = check("z[b, i*J*K + j*K + k] = x[b,i,j,k]", {"x": (b, i, j, k)}, seed)
    assert_array_equal(z, ops["x"].reshape(b, -1))


@SOME
@given(batches, sizes, sizes, sizes, seeds)
def test_unflatten_eq11_is_the_inverse_reshape(b, i, j, k, seed):
    z, ops = check("dx[c,i,j,k] = dz[c, i*J*K + j*K + k]", {"dz": (b, i * j * k), "dx": (b, i, j, k)}, seed)
    assert_array_equal(z, ops["dz"].reshape(b, i, j, k))


# -- max pooling: eq. (18), (19) -----------------------------------------------------------------

@SOME
@given(convs(), seeds)
@example(Conv(2, 4, 4, 2, 2, 2, 2, 2, 2, 2, 2), 0)      # the report's 2 x 2, stride 2
def test_max_pool_eq18_values_and_positions_match_reference(g, seed):
    run = compile_eq(POOL, {"x": (g.batch, g.height, g.width, g.cin)}, P=g.kh - 1, Q=g.kw - 1, **g.strides)
    x = distinct_values((g.batch, g.height, g.width, g.cin), seed)
    z, mask = run(x=x, positions=True)
    z_ref, mask_ref = evaluate_run(run, x=x, positions=True)
    assert_array_equal(z, z_ref)
    assert_array_equal(mask, mask_ref)
    assert mask.shape == (g.batch, g.rows, g.cols, g.cin, g.kh, g.kw)
    assert (mask.sum(axis=(-2, -1)) == 1).all()


@FEW
@given(convs(rows=st.integers(1, 2)), seeds)
def test_max_pool_backward_eq19_sends_the_gradient_to_each_maximum(g, seed):
    x_shape = (g.batch, g.height, g.width, g.cin)
    pool = compile_eq(POOL, {"x": x_shape}, P=g.kh - 1, Q=g.kw - 1, **g.strides)
    z, mask = pool(x=distinct_values(x_shape, seed), positions=True)
    unpool = compile_eq(UNPOOL, {"dz": z.shape, "m": mask.shape, "dx": x_shape}, **g.strides)
    dz = np.random.default_rng(seed).standard_normal(z.shape)
    dx = assert_matches_reference(unpool, dz=dz, m=mask)
    assert_allclose(dx.sum(), dz.sum(), **TOL)


def test_max_used_in_two_products_reports_one_mask():
    run = compile_eq("z[b,i] = max[p] x[b, 2*i+p] * (a[i] + c[i])", {"x": (2, 7), "a": (3,), "c": (3,)}, P=1)
    ops = {"x": distinct_values((2, 7), 0), "a": np.ones(3), "c": np.arange(3.0)}
    z, mask = run(positions=True, **ops)
    z_ref, mask_ref = evaluate_run(run, positions=True, **ops)
    assert_allclose(z, z_ref, **TOL)
    assert_array_equal(mask, mask_ref)


# -- functions and Kronecker deltas: eq. (13), (20)-(23) ------------------------------------------

@SOME
@given(batches, sizes, seeds)
def test_relu_eq20(b, n, seed):
    run = compile_eq("a[b,i] = relu(z[b,i])", {"z": (b, n)})
    z = with_exact_zeros((b, n), seed)
    assert_array_equal(assert_matches_reference(run, z=z), np.maximum(z, 0))


@SOME
@given(batches, sizes, seeds)
def test_drelu_eq21_is_one_half_at_exactly_zero(b, n, seed):
    run = compile_eq("d[b,i] = drelu(z[b,i])", {"z": (b, n)})
    z = with_exact_zeros((b, n), seed)
    assert_array_equal(assert_matches_reference(run, z=z), np.select([z > 0, z == 0], [1.0, 0.5], 0.0))


def test_drelu_at_zero_and_negative_zero():
    run = compile_eq("d[i] = drelu(z[i])", {"z": (4,)})
    assert_array_equal(run(z=np.array([-1.0, -0.0, 0.0, 2.0])), [0, 0.5, 0.5, 1])


@SOME
@given(batches, sizes, seeds)
def test_exp_and_log_of_positive_inputs(b, n, seed):
    z = np.random.default_rng(seed).uniform(0.1, 3.0, (b, n))
    run = compile_eq("a[b,i] = exp(z[b,i]) + log(z[b,i])", {"z": (b, n)})
    assert_allclose(assert_matches_reference(run, z=z), np.exp(z) + np.log(z), **TOL)


@SOME
@given(batches, sizes, seeds)
def test_relu_backward_eq21_with_two_deltas(b, n, seed):
    run = compile_eq("dz[c,i] = da[b,j] * delta[b,c] * delta[i,j] * drelu(z[c,i])", {"da": (b, n), "z": (b, n)})
    da, z = np.random.default_rng(seed).standard_normal((b, n)), with_exact_zeros((b, n), seed)
    dz = assert_matches_reference(run, da=da, z=z)
    assert_allclose(dz, da * np.select([z > 0, z == 0], [1.0, 0.5], 0.0), **TOL)


@SOME
@given(batches, sizes, sizes, seeds)
def test_dense_jacobian_eq13_is_a_delta_times_the_weights(b, n_in, n_out, seed):
    jac, ops = check("jac[b,j,c,k] = delta[b,c] * w[k,j]", {"w": (n_in, n_out), "jac": (b, n_out, b, n_in)}, seed)
    assert_array_equal(jac, np.einsum("bc,kj->bjck", np.eye(b), ops["w"]))


@SOME
@given(batches, sizes, sizes, seeds)
def test_dense_backward_eq13_contracts_the_delta(b, n_in, n_out, seed):
    dx, ops = check("dx[c,k] = dz[b,j] * delta[b,c] * w[k,j]", {"dz": (b, n_out), "w": (n_in, n_out)}, seed)
    assert_allclose(dx, ops["dz"] @ ops["w"].T, **TOL)


@SOME
@given(sizes, sizes, seeds)
def test_chained_deltas_over_equal_or_unequal_ranges(n, m, seed):
    z, ops = check("z[i,k] = x[i] * delta[i,j] * delta[j,k] * y[k]", {"x": (n,), "y": (m,)}, seed)
    assert_array_equal(z, np.einsum("i,ij,jk,k->ik", ops["x"], np.eye(n), np.eye(n, m), ops["y"]))


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@SOME
@given(batches, sizes, seeds)
def test_softmax_jacobian_eq23(b, n, seed):
    s = softmax(np.random.default_rng(seed).standard_normal((b, n)))
    run = compile_eq("jac[b,i,c,j] = delta[b,c] * s[b,i] * (delta[i,j] - s[b,j])", {"s": (b, n)})
    jac = assert_matches_reference(run, s=s)
    expected = np.einsum("bc,bij->bicj", np.eye(b), np.einsum("bi,ij->bij", s, np.eye(n)) - s[:, :, None] * s[:, None])
    assert_allclose(jac, expected, **TOL)


@SOME
@given(batches, sizes, seeds)
def test_softmax_backward_eq23_contracts_both_deltas(b, n, seed):
    rng = np.random.default_rng(seed)
    s, da = softmax(rng.standard_normal((b, n))), rng.standard_normal((b, n))
    run = compile_eq("dz[c,j] = da[b,i] * delta[b,c] * s[b,i] * (delta[i,j] - s[b,j])", {"da": (b, n), "s": (b, n)})
    dz = assert_matches_reference(run, da=da, s=s)
    assert_allclose(dz, s * (da - (da * s).sum(axis=1, keepdims=True)), **TOL)
