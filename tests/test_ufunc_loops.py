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
    monkeypatch.setattr(fused, "_TANH", {})
    run._rhs.chain.last = None  # the call made for these arrays is made again
    assert not run._rhs.chain.run(arrays, np.empty((4, 300), np.float32), None)
    assert run(**arrays).tobytes() == fast.tobytes()
