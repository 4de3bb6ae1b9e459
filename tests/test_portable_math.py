"""Runs give the same bits on every machine: simcost's exp, log, cos and power are the C library's (as
Python's math module gives them), never numpy's CPU-dispatched loops, which on AVX-512 machines
differ in the last bit for some inputs (the golden Mooncake run drifted between two VMs)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from simcost import portable_math as pmath

PACKAGE = Path(pmath.__file__).resolve().parent
# numpy's transcendental ufuncs with AVX-512 loops of their own (numpy 2.x's __cpu_targets_info__);
# sqrt, the arithmetic and the comparisons are exact everywhere
DISPATCHED = ("exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "power", "float_power", "sin", "cos",
              "tan", "sinh", "cosh", "tanh", "arcsin", "arccos", "arctan", "arctan2", "arcsinh", "arccosh",
              "arctanh", "cbrt")
CALL = re.compile(r"\bnp\.(" + "|".join(DISPATCHED) + r")\(")


def test_no_simcost_source_calls_numpys_dispatched_transcendentals():
    found = [f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}"
             for path in sorted(PACKAGE.rglob("*.py")) if path.name != "portable_math.py"  # (its special values)
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if CALL.search(line.split("#", 1)[0])]
    assert not found, "use simcost.portable_math (or math) instead:\n" + "\n".join(found)


@pytest.mark.parametrize(("ours", "libm", "low", "high"), [(pmath.exp, math.exp, -700.0, 700.0),
                                                       (pmath.log, math.log, 1e-300, 1e300),
                                                       (pmath.cos, math.cos, -1e4, 1e4)])
def test_each_value_is_the_c_librarys(ours, libm, low, high):
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.uniform(low, high, 5000), rng.uniform(-1.0, 1.0, 5000) * 50 + 50.0 + 1e-9])
    x = x.clip(low, high).reshape(2, 5000)
    got = ours(x)
    assert got.shape == x.shape and got.dtype == np.float64
    assert got.tobytes() == np.array([[libm(v) for v in row] for row in x.tolist()]).tobytes()
    assert isinstance(ours(2.5), np.float64) and ours(2.5) == libm(2.5)


def test_special_values_are_numpys():
    x = np.array([-np.inf, -1.0, 0.0, 1e3, np.inf, np.nan])
    with np.errstate(all="ignore"):
        for ours, theirs in ((pmath.exp, np.exp), (pmath.log, np.log), (pmath.cos, np.cos)):
            np.testing.assert_array_equal(ours(x), theirs(x))


def test_power_is_the_c_librarys_and_broadcasts():
    rng = np.random.default_rng(11)
    base, exponent = rng.uniform(0.0, 100.0, (3, 1000)), rng.uniform(-5.0, 5.0, 1000)
    got = pmath.power(base, exponent)
    assert got.shape == (3, 1000)
    want = np.array([[math.pow(b, e) for b, e in zip(row, exponent.tolist())] for row in base.tolist()])
    assert got.tobytes() == want.tobytes()
    assert pmath.power(0.99, np.arange(4.0)).tolist() == [math.pow(0.99, k) for k in range(4)]
    with np.errstate(all="ignore"):  # what the C library refuses comes back as numpy's value
        x, y = np.array([0.0, -8.0, 1e300, 2.0]), np.array([-1.0, 1.0 / 3.0, 2.0, 0.5])
        np.testing.assert_array_equal(pmath.power(x, y), np.power(x, y))
