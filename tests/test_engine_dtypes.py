"""float32, the default, computes what float64 computes, to float32's precision, for the whole network."""
import numpy as np

import engine

from conftest import SPEC


def test_the_whole_network_agrees_in_float32_and_float64():
    nets = {d: engine.load(SPEC, dtype=d, seed=3, check=False) for d in ("float32", "float64")}
    nets["float32"].set_params({l: {p: w.astype(np.float32) for p, w in ps.items()}
                                for l, ps in nets["float64"].params.items()})
    rng = np.random.default_rng(0)
    x, labels = rng.random((8, 28, 28, 1)), rng.integers(0, 10, 8)
    probs = {d: n.forward(x) for d, n in nets.items()}
    assert probs["float32"].dtype == np.float32 and probs["float64"].dtype == np.float64
    np.testing.assert_allclose(probs["float32"], probs["float64"], rtol=1e-4, atol=1e-6)
    (j32, g32), (j64, g64) = (nets[d].loss_and_grads(x, labels) for d in ("float32", "float64"))
    assert abs(j32 - j64) <= 1e-5 * abs(j64)
    for layer, ps in g64.items():
        for p, g in ps.items():
            scale = np.abs(g).max()
            assert g32[layer][p].dtype == np.float32
            np.testing.assert_allclose(g32[layer][p], g, atol=1e-4 * scale, err_msg=f"{layer}.{p}")
