"""notation.views: an index term as a zero-copy strided view, made once per buffer a run passes."""
import numpy as np

from notation.parser import parse
from notation.views import View


def _windows(shape=(2, 4, 4, 3)):
    """(18)'s x[b, 2*i+p, 2*j+q, k] over an x of this shape: windows [b, i, p, j, q, k]."""
    _, ref = parse("z[b,i,j,k] = x[b, 2*i+p, 2*j+q, k]")
    b, h, w, k = shape
    extents = {"b": b, "i": h // 2, "p": 2, "j": w // 2, "q": 2, "k": k}
    return View.of(ref, extents, {}, shape)


def test_a_view_reads_the_windows_without_a_copy():
    x = np.arange(2 * 4 * 4 * 3.0).reshape(2, 4, 4, 3)
    v = _windows()(x)
    assert np.shares_memory(v, x) and v.shape == (2, 2, 2, 2, 2, 3)
    assert v[1, 1, 0, 0, 1, 2] == x[1, 2, 1, 2]  # b=1, i=1, p=0, j=0, q=1, k=2


def test_the_same_buffer_again_gives_the_same_view_and_another_buffer_its_own():
    view = _windows()
    x, y = np.zeros((2, 4, 4, 3)), np.ones((2, 4, 4, 3))
    first = view(x)
    assert view(x) is first  # made once: a run passes its buffers again every step
    assert (view(y) == 1).all() and (view(x) == 0).all()
    assert not view(x).flags.writeable
    writable = view(x, writeable=True)  # asked for writing: its own view, not the read-only one
    writable[0, 0, 0, 0, 0, 0] = 5.0
    assert x[0, 0, 0, 0] == 5.0
