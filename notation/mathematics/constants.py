"""The registry of named constant tensors an algorithm may read: DFT matrices and their kin.

A constant is a closed form with whole-number arguments (sizes, a shift), built in float64 and
cast to the run's dtype once per compile; it is never a parameter and never checkpointed.  A
complex value is two real entries on an axis of size 2, (re, im), so complex products stay
real contractions that land on BLAS: with `cmul[e,f,g]` the product of a[e] and b[f] is
`a[e] * b[f] * cmul[e,f,g]`, and a complex matrix acting on [re, im] is the real block
[[Re, Im], [-Im, Re]] (written out, every constant below is such a block or half of one).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Constant:
    """A closed form: its arguments' names, the axes it has (for the docs), shape and values."""

    name: str
    args: tuple  # argument names, in order
    axes: str  # what each axis is, for the docs and error messages
    shape: Callable  # (*args) -> shape
    build: Callable  # (*args) -> float64 array
    doc: str

    def __call__(self, *args, dtype=np.float64) -> np.ndarray:
        values = self.build(*args)
        assert values.shape == self.shape(*args)
        return values.astype(dtype)


def _angle(a, b, n):
    """2*pi*a*b/n with the product reduced modulo n first, so large indices lose no precision."""
    return 2 * np.pi * (np.multiply.outer(a, b) % n) / n


def _rdft(n, size):
    """[a, v, e]: the real DFT of `n` samples at `size` points, bins v = 0..size//2 (eq. X = x F)."""
    t = _angle(np.arange(n), np.arange(size // 2 + 1), size)
    return np.stack([np.cos(t), -np.sin(t)], axis=-1)


def _dft(n, size):
    """[a, e, u, f]: the complex DFT of `n` complex samples at `size` points, as a real block."""
    t = _angle(np.arange(n), np.arange(size), size)
    c, s = np.cos(t), np.sin(t)
    out = np.empty((n, 2, size, 2))
    out[:, 0, :, 0], out[:, 1, :, 0], out[:, 0, :, 1], out[:, 1, :, 1] = c, s, -s, c
    return out


def _idft(size, n, shift):
    """[u, e, i, f]: the inverse complex DFT of `size` bins, sampled at i + shift for i < n (1/size in)."""
    t = _angle(np.arange(size), np.arange(n) + shift, size)
    c, s = np.cos(t) / size, np.sin(t) / size
    out = np.empty((size, 2, n, 2))
    out[:, 0, :, 0], out[:, 1, :, 0], out[:, 0, :, 1], out[:, 1, :, 1] = c, -s, s, c
    return out


def hermitian_weights(size):
    """How often each bin of a real signal's half spectrum counts in the full one: 1 for the DC
    bin and (size even) the Nyquist bin, 2 for the rest, whose mirror images were left out."""
    h = np.full(size // 2 + 1, 2.0)
    h[0] = 1.0
    if size % 2 == 0:
        h[-1] = 1.0
    return h


def _irdft(size, n, shift):
    """[v, e, j]: the real inverse of a half spectrum of `size` points, at j + shift for j < n,
    with the Hermitian weights (the imaginary parts of the DC and Nyquist bins do not count)."""
    t = _angle(np.arange(size // 2 + 1), np.arange(n) + shift, size)
    h = hermitian_weights(size)[:, None] / size
    return np.stack([h * np.cos(t), -h * np.sin(t)], axis=1)


def _unit(n, k):
    """[a]: the k-th of n unit vectors; unit(2, 0) = (1, 0) is a real number as a complex one."""
    if not 0 <= k < n:
        raise ValueError(f"unit({n}, {k}): k must be at least 0 and less than n")
    out = np.zeros(n)
    out[k] = 1.0
    return out


def _hermitian(size):
    """[v, u]: the half spectrum's bins v = 0..size//2 picked from the size bins u, each weighted
    by how often it counts in the full spectrum (hermitian_weights): with the complex inverse DFT,
    the inverse of a half spectrum, complex, whose real part is irdft's."""
    out = np.zeros((size // 2 + 1, size))
    out[np.arange(size // 2 + 1), np.arange(size // 2 + 1)] = hermitian_weights(size)
    return out


def _cmul():
    """[e, f, g]: complex multiplication, (a b)[g] = a[e] b[f] cmul[e,f,g]."""
    m = np.zeros((2, 2, 2))
    m[0, 0, 0], m[1, 1, 0], m[0, 1, 1], m[1, 0, 1] = 1.0, -1.0, 1.0, 1.0
    return m


CONSTANTS = {
    c.name: c for c in [
        Constant("rdft", ("n", "size"), "[sample, bin, re/im]", lambda n, size: (n, size // 2 + 1, 2), _rdft,
                 "real DFT: n samples (zero beyond) at size points, bins 0..size//2"),
        Constant("dft", ("n", "size"), "[sample, re/im, bin, re/im]", lambda n, size: (n, 2, size, 2), _dft,
                 "complex DFT: n complex samples (zero beyond) at size points"),
        Constant("idft", ("size", "n", "shift"), "[bin, re/im, sample, re/im]",
                 lambda size, n, shift: (size, 2, n, 2), _idft,
                 "inverse complex DFT of size bins, samples shift..shift+n-1 (circularly)"),
        Constant("irdft", ("size", "n", "shift"), "[bin, re/im, sample]",
                 lambda size, n, shift: (size // 2 + 1, 2, n), _irdft,
                 "inverse real DFT of a half spectrum with Hermitian weights, samples shift..shift+n-1"),
        Constant("cmul", (), "[re/im, re/im, re/im]", lambda: (2, 2, 2), _cmul, "complex multiplication"),
        Constant("unit", ("n", "k"), "[entry]", lambda n, k: (n,), _unit, "the k-th unit vector of n entries"),
        Constant("hermitian", ("size",), "[half bin, bin]", lambda size: (size // 2 + 1, size), _hermitian,
                 "a half spectrum's bins from the full one, with the Hermitian weights"),
    ]
}


def register_constant(name: str, args: tuple, shape: Callable, build: Callable, axes: str = "",
                      doc: str = "") -> Constant:
    """Make `{name: [arguments]}` usable under an algorithm's `constants:`: `shape(*args)` gives its
    shape and `build(*args)` its float64 values, from whole-number arguments (sizes, a shift).
    A name already taken is refused."""
    from ..language.errors import UserError
    if not (isinstance(name, str) and name.isidentifier()):
        raise UserError(f"a constant's name must be a plain identifier, not {name!r}")
    if name in CONSTANTS:
        raise UserError(f"constant {name!r} is registered already; choose another name")
    CONSTANTS[name] = Constant(name, tuple(args), axes, shape, build, doc)
    return CONSTANTS[name]
