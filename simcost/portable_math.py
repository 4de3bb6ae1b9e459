"""exp, log, cos and power that give the same bits on every machine (bottom layer: imports nothing from
simcost).

numpy picks its transcendental loops by the CPU it runs on: with AVX-512 (x86-64-v4), np.exp,
np.log, np.cos, np.power and their kin use SIMD approximations that differ from the C library's
results in the last bit for some inputs; on other CPUs they are the C library's. A step time
interpolated in log space then differs by an ulp between two machines, and a run that is
otherwise bit-identical drifts: the golden Mooncake run's requests.csv did, between an AVX-512
VM and an AVX2 one. These go through Python's math module, that is the C library, which gives
the same results on every x86-64 machine with FMA (the kind numpy's AVX2 loops need too). numba
compiles a kernel's math.exp or np.exp to a call of the same C function, unless Intel's SVML
(the icc_rt package, which simcost does not install) lets it vectorise them. simcost calls
numpy's versions nowhere (tests/test_portable_math.py checks the sources); note that `a ** b` on
a float array is np.power (squares and square roots aside), so such powers use `power` here.

Special values are numpy's: exp overflows to inf, log(0) is -inf and log(x < 0) NaN, cos(inf)
NaN, a power the C library refuses (0 ** -1, a negative base to a fractional power) is numpy's
inf or NaN, all without a warning. Arrays are mapped element by element (~0.1 us each): every caller
has at most a few thousand values, or pays it once per run (ServeGen's arrival gaps).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _log(x: float) -> float:
    if x > 0:
        return math.log(x)
    return -math.inf if x == 0 else math.nan  # (NaN > 0 is False: NaN comes back as NaN)


def _cos(x: float) -> float:
    return math.cos(x) if math.isfinite(x) else math.nan


def _mapped(f: Callable[[float], float], x) -> np.ndarray:
    """f of each value, shaped as x; a scalar (or 0-d array) gives a numpy float, as numpy does."""
    values = np.asarray(x, dtype=np.float64)
    if values.ndim == 0:
        return np.float64(f(float(values)))  # type: ignore[return-value]
    out = np.fromiter(map(f, values.ravel().tolist()), dtype=np.float64, count=values.size)
    return out.reshape(values.shape)


def exp(x) -> np.ndarray:
    """e**x elementwise."""
    return _mapped(_exp, x)


def log(x) -> np.ndarray:
    """The natural logarithm elementwise."""
    return _mapped(_log, x)


def cos(x) -> np.ndarray:
    """The cosine elementwise (radians)."""
    return _mapped(_cos, x)


def _power(x: float, y: float) -> float:
    try:
        return math.pow(x, y)
    except (ValueError, OverflowError):  # numpy's inf or NaN for these: the same on every CPU
        with np.errstate(all="ignore"):
            return float(np.power(np.float64(x), np.float64(y)))


def power(x, y) -> np.ndarray:
    """x ** y elementwise, broadcast as numpy does."""
    xs, ys = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    if xs.ndim == 0:
        return np.float64(_power(float(xs), float(ys)))  # type: ignore[return-value]
    out = np.fromiter(map(_power, xs.ravel().tolist(), ys.ravel().tolist()), dtype=np.float64, count=xs.size)
    return out.reshape(xs.shape)
