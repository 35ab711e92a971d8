"""Zero padding of a window's input: `valid` as the report's (15), `same` as TensorFlow's."""
from __future__ import annotations

PADDINGS = ("valid", "same")


def pads(mode: str, n: int, kernel: int, stride: int) -> tuple:
    """(before, after) for an axis of n entries; `same` gives ceil(n / stride) outputs."""
    if mode == "valid":
        return 0, 0
    if mode == "same":
        out = -(-n // stride)
        total = max((out - 1) * stride + kernel - n, 0)
        return total // 2, total - total // 2
    raise ValueError(f"padding {mode!r} not found, valid options are {list(PADDINGS)}")
