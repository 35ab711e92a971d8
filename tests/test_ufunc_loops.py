"""numpy's own tanh loop, found in np.tanh and run on a block by fused.c's chain: numpy's bits, and
numpy's passes (the same bits) where the loop is not to be had."""
import numpy as np
import pytest

from notation import Equation
from notation.runtime import fused, ufuncs

from conftest import needs_the_library


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_loop_found_in_a_ufunc_gives_its_bits(dtype):
    import ctypes
    address, data = ufuncs.loop(np.tanh, dtype)
    x = (np.random.default_rng(2).standard_normal(1001) * 5).astype(dtype)
    y = np.empty_like(x)
    args = (ctypes.c_void_p * 2)(x.ctypes.data, y.ctypes.data)
    ufuncs.LOOP(address)(args, (ctypes.c_ssize_t * 1)(x.size), (ctypes.c_ssize_t * 2)(x.itemsize, x.itemsize), data)
    assert y.tobytes() == np.tanh(x).tobytes()


def test_a_ufunc_of_two_inputs_or_another_dtype_has_no_loop_to_hand_over():
    assert ufuncs.loop(np.add, np.float32) is None
    assert ufuncs.loop(np.tanh, np.int8) is None


def test_without_numpy_s_tanh_loop_the_functions_on_it_run_as_numpy_s_passes(monkeypatch):
    needs_the_library()
    run = Equation("dz[b,i] = da[b,i] * dgelu(z[b,i])").compile(shapes={"da": (4, 300), "z": (4, 300)})
    rng = np.random.default_rng(4)
    arrays = {n: rng.standard_normal((4, 300)).astype(np.float32) for n in ("da", "z")}
    fast = run(**arrays)
    monkeypatch.setattr(fused, "_LOOPS", {})
    run._rhs.chain.last = None  # the call made for these arrays is made again
    assert not run._rhs.chain.run(arrays, np.empty((4, 300), np.float32), None)
    assert run(**arrays).tobytes() == fast.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("source,shapes", [
    ("ex[b,h,n,m] = exp(s[b,h,n,m] - sm[b,h,n])", {"s": (5, 2, 16, 16), "sm": (5, 2, 16)}),  # attention's (22)
    ("e[b,i] = exp(z[b,i] - m[b])", {"z": (3, 1031), "m": (3,)}),  # softmax's (22), rows past a block
])
def test_exp_of_a_chains_sum_is_made_in_its_pass_to_numpys_bits(source, shapes, dtype):
    needs_the_library()
    run = Equation(source).compile(shapes=shapes)
    assert run._rhs.chain.final == "exp" and "exp made in its argument's pass" in run.plan()
    rng = np.random.default_rng(6)
    arrays = {n: (rng.standard_normal(s) * 40).astype(dtype) for n, s in shapes.items()}  # exp over- and underflows
    first = next(iter(arrays.values())).reshape(-1)
    first[::7], first[3::11] = np.nan, np.inf
    with np.errstate(all="ignore"):
        want = np.exp(arrays[list(shapes)[0]] - arrays[list(shapes)[1]][..., None])
        assert run(**arrays).tobytes() == want.tobytes()


def test_without_numpy_s_exp_loop_the_sum_is_made_first_then_exp(monkeypatch):
    needs_the_library()
    run = Equation("e[b,i] = exp(z[b,i] - m[b])").compile(shapes={"z": (4, 300), "m": (4,)})
    rng = np.random.default_rng(8)
    arrays = {"z": rng.standard_normal((4, 300)).astype(np.float32), "m": rng.standard_normal(4).astype(np.float32)}
    fast = run(**arrays)
    monkeypatch.setattr(fused, "_LOOPS", {})
    run._rhs.chain.last = None
    assert not run._rhs.chain.run(arrays, np.empty((4, 300), np.float32), None)
    assert run(**arrays).tobytes() == fast.tobytes()
