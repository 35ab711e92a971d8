"""A window's taps (a depthwise or dilated convolution, a pool's mean, a transposed convolution's scatter,
a kernel's gradient summed over the batch) take the taps road where it is modelled cheaper; every
such road agrees with the literal loop interpreter, and its C loop gives numpy's bits to the bit."""
import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from notation import Equation
from notation.lowering import cost
from notation.mathematics.reference import evaluate_run

from conftest import needs_the_library

TAPS = "taps in one C loop"
B = 64  # the zoo's batch in bench.py
CHOICES = [  # equation, shapes, the road that runs (NOTATION_RATES=reference, the C loops built)
    # a depthwise convolution (15) without the sum over r: 9 taps, no window gathered
    ("z[b,i,j,k] = xp[b, i+p, j+q, k] * w[P-p, Q-q, k]", {"xp": (B, 12, 12, 8), "w": (3, 3, 8)}, TAPS),
    # its scatter (16): each tap's slice added in turn, no 9x result made first
    ("dxp[b, i+p, j+q, k] = dz[b,i,j,k] * w[P-p, Q-q, k]", {"dz": (B, 10, 10, 8), "w": (3, 3, 8)}, TAPS),
    # its kernel's gradient (17): per tap, a sum over the batch in registers
    ("dw[P-p, Q-q, k] = dz[b,i,j,k] * xp[b, i+p, j+q, k]", {"dz": (B, 10, 10, 8), "xp": (B, 12, 12, 8)}, TAPS),
    # a dilated convolution with few channels: 72 taps of rows of 8
    ("z[b,i,j,k] = x[b, i+2*p, j+2*q, r] * w[P-p, Q-q, r, k]", {"x": (B, 14, 14, 8), "w": (3, 3, 8, 8)}, TAPS),
    # a pool's mean and a global one: one operand's taps
    ("z[b,i,j,k] = x[b, 2*i+p, 2*j+q, k] / 4", {"x": (B, 10, 10, 8)}, TAPS),
    ("z[b,k] = x[b,i,j,k] / 100", {"x": (B, 10, 10, 16)}, TAPS),
    # many channels: the windows' GEMM stays
    ("z[b,i,j,k] = x[b, i+p, j+q, r] * w[P-p, Q-q, r, k]", {"x": (B, 18, 18, 64), "w": (5, 5, 64, 64)},
     "GEMM into the result"),
    # a kernel the size of its stride: GEMMs straight into the strided result
    ("u[b, 2*i+p, 2*j+q, k] = x[b,i,j,r] * w[p,q,r,k]", {"x": (B, 5, 5, 8), "w": (2, 2, 8, 8)}, "stacked GEMM"),
    # matrix products and per-channel sums keep their roads
    ("z[b,j] = x[b,i] * w[i,j]", {"x": (64, 3136), "w": (3136, 1024)}, "GEMM into the result"),
    ("dg[k] = dz[b,i,j,k] * xh[b,i,j,k]", {"dz": (64, 28, 28, 32), "xh": (64, 28, 28, 32)},
     "chunked sum of a product"),
]


def compiled(source, shapes):
    kernel = next(v for k, v in shapes.items() if k == "w") if "w" in shapes else None
    taps = {"P": kernel[0] - 1, "Q": kernel[1] - 1} if kernel is not None else {"P": 1, "Q": 1}
    return Equation(source).compile(shapes=shapes, symbols=taps)


@pytest.mark.parametrize("source,shapes,road", CHOICES, ids=[c[0] for c in CHOICES])
def test_the_cheaper_road_is_chosen_for_a_window(source, shapes, road):
    needs_the_library()
    run = compiled(source, shapes)
    assert run.strategies[0] == road
    c = run.describe()["products"][0]["cost"]
    assert 0 < c["bound_s"] <= c["modelled_s"] * 1.0001


TEMPLATES = [  # (equation, operand -> axes sizes from (b, h, w, c, k, n)), n: the taps' extent
    ("z[b,i,j,k] = x[b, i+p, j+q, r] * w[P-p, Q-q, r, k]", lambda b, h, w, c, k, n: {
        "x": (b, h + n - 1, w + n - 1, c), "w": (n, n, c, k)}),
    ("z[b,i,j,k] = x[b, i+p, j+q, k] * w[P-p, Q-q, k]", lambda b, h, w, c, k, n: {
        "x": (b, h + n - 1, w + n - 1, k), "w": (n, n, k)}),
    ("dx[b, i+p, j+q, r] = dz[b,i,j,k] * w[P-p, Q-q, r, k]", lambda b, h, w, c, k, n: {
        "dz": (b, h, w, k), "w": (n, n, c, k)}),
    ("dw[P-p, Q-q, r, k] = dz[b,i,j,k] * x[b, i+p, j+q, r]", lambda b, h, w, c, k, n: {
        "dz": (b, h, w, k), "x": (b, h + n - 1, w + n - 1, c)}),
    ("z[b,i,j,k] = x[b, i+p, j+q, k] / 3", lambda b, h, w, c, k, n: {"x": (b, h + n - 1, w + n - 1, k)}),
]
DEAR_GEMM = cost.Rates(gemm=1e3, bandwidth=1e10, einsum=1e7, call=1e-9, block=1.0)  # every other road dear


@settings(max_examples=80, deadline=None)
@example(0, 1, 2, 1, 1, 1, 2, np.float32)  # one channel each way: the kernel taken first, then relaid
@given(st.integers(0, len(TEMPLATES) - 1), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5),
       st.integers(1, 3), st.integers(1, 20), st.integers(2, 3), st.sampled_from([np.float32, np.float64]))
def test_a_taps_road_agrees_with_the_loop_interpreter(t, b, h, w, c, k, n, dtype):
    """Rows shorter and longer than a vector (k up to 20), four or nine taps, scatters and sums, on rates
    where every other road is dear."""
    source, shapes_of = TEMPLATES[t]
    shapes = shapes_of(b, h, w, c, k, n)
    cost.use(DEAR_GEMM)
    try:
        run = Equation(source).compile(shapes=shapes, symbols={"P": n - 1, "Q": n - 1})
    finally:
        cost.use(None)
    assume(TAPS in run.strategies)  # a window of a few entries may stay on np.einsum even so
    rng = np.random.default_rng(b * 1000 + h * 100 + k)
    arrays = {name: rng.standard_normal(s).astype(dtype) for name, s in shapes.items()}
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(run(**arrays), evaluate_run(run, **arrays), rtol=tol, atol=tol)


@pytest.mark.parametrize("source,shapes", [c[:2] for c in CHOICES[:6]] + [
    ("dxu[c,t,u,v] = dzw[c,t,j,p,k] * w[p, 2+j-u, v, k]", {"dzw": (8, 12, 10, 3, 16), "w": (3, 3, 4, 16)})],
    ids=[c[0] for c in CHOICES[:6]] + ["a GEMM's result scattered by slice-adds"])
def test_the_c_loop_gives_the_bits_of_numpys_passes(source, shapes, monkeypatch):
    needs_the_library()
    rng = np.random.default_rng(7)
    arrays = {name: rng.standard_normal(s).astype(np.float32) for name, s in shapes.items()}
    run = compiled(source, shapes)
    fused = run(**arrays)
    monkeypatch.setenv("NOTATION_FUSED", "0")
    assert np.array_equal(run(**arrays), fused)
