"""Argument checks shared by every module: one rule, one message shape, one exception policy.

A wrong *type* raises ``TypeError``, a wrong *value* raises ``ValueError``, everywhere in the
package. ``True`` is refused where a count is expected: Python lets ``bool`` pass as an ``int``
(``True + True == 2``), but ``r=True`` is always a mistake, never a rank of 1.
"""

from __future__ import annotations

import math

import torch


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


def number(
    value,
    name: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
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


# ---------------------------------------------------------------- matrices (lowrank, notebook 01)


def matrix(W, name: str = "W") -> torch.Tensor:
    """A non-empty real 2-D tensor, as a float64 copy (for exact linear algebra); else raise."""
    if not isinstance(W, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(W).__name__}")
    if W.dim() != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got a tensor of shape {tuple(W.shape)}")
    if W.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(W.shape)}")
    if W.is_complex():
        raise TypeError(f"{name} must be a real matrix, got dtype {W.dtype}")
    return W.detach().to(torch.float64)


def rank(r, m: int, n: int) -> int:
    """``r`` in 1..min(m, n): a rank-0 update is no update, and no m×n matrix has a higher rank."""
    k = min(m, n)
    return integer(r, f"r (at most min(m, n) = {k} for a {m}×{n} matrix)", 1, k)


def singular_value_list(s) -> torch.Tensor:
    """Singular values as ``svdvals`` returns them (1-D, σ1 ≥ σ2 ≥ … ≥ 0), in float64; else raise."""
    if not isinstance(s, torch.Tensor):
        raise TypeError(f"singular values must be a torch.Tensor, got {type(s).__name__}")
    if s.dim() != 1 or s.numel() == 0:
        raise ValueError(
            f"singular values must be a non-empty 1-D tensor, got shape {tuple(s.shape)}"
        )
    s = s.detach().to(torch.float64)
    if (s < 0).any() or (s[1:] > s[:-1]).any():
        raise ValueError("singular values must be non-negative and sorted in decreasing order")
    return s


# ---------------------------------------------------------------- a LoRA layer's base (lora, notebook 02)


def lora_base(name: str, base, r: int) -> None:
    """What a LoRALinear needs of its base: a module with integer in/out features and at least
    ``r`` of each (a rank-r update needs r directions on both sides). LoRA on LoRA cannot
    happen: ``inject_lora`` refuses a model that already has LoRA layers."""
    in_features = getattr(base, "in_features", None)
    out_features = getattr(base, "out_features", None)
    if (
        not isinstance(base, torch.nn.Module)
        or not isinstance(in_features, int)
        or not isinstance(out_features, int)
    ):
        raise TypeError(
            f"{name}: base must be an nn.Module with integer in_features and out_features "
            f"(e.g. nn.Linear), got {type(base).__name__}"
        )
    most = min(in_features, out_features)
    if r > most:
        raise ValueError(
            f"{name}: r must be between 1 and min(in, out) = {most} "
            f"(layer {in_features}×{out_features}), got {r}"
        )
