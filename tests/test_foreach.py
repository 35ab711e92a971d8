"""notation.runtime.foreach: an update rule over many arrays, one C call per worker's share."""
import numpy as np
import pytest

from notation.runtime import foreach

from conftest import needs_the_library

SHARES = [  # sizes, parts, each share's (array, first entry, entries)
    ([5, 0, 3, 8], 1, [[(0, 0, 5), (2, 0, 3), (3, 0, 8)]]),
    ([5, 0, 3, 8], 2, [[(0, 0, 5), (2, 0, 3)], [(3, 0, 8)]]),
    ([5, 0, 3, 8], 3, [[(0, 0, 5)], [(2, 0, 3), (3, 0, 2)], [(3, 2, 6)]]),
    ([1], 2, [[], [(0, 0, 1)]]),
    ([7], 2, [[(0, 0, 3)], [(0, 3, 4)]]),
]


@pytest.mark.parametrize("sizes, parts, shares", SHARES)
def test_the_entries_are_cut_end_to_end_into_nearly_equal_shares(sizes, parts, shares):
    assert [[tuple(t) for t in s.tolist()] for s in foreach._segments(sizes, parts)] == shares


@pytest.fixture
def built(monkeypatch):
    monkeypatch.setenv("NOTATION_FUSED", "1")
    needs_the_library()


def adam(arrays, grads):
    return foreach.Updates("adam", arrays, [True] * len(arrays)).run(grads, None, 0.9, 0.999, 1e-8, 0.1)


def moments(n, dtype=np.float32):
    return np.zeros(n, dtype), np.zeros(n, dtype)


@pytest.mark.usefixtures("built")
def test_arrays_the_loop_cannot_take_are_left_to_numpy_untouched():
    """A weight of another dtype than its state, a read-only weight, a gradient of another dtype or a
    strided one: their indices are returned and nothing of theirs is written; the fitting one runs."""
    frozen = np.ones(8, np.float32)
    frozen.flags.writeable = False
    arrays = [(np.ones(8, np.float32), *moments(8, np.float64)), (frozen, *moments(8)),
              (np.ones(8, np.float32), *moments(8)), (np.ones(8, np.float32), *moments(8)),
              (np.ones(8, np.float32), *moments(8))]
    grads = [np.ones(8, np.float32), np.ones(8, np.float32), np.ones(8), np.ones(16, np.float32)[::2],
             np.ones(8, np.float32)]
    assert sorted(adam(arrays, grads)) == [0, 1, 2, 3]
    for w, m, _ in arrays[:4]:
        np.testing.assert_array_equal(w, 1.0)
        np.testing.assert_array_equal(m, 0.0)
    assert (arrays[4][0] < 1.0).all()


@pytest.mark.usefixtures("built")
def test_a_gradient_that_fits_again_is_taken_again():
    """Whether a gradient fits is judged per array each time a new one comes, not once for good."""
    w = np.ones(4, np.float32)
    updates = foreach.Updates("sgd", [(w,)], [False])
    assert updates.run([np.ones(4)], None, 0.5) == [0]
    np.testing.assert_array_equal(w, 1.0)
    assert updates.run([np.ones(4, np.float32)], None, 0.5) == []
    np.testing.assert_array_equal(w, 0.5)


def test_without_the_library_every_array_is_left_to_numpy(monkeypatch):
    monkeypatch.setenv("NOTATION_FUSED", "0")
    w = np.ones(4, np.float32)
    assert adam([(w, *moments(4)), (w.copy(), *moments(4))], [np.ones(4, np.float32)] * 2) == [0, 1]
    np.testing.assert_array_equal(w, 1.0)
