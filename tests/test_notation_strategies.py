"""Each product runs by one strategy, chosen when compiling; plans name it, counters time it."""
import numpy as np
import pytest

import notation
import notation.lowering.lowering
from notation import Equation, counting
from notation.mathematics.reference import evaluate_run

ROADS = [  # equation, shapes, symbols, the strategy, what it says runs
    ("z[b,j] = x[b,i] * w[i,j]", {"x": (4, 3), "w": (3, 2)}, {},
     "GEMM into the result", "np.matmul, written into the result"),
    ("xc[b,i,j,p,q,r] = xp[b, s1*i+p, s2*j+q, r]", {"xp": (2, 7, 7, 3), "xc": (2, 3, 3, 3, 3, 3)},
     {"s1": 2, "s2": 2}, "gather copy", "np.copyto(result, view), a large one cut between the workers"),
    ("z[b, i*J*K + j*K + k] = x[b,i,j,k]", {"x": (2, 3, 4, 5)}, {"J": 4, "K": 5},  # flatten (10): a reshape
     "gather copy", "np.copyto(result, view), a large one cut between the workers"),
    ("z[b, i + I*p] = x[b,i,p]", {"x": (2, 3, 4)}, {"I": 3},  # every entry once, no reshape: no zeroing
     "add of a view", "np.copyto(the result's view, view)"),
    ("xp[b, i+1, j+1, k] = x[b,i,j,k]", {"x": (2, 3, 3, 3), "xp": (2, 5, 5, 3)}, {},  # a padding: a box
     "add of a view", "np.copyto(the result's box, view), the rest of the result zeroed"),
    ("d[b, 2*i, j] = x[b,i,j]", {"x": (2, 3, 4), "d": (2, 6, 4)}, {},  # strided: no box, added to zeros
     "add of a view", "the view folded into the result"),
    ("dz[c,i] = da[c,i] * drelu(z[c,i])", {"da": (3, 4), "z": (3, 4)}, {},
     "elementwise ufunc", "np.multiply in one C loop (notation/runtime/fused.c) where built, out=result"),
    ("s[b,h,i,j] = q[b,h,i,d] * k[b,h,j,d]", {"q": (2, 3, 4, 5), "k": (2, 3, 6, 5)}, {},
     "batched GEMM", "np.matmul, batched over (b,h), written into the result"),
    ("dw[P-p, Q-q, r, k] = dz[b,i,j,k] * xc[b,i,j,p,q,r]", {"dz": (2, 3, 3, 4), "xc": (2, 3, 3, 2, 2, 3)}, {},
     "opt_einsum path", "np.matmul, folded"),
    ("z[b,i,j,k] = max[p,q] x[b, 2*i+p, 2*j+q, k]", {"x": (2, 4, 4, 3)}, {"P": 1, "Q": 1},
     "nested into the result", "window max in one C loop (notation/runtime/fused.c) where built, out=result"),
    ("db[k] = dz[b,k]", {"dz": (5, 3)}, {}, "sum as GEMV", "np.matmul, ones @ matrix, written into the result"),
    ("s[b] = 2 * x[b,i,j]", {"x": (5, 3, 4)}, {}, "sum as GEMV", "np.matmul, matrix @ ones, written into the result"),
    ("db[P-k] = dz[b,k]", {"dz": (5, 3)}, {"P": 2}, "sum as GEMV", "np.matmul, ones @ matrix, folded"),
    ("t[i] = x[2*i, j]", {"x": (6, 3)}, {}, "opt_einsum path", "np.einsum, written into the result"),
    ("xs[b,u,v,g,r] = xh[b,u,f,c,r] * fc[f,c,v,g]", {"xh": (2, 3, 2, 14, 32), "fc": (2, 14, 9, 2)}, {},
     "stacked GEMM", "np.matmul over 6 blocks (b,u) of 32x28 @ 28x18, no copy, written into the result"),
]


@pytest.mark.parametrize("source,shapes,symbols,name,runs", ROADS, ids=[r[3] + ": " + r[0] for r in ROADS])
def test_the_plan_names_the_strategy_that_runs(source, shapes, symbols, name, runs):
    run = Equation(source).compile(shapes=shapes, symbols=symbols)
    strategy = run.describe()["products"][0]["strategy"]
    assert (strategy["name"], strategy["runs"]) == (name, runs)
    assert run.strategies[0] == name and f"strategy {name}: {runs}" in run.plan()
    rng = np.random.default_rng(0)
    arrays = {n: rng.standard_normal(s) for n, s in shapes.items() if n in run.equation.operands}
    with counting() as counts:
        result = run(**arrays)
    np.testing.assert_allclose(result, evaluate_run(run, **arrays), rtol=1e-12, atol=1e-12)
    assert counts.runs[run][name] > 0  # the road the plan names is the one that ran


def test_a_bias_is_added_from_its_view_and_a_sum_of_terms_keeps_one_strategy_each():
    run = Equation("z[b,j] = x[b,i] * w[i,j] + b[j]").compile(shapes={"x": (4, 3), "w": (3, 2), "b": (2,)})
    assert run.strategies == ("GEMM into the result", "add of a view")


@pytest.mark.parametrize("shape", [(6, 5, 4, 3), (7, 13, 32), (1, 3), (2, 64, 64), (5, 1024)])
def test_a_bias_on_the_last_axis_is_added_exactly_as_numpy_broadcasts_it(shape):
    """A short row repeated over the leading axes is added tiled (faster), to the same bits; a prime
    number of rows, one row, or a row too long to tile take numpy's own broadcast."""
    idx = "bijk"[:len(shape) - 1] + "c"
    run = Equation(f"z[{','.join(idx)}] = x[{','.join(idx)}] * 2 + b[c]").compile(
        shapes={"x": shape, "b": shape[-1:]})
    rng = np.random.default_rng(len(shape))
    x, b = rng.standard_normal(shape), rng.standard_normal(shape[-1:])
    np.testing.assert_array_equal(run(x=x, b=b), x * 2 + b)
    out = np.empty(shape)[..., ::-1][..., ::-1]  # a result written through another run's buffer
    np.testing.assert_array_equal(run(x=x, b=b, out=out), x * 2 + b)


def test_a_large_looped_scatter_runs_in_batch_slices(monkeypatch):
    monkeypatch.setattr(notation.lowering.lowering, "CHUNK_ELEMENTS", 32 * 3 * 8 * 3 * 8 * 4)  # 32 images a slice
    shapes = {"dz": (64, 8, 8, 4), "w": (3, 3, 4, 4), "dx": (64, 17, 17, 4)}
    run = Equation("dx[c,t,u,v] = dz[c,i,j,k] * w[P+s1*i-t, Q+s2*j-u, v, k]").compile(
        shapes=shapes, symbols={"s1": 2, "s2": 2})
    strategy = run.describe()["products"][0]["strategy"]
    assert strategy["name"] == "scatter in batch slices" and strategy["runs"].startswith("2 slices of c, each")


def test_counting_times_each_strategy_once_nested_functions_apart():
    run = Equation("dz[c,i] = da[c,i] * drelu(z[c,i] * 2)").compile(shapes={"da": (3, 4), "z": (3, 4)})
    rng = np.random.default_rng(1)
    arrays = {"da": rng.standard_normal((3, 4)), "z": rng.standard_normal((3, 4))}
    with counting() as counts:
        for _ in range(3):
            run(**arrays)
    assert counts.calls["elementwise ufunc"] == 3
    assert set(counts.runs[run]) >= {"elementwise ufunc", "add of a view"}  # drelu's argument, 2 * z
    assert sum(counts.runs[run].values()) <= counts.totals[run]  # exclusive times add up to no more
    assert counts.strategies["elementwise ufunc"] == counts.runs[run]["elementwise ufunc"]


def test_counting_is_off_and_costs_no_clock_reading_outside_its_block(monkeypatch):
    run = Equation("z[b,j] = x[b,i] * w[i,j]").compile(shapes={"x": (4, 3), "w": (3, 2)})
    readings = []
    monkeypatch.setattr(notation.runtime.counters.time, "perf_counter", lambda: readings.append(1) or 0.0)
    run(x=np.ones((4, 3)), w=np.ones((3, 2)))
    assert readings == []
    with counting():
        with pytest.raises(RuntimeError, match="already active"):
            with counting():
                pass


def test_an_equation_typesets_as_the_report_in_a_notebook():
    eq = Equation("z[b,j] = x[b,i] * w[i,j]")
    assert eq._repr_latex_() == f"$${eq.latex()}$$" == r"$$z_{bj} = \sum_{i} x_{bi} w_{ij}$$"


def test_a_compiled_run_shows_as_a_table_of_its_products():
    run = Equation("z[b,j] = x[b,i] * w[i,j] + b[j]").compile(shapes={"x": (4, 3), "w": (3, 2), "b": (2,)})
    table = run._repr_markdown_().splitlines()
    assert table[2].startswith("| term | strategy | runs |")
    assert table[4].startswith("| 1 | GEMM into the result | np.matmul, written into the result | `bi,ij->bj` |")
    assert table[5].startswith("| 2 | add of a view |")


@pytest.mark.parametrize("size, stride, covers", [(2, 2, True), (3, 2, False), (2, 3, False)])
def test_a_scatter_that_reaches_every_entry_once_overwrites_and_others_start_from_zero(size, stride, covers):
    """(19) at stride = window writes each entry of dx once (dx read as a reshape, its windows in C
    order): no zeroing first, and what the buffer held before is gone; windows that overlap or leave
    gaps start from zero and add."""
    n = stride * 3 + size - stride
    run = Equation("dx[b, s1*i+p, s2*j+q, k] = dz[b,i,j,k] * m[b,i,j,k,p,q]").compile(
        shapes={"dz": (2, 3, 3, 4), "m": (2, 3, 3, 4, size, size), "dx": (2, n, n, 4)},
        symbols={"s1": stride, "s2": stride})
    assert (run.describe()["products"][0]["fold"]["kind"] in ("in place", "strided write")) == covers
    rng = np.random.default_rng(0)
    arrays = {"dz": rng.standard_normal((2, 3, 3, 4)), "m": rng.random((2, 3, 3, 4, size, size)) < 0.3}
    out = np.full((2, n, n, 4), np.nan)
    run(out=out, **arrays)
    np.testing.assert_allclose(out, evaluate_run(run, **arrays), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("source,shapes", [
    ("xp[b, i+2, j+1, k] = x[b,i,j,k]", {"x": (2, 3, 4, 5), "xp": (2, 8, 6, 5)}),  # a padding, uneven
    ("z[b, i, j, k+3] = x[b,i,j,k]", {"x": (2, 3, 4, 5), "z": (2, 3, 4, 9)}),  # concat's second block of channels
    ("z[k+1, b] = x[b,k]", {"x": (3, 4), "z": (6, 3)}),  # transposed into its box
    ("z[b, i+1] = x[b,i] + y[b,i+1]", {"x": (2, 3), "y": (2, 5), "z": (2, 5)}),  # a box, then a term added
])
def test_a_box_of_the_result_is_copied_and_only_the_rest_zeroed(source, shapes):
    """Whatever the buffer held outside the box is zeroed, inside it the view is copied (a -0 stays -0)."""
    equation = Equation(source)
    run = equation.compile(shapes=shapes)
    assert "the rest of the result zeroed" in run.describe()["products"][0]["strategy"]["runs"]
    rng = np.random.default_rng(0)
    arrays = {n: rng.standard_normal(shapes[n]) for n in equation.operands}
    arrays["x"].flat[0] = -0.0
    out = np.full(run.result_shape, np.nan)
    run(out=out, **arrays)
    np.testing.assert_array_equal(out, evaluate_run(run, **arrays))
    alone = len(equation.operands) == 1  # -0 + y's entry is y's: only a copy alone keeps the sign
    assert np.signbit(out[out == 0]).sum() == (1 if alone else 0)


@pytest.mark.parametrize("dtype", [np.int64, np.float32, np.float64])
def test_a_sum_over_leading_axes_equals_numpy_s_sum(dtype):
    """(6), (8)'s bias gradient runs as a GEMV against ones; whole numbers take numpy's own sum."""
    run = Equation("db[k] = dz[b,i,k]").compile(shapes={"dz": (7, 5, 3)})
    dz = np.random.default_rng(1).integers(-9, 9, size=(7, 5, 3)).astype(dtype)
    assert run.strategies == ("sum as GEMV",)
    np.testing.assert_array_equal(run(dz=dz), dz.sum(axis=(0, 1)))


FUSED = [  # a product that writes the result, then a bias: the bias is added by the product's workers
    ("z[b,j] = x[b,i] * w[i,j] + b[j]", {"x": (64, 300), "w": (300, 512), "b": (512,)}),  # cut along columns
    ("z[b,j] = x[b,i] * w[i,j] + b[j]", {"x": (512, 300), "w": (300, 64), "b": (64,)}),  # cut along rows
    ("z[b,j] = x[b,i] * w[i,j] + b[b]", {"x": (8, 4000), "w": (4000, 8), "b": (8,)}),  # cut along the sum
    ("z[b,i,j,k] = xc[p,q,r,b,i,j] * w[P-p, Q-q, r, k] + b[k]",
     {"xc": (3, 3, 2, 4, 10, 10), "w": (3, 3, 2, 16), "b": (16,)}),  # conv1's (15), im2col
    ("z[b,i,j,k] = zj[b,u,e,j,k] * gr[u,e,i] + b[k]",
     {"zj": (6, 16, 2, 14, 64), "gr": (16, 2, 14), "b": (64,)}),  # conv2's (15), a stacked GEMM
]


@pytest.mark.parametrize("source,shapes", FUSED, ids=[f"{s} {shapes}" for s, shapes in FUSED])
def test_a_bias_after_a_product_is_added_by_its_workers_to_the_same_bits(source, shapes):
    """The same adds as the product, then the bias: numpy's z + b, bit for bit, however the product is cut."""
    run = Equation(source).compile(shapes=shapes, symbols={"P": 2, "Q": 2})
    product = Equation(source.rsplit(" + ", 1)[0]).compile(shapes=shapes, symbols={"P": 2, "Q": 2})
    rng = np.random.default_rng(5)
    arrays = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    assert "added to each worker's part as it is made" in run.describe()["products"][0]["strategy"]["runs"]
    assert "added by the product before it" in run.plan()
    bias = source.rsplit(" + ", 1)[1]  # b[j], b[b] or b[k]: lined up with the result's axes
    lhs = source.split("[", 1)[1].split("]", 1)[0].split(",")
    lined = arrays["b"].reshape([-1 if i == bias[2] else 1 for i in lhs])
    np.testing.assert_array_equal(run(**arrays), product(**{n: a for n, a in arrays.items() if n != "b"}) + lined)


def test_an_addend_as_large_as_the_result_is_added_on_its_own():
    run = Equation("z[b,j] = x[b,i] * w[i,j] + y[b,j]").compile(shapes={"x": (64, 30), "w": (30, 50), "y": (64, 50)})
    assert "added" not in run.describe()["products"][0]["strategy"]["runs"]
    assert run.describe()["products"][1]["strategy"]["runs"] == "the view folded into the result"


@pytest.mark.parametrize("source,shapes", [
    ("dx[c,k] = dz[c,j] * w[k,j]", {"dz": (2, 64), "w": (64, 64)}),  # w too small to matter
    ("z[b,j] = x[b,i] * w[i,j]", {"x": (2, 4096), "w": (4096, 64)}),  # w read as it lies already
    ("dx[c,k] = dz[c,j] * w[k,j]", {"dz": (1024, 64), "w": (1024, 64)}),  # a result as large as w
])
def test_a_gemm_is_turned_only_to_read_a_large_operand_as_it_lies(source, shapes):
    assert Equation(source).compile(shapes=shapes).strategies == ("GEMM into the result",)


def test_a_large_operand_read_transposed_comes_first_and_the_small_result_is_copied_into_place(monkeypatch):
    """(13)'s dx = dz w^T reads w[k,j] with its summed j last in memory: run as w dz^T, turned back."""
    monkeypatch.setattr(notation.lowering.steps, "TURN_SIZE", 64)  # the size at which it pays, scaled down
    run = Equation("dx[c,k] = dz[c,j] * w[k,j]").compile(shapes={"dz": (2, 16), "w": (40, 16)})
    strategy = run.describe()["products"][0]["strategy"]
    assert (strategy["name"], strategy["runs"]) == (
        "GEMM, turned", "np.matmul with w first, as it lies in memory, copied into the result")
    rng = np.random.default_rng(2)
    dz, w = rng.standard_normal((2, 16)), rng.standard_normal((40, 16))
    np.testing.assert_allclose(run(dz=dz, w=w), evaluate_run(run, dz=dz, w=w), rtol=1e-12, atol=1e-12)


def test_an_operand_blas_cannot_read_as_it_lies_is_copied_into_a_buffer_made_once():
    """Patches cut from an image (a patch embedding's (15) with kernel = stride) are copied for the GEMM
    into a buffer kept between calls: the same values, and no new buffer of their size per call."""
    import tracemalloc
    run = Equation("z[b, i*J + j, k] = x[b, s1*i+p, s1*j+q, r] * w[p,q,r,k]").compile(
        shapes={"x": (16, 28, 28, 2), "w": (7, 7, 2, 8)}, symbols={"s1": 7, "J": 4})
    rng = np.random.default_rng(0)
    out = np.empty(run.result_shape)
    for _ in range(2):
        x, w = rng.standard_normal((16, 28, 28, 2)), rng.standard_normal((7, 7, 2, 8))
        tracemalloc.start()
        run.evaluate({"x": x, "w": w}, out)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        patches = x.reshape(16, 4, 7, 4, 7, 2).transpose(0, 1, 3, 2, 4, 5).reshape(16, 16, 98)
        np.testing.assert_allclose(out, patches @ w.reshape(98, 8), rtol=1e-12, atol=1e-12)
    assert peak < x.nbytes / 4  # the second call: the patches' copy (x's size) not made anew
