"""Zero padding (engine/padding.py): `valid` pads nothing; `same` gives ceil(n / stride) outputs."""
import pytest

from engine.compiler.padding import pads


def outputs(n, kernel, stride, before, after):
    return (n + before + after - kernel) // stride + 1


@pytest.mark.parametrize("n", [1, 5, 14, 28])
@pytest.mark.parametrize("kernel", [1, 2, 3, 5])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_same_padding_gives_ceil_n_over_stride_outputs_with_the_extra_zero_after(n, kernel, stride):
    before, after = pads("same", n, kernel, stride)
    assert outputs(n, kernel, stride, before, after) == -(-n // stride)
    assert 0 <= after - before <= 1  # TensorFlow's rule: an odd total puts the extra zero after


def test_same_padding_with_stride_2_pads_less_than_stride_1():
    assert pads("same", 28, 5, 1) == (2, 2)
    assert pads("same", 28, 5, 2) == (1, 2)   # 14 outputs need 31 entries, not 32
    assert pads("same", 14, 2, 2) == (0, 0)   # a 2x2 window at stride 2 tiles 14 exactly


def test_valid_padding_pads_nothing():
    assert pads("valid", 28, 5, 2) == (0, 0)


def test_an_unknown_padding_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"padding 'full' not found, valid options are \['valid', 'same'\]"):
        pads("full", 28, 5, 1)
