"""notation.lowering.views: an index term as a zero-copy strided view, made once per buffer a run passes."""
import numpy as np

from notation.language.parser import parse
from notation.lowering.views import View


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


def test_a_view_of_any_layout_reads_what_the_index_term_names():
    """On the buffer itself where it is C-ordered, through as_strided where it is not (a transposed
    or strided array): the same entries either way, writable only when asked."""
    view = _windows()
    x = np.arange(2 * 4 * 4 * 3.0).reshape(2, 4, 4, 3)
    others = (np.asfortranarray(x), np.repeat(x, 2, axis=3)[..., ::2])
    for a in (x,) + others:
        np.testing.assert_array_equal(view(a), view(x))
        assert np.shares_memory(view(a), a) and not view(a).flags.writeable
    writable = view(x, writeable=True)
    writable[0, 0, 0, 0, 0, 0] = -1.0
    assert x[0, 0, 0, 0] == -1.0
    frozen = x.copy()
    frozen.flags.writeable = False
    assert not view(frozen).flags.writeable


def test_a_flipped_and_offset_view_reads_backwards_from_its_offset():
    """(15)'s kernel w[P-p, Q-q, r, k]: negative strides from the last entry, on the buffer itself."""
    _, ref = parse("z[p,q,r,k] = w[P-p, Q-q, r, k]")
    view = View.of(ref, {"p": 3, "q": 3, "r": 2, "k": 2}, {"P": 2, "Q": 2}, (3, 3, 2, 2))
    w = np.arange(36.0).reshape(3, 3, 2, 2)
    np.testing.assert_array_equal(view(w), w[::-1, ::-1])
    np.testing.assert_array_equal(view(np.asfortranarray(w)), w[::-1, ::-1])


def test_a_copy_of_one_operand_may_be_that_operand_where_it_is_laid_out_as_the_result():
    """`dx1[b,i] = dz[b,i]` (a residual's gradient) and flatten's (10) can hand over the operand's own
    memory; a transpose or a window (not in the result's C order) and a scaled copy are made into the
    result as before."""
    from notation import Equation

    dz = np.arange(12.0).reshape(3, 4)
    same = Equation("dx[b,i] = dz[b,i]").compile(shapes={"dz": dz.shape})
    assert same.copies and np.shares_memory(same.alias({"dz": dz}), dz)
    assert same.alias({"dz": np.asfortranarray(dz)}) is None  # not in C order: copied
    x = np.arange(24.0).reshape(2, 3, 4, 1)
    flat = Equation("z[b, i*J*K + j*K + k] = x[b,i,j,k]").compile(shapes={"x": x.shape}, symbols={"J": 4, "K": 1})
    z = flat.alias({"x": x})
    assert z.shape == (2, 12) and np.shares_memory(z, x)
    np.testing.assert_array_equal(z, flat(x=x))
    for text, shape in (("dx[i,b] = dz[b,i]", (3, 4)), ("dx[b,i] = dz[b, i+1]", (3, 5)),
                        ("dx[b,i] = 2 * dz[b,i]", (3, 4))):
        run = Equation(text).compile(shapes={"dz": shape})
        assert not run.copies and run.alias({"dz": np.ones(shape)}) is None, text
