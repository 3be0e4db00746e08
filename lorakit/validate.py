"""Argument checks shared by every module: one rule, one message shape, one exception policy.

A wrong *type* raises ``TypeError``, a wrong *value* raises ``ValueError``, everywhere in the
package. ``True`` is refused where a count is expected: Python lets ``bool`` pass as an ``int``
(``True + True == 2``), but ``r=True`` is always a mistake, never a rank of 1.
"""

from __future__ import annotations

import math


def integer(value, name: str, low: int = 1, high: int | None = None) -> int:
    """``value`` itself if it is an int (not a bool) with ``low <= value <= high``; else raise.

    The message names the argument, what is allowed and what came, so a learner can fix the
    call without reading this code.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        allowed = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return value


def positive_int(value, name: str) -> int:
    """``integer(value, name, low=1)``: a count, a size, a number of steps."""
    return integer(value, name, low=1)


def number(value, name: str, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number (int or float, not a bool) inside the given bounds; else raise.

    ``low_open``/``high_open`` exclude the bound itself (``low=0, low_open=True`` means > 0).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or too_low or too_high:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
        allowed = " and ".join(s for s in (lo, hi) if s) or "finite"
        raise ValueError(f"{name} must be a finite number {allowed}, got {value}")
    return value
