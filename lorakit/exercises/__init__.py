"""Self-checking exercises, one module per notebook (``nb01`` for 01_..., and so on).

Each ``check_ex_N_M(answer)`` prints whether the learner's answer is right and why, and returns
True or False. It never raises on a wrong or missing answer, so a notebook with exercises left
blank still runs top to bottom. Worked solutions live in ``notebooks/solutions/nbNN.py``.

The checkers share one voice and one reading of answers (the helpers below): a number may be
any numeric type (int, float, a NumPy scalar, a one-element tensor or array; bools are not
numbers), a list of numbers may be any sequence (list, tuple, array, tensor), and each checker
states its tolerance in its docstring and in the exercise's text.
"""

from __future__ import annotations

import math
import numbers


def report(ok: bool, right: str, wrong: str) -> bool:
    """Print a one-line verdict and return ``ok``: the shared voice of every checker."""
    print(("Correct: " + right) if ok else ("Not yet: " + wrong))
    return bool(ok)


def as_number(answer) -> float | None:
    """``answer`` as a finite float if it is one number of any numeric type, else None.

    Accepts int, float, NumPy scalars and one-element tensors or arrays; rejects bools, strings
    (a number typed as text is a slip worth pointing out), None and non-finite values.
    """
    if isinstance(answer, bool) or answer is None or isinstance(answer, (str, bytes)):
        return None
    if hasattr(answer, "numel") and callable(answer.numel):  # a torch tensor
        if answer.numel() != 1 or answer.dtype == __import__("torch").bool:
            return None
        answer = answer.item()
    elif (
        hasattr(answer, "size")
        and hasattr(answer, "item")
        and not isinstance(answer, numbers.Number)
    ):
        if (
            getattr(answer, "size", 0) != 1
            or getattr(getattr(answer, "dtype", None), "kind", "") == "b"
        ):
            return None  # a NumPy array: one element only
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
        return None
    value = float(answer)
    return value if math.isfinite(value) else None


def as_integer(answer) -> int | None:
    """``answer`` as an int if it is a whole number of any numeric type (3, 3.0, a NumPy int),
    else None. 2.7 is not a whole number: it is rejected, never truncated."""
    value = as_number(answer)
    if value is None or not value.is_integer():
        return None
    return int(value)


def as_numbers(answer, length: int | None = None) -> list[float] | None:
    """``answer`` as a list of floats if it is a sequence of numbers (list, tuple, array,
    tensor, of ``length`` entries when given), else None."""
    if (
        answer is None
        or isinstance(answer, (str, bytes, bool))
        or isinstance(answer, numbers.Number)
    ):
        return None
    if hasattr(answer, "tolist") and callable(answer.tolist):  # a tensor or array
        answer = answer.tolist()
        if not isinstance(answer, list):
            return None
    try:
        values = [as_number(v) for v in answer]
    except TypeError:
        return None
    if any(v is None for v in values) or (length is not None and len(values) != length):
        return None
    return values


def close(value: float, want: float, *, rel: float = 0.0, abs: float = 0.0) -> bool:
    """``value`` within ``abs`` or within ``rel`` (relative to ``want``) of ``want``."""
    return math.isclose(value, want, rel_tol=rel, abs_tol=abs)


def tolerance_below(right: float, wrongs, rel: float) -> float:
    """A relative tolerance of at most ``rel`` that stays below every known wrong answer.

    A checker that names a wrong answer (the root gathered twice, a 16-bit base, ...) must refuse
    it: its tolerance is at most half the relative gap between ``right`` and the nearest of
    ``wrongs``, so no value accepted as right is closer to a named mistake than to the answer.
    """
    gaps = [abs(w - right) / abs(right) for w in wrongs if right and w != right]
    return min([rel] + [gap / 2 for gap in gaps])
