"""The registry of elementwise functions an equation may call, each with its derivative's name;
`register_function` adds one (as opt_einsum's `register_path_fn` adds a path optimizer)."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Function:
    """An elementwise function: numpy form (array, out=None), scalar form for the reference loop,
    and the registry name of its derivative."""

    name: str
    array: Callable
    scalar: Callable
    derivative: str | None  # name of the registry entry that is f'(x), if any
    latex: str


def _drelu_array(z, out=None):
    # eq. (21): 1 above zero, 1/2 at zero (the central difference), 0 below: z > 0, then 1/2 where z
    # is exactly 0, found by one read of z (np.all) and mended only where there are any; two passes
    # over z instead of the three of (sign + 1) / 2 (6x faster than np.heaviside(z, 0.5) already)
    # Asked for no buffer (a factor of a product, as in (21)), it may give a bool array: the same
    # 0s and 1s, a quarter of the bytes to write and read back
    exact_zeros = not np.all(z)
    if out is None and not exact_zeros:
        return np.greater(z, 0)
    out = np.greater(z, 0, out=np.empty(z.shape, np.result_type(z, np.float32)) if out is None else out)
    if exact_zeros:
        out[z == 0] = 0.5
    return out


_ZEROS = {}  # dtype -> a flat array of zeros, never written, grown as larger arrays come


def _zeros_like(z):
    """Zeros of z's shape, as a view of one array per dtype: np.zeros asks the system for untouched
    pages, which all read as the one shared zero page, so this costs neither memory nor bandwidth."""
    flat = _ZEROS.get(z.dtype)
    if flat is None or flat.size < z.size:
        flat = _ZEROS[z.dtype] = np.zeros(max(z.size, 1 << 16), dtype=z.dtype)
    return flat[:z.size].reshape(z.shape)


def _relu_array(z, out=None):
    # against zeros of the whole shape: numpy's contiguous vector loop.  Against the scalar 0, or a
    # broadcast row as short as a channel axis (32), float32 takes a slower path: 0.9-1.2 against
    # 0.35 ms on conv1's output here; a row as long as a flattened activation's (25,088) is as fast.
    z = np.asarray(z)
    if z.ndim == 0:
        return np.maximum(z, np.asarray(0, dtype=z.dtype), out=out)
    return np.maximum(z, _zeros_like(z), out=out)


def _id_array(z, out=None):
    if out is None:
        return z
    np.copyto(out, z)
    return out


def _dsqrt_array(z, out=None):
    # d/dz sqrt(z) = 1 / (2 sqrt(z))
    out = np.sqrt(z, out=out)
    np.reciprocal(out, out=out)
    out *= np.asarray(0.5, dtype=out.dtype)
    return out


def _rsqrt_array(z, out=None):
    out = np.sqrt(z, out=out)
    return np.reciprocal(out, out=out)


def _drsqrt_array(z, out=None):
    # d/dz z^(-1/2) = -1/2 z^(-3/2)
    out = np.power(z, np.asarray(-1.5, dtype=np.result_type(z, np.float32)), out=out)
    out *= np.asarray(-0.5, dtype=out.dtype)
    return out


def _twice_array(z, out=None):
    return np.multiply(z, np.asarray(2, dtype=z.dtype), out=out)


def _drecip_array(z, out=None):
    out = np.square(z, out=out)
    np.reciprocal(out, out=out)
    return np.negative(out, out=out)


def _sigmoid_array(z, out=None):
    # 1 / (1 + exp(-z)) as (1 + tanh(z/2)) / 2: no overflow for large |z|
    out = np.multiply(z, np.asarray(0.5, dtype=z.dtype), out=out)
    np.tanh(out, out=out)
    out += np.asarray(1, dtype=out.dtype)
    out *= np.asarray(0.5, dtype=out.dtype)
    return out


def _dsigmoid_array(z, out=None):
    # s (1 - s) = (1 - tanh(z/2)^2) / 4
    out = np.multiply(z, np.asarray(0.5, dtype=z.dtype), out=out)
    np.tanh(out, out=out)
    np.square(out, out=out)
    np.subtract(np.asarray(1, dtype=out.dtype), out, out=out)
    out *= np.asarray(0.25, dtype=out.dtype)
    return out


def _dtanh_array(z, out=None):
    out = np.tanh(z, out=out)
    np.square(out, out=out)
    return np.subtract(np.asarray(1, dtype=out.dtype), out, out=out)


_GELU_C, _GELU_A = math.sqrt(2 / math.pi), 0.044715  # the tanh form's constants (Hendrycks & Gimpel 2016)
GELU_CONSTANTS = (_GELU_C, _GELU_A * _GELU_C, 3 * _GELU_A * _GELU_C)  # as the passes below use them (fused.c too)


def _gelu_tanh(z):
    """tanh(c (z + a z^3)), the tanh form's inner value, in z's dtype."""
    t = np.square(z)
    t *= np.asarray(_GELU_A * _GELU_C, dtype=t.dtype)
    t += np.asarray(_GELU_C, dtype=t.dtype)
    t *= z
    return np.tanh(t, out=t)


def _gelu_array(z, out=None):
    # z/2 (1 + tanh(c (z + a z^3))): PyTorch's GELU(approximate="tanh")
    t = _gelu_tanh(z)
    t += np.asarray(1, dtype=t.dtype)
    t *= np.asarray(0.5, dtype=t.dtype)
    return np.multiply(t, z, out=out)


def _dgelu_array(z, out=None):
    # (1 + t)/2 + z/2 (1 - t^2) c (1 + 3a z^2), t = tanh(c (z + a z^3))
    t = _gelu_tanh(z)
    u = np.square(z)
    u *= np.asarray(3 * _GELU_A * _GELU_C, dtype=u.dtype)
    u += np.asarray(_GELU_C, dtype=u.dtype)
    u *= z
    out = np.square(t, out=out)
    np.subtract(np.asarray(1, dtype=out.dtype), out, out=out)
    out *= u
    out += t
    out += np.asarray(1, dtype=out.dtype)
    out *= np.asarray(0.5, dtype=out.dtype)
    return out


def _gelu_scalar(v):
    return 0.5 * v * (1.0 + math.tanh(_GELU_C * (v + _GELU_A * v ** 3)))


def _dgelu_scalar(v):
    t = math.tanh(_GELU_C * (v + _GELU_A * v ** 3))
    return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * _GELU_C * (1.0 + 3.0 * _GELU_A * v * v)


def _tanh_scalar(v):
    return math.tanh(v)


def _sigmoid_scalar(v):
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))


def _exp_scalar(v):
    import math
    return math.exp(v)


def _log_scalar(v):
    import math
    return math.log(v) if v > 0 else float("-inf") if v == 0 else float("nan")


FUNCTIONS = {
    f.name: f for f in [
        Function("relu", _relu_array, lambda v: v if v >= 0 else 0.0, "drelu",
                 r"\operatorname{R}"),                                                      # eq. (20)
        Function("drelu", _drelu_array, lambda v: 1.0 if v > 0 else 0.5 if v == 0 else 0.0, None,
                 r"\operatorname{R}'"),                                                     # eq. (21)
        Function("exp", lambda z, out=None: np.exp(z, out=out), _exp_scalar, "exp", r"\exp"),
        Function("log", lambda z, out=None: np.log(z, out=out), _log_scalar, "recip", r"\log"),
        Function("recip", lambda z, out=None: np.reciprocal(z, out=out), lambda v: 1.0 / v, "drecip",
                 r"\operatorname{recip}"),
        Function("drecip", _drecip_array, lambda v: -1.0 / (v * v), None, r"\operatorname{recip}'"),
        # the zoo's functions (batch and layer normalisation, tanh and sigmoid activations)
        Function("sqrt", lambda z, out=None: np.sqrt(z, out=out), lambda v: v ** 0.5, "dsqrt", r"\sqrt"),
        Function("dsqrt", _dsqrt_array, lambda v: 0.5 / v ** 0.5, None, r"\sqrt{}'"),
        Function("rsqrt", _rsqrt_array, lambda v: v ** -0.5, "drsqrt", r"\operatorname{rsqrt}"),
        Function("drsqrt", _drsqrt_array, lambda v: -0.5 * v ** -1.5, None, r"\operatorname{rsqrt}'"),
        Function("square", lambda z, out=None: np.square(z, out=out), lambda v: v * v, "twice",
                 r"\operatorname{sq}"),
        Function("twice", _twice_array, lambda v: 2.0 * v, None, r"2"),
        Function("tanh", lambda z, out=None: np.tanh(z, out=out), _tanh_scalar, "dtanh",
                 r"\tanh"),
        Function("dtanh", _dtanh_array, lambda v: 1.0 - math.tanh(v) ** 2, None, r"\tanh'"),
        Function("sigmoid", _sigmoid_array, _sigmoid_scalar, "dsigmoid", r"\sigma"),
        Function("dsigmoid", _dsigmoid_array, lambda v: _sigmoid_scalar(v) * (1.0 - _sigmoid_scalar(v)), None,
                 r"\sigma'"),
        Function("gelu", _gelu_array, _gelu_scalar, "dgelu", r"\operatorname{GELU}"),    # tanh form
        Function("dgelu", _dgelu_array, _dgelu_scalar, None, r"\operatorname{GELU}'"),
        Function("id", _id_array, lambda v: v, None, r"\operatorname{id}"),
    ]
}


def register_function(name: str, array: Callable, scalar: Callable, derivative: str | None = None,
                      latex: str | None = None) -> Function:
    """Make `name(...)` callable in equations: `array(z, out=None)` evaluates it on arrays, `scalar(v)`
    in the reference loops, and `derivative` names the registered function that is its f' (so
    `backward: derive` and the load-time checks can use it).  `array` must work entry by entry: a
    large array is evaluated in two parts at once, one per thread (notation.runtime.parallel.elementwise).
    A name already taken is refused."""
    from ..language.errors import UserError
    if not (isinstance(name, str) and name.isidentifier()) or name in ("max", "delta"):
        raise UserError(f"a function's name must be a plain identifier other than max and delta, not {name!r}")
    if name in FUNCTIONS:
        raise UserError(f"function {name!r} is registered already; choose another name")
    FUNCTIONS[name] = Function(name, array, scalar, derivative, latex or rf"\operatorname{{{name}}}")
    return FUNCTIONS[name]
