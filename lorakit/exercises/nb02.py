"""Checkers for the exercises of notebook 02 (LoRA from scratch).

Each ``check_ex_2_M(answer)`` prints right/wrong and why, returns a bool, and never raises.
"""

from __future__ import annotations

import math

import torch

from . import report


def _as_int(answer):
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int):
        return answer
    if isinstance(answer, float) and answer.is_integer():
        return int(answer)
    return None


def check_ex_2_1(answer) -> bool:
    """Trainable LoRA parameters for r=8 on q_proj and v_proj of a Llama-7B-shaped model
    (32 layers, d_model = 4096): 32 layers × 2 matrices × r (4096 + 4096) = 4,194,304."""
    right = 32 * 2 * 8 * (4096 + 4096)
    n = _as_int(answer)
    if n is None:
        return report(False, "", f"expected an int (a parameter count), got {answer!r}")
    if n == right:
        return report(True, f"{n:,} trainable parameters = 32 × 2 × r(m + n), "
                      f"{100 * n / 6.74e9:.3f} % of 6.74 B.", "")
    if n == right // 2:
        return report(False, "", f"{n:,} counts one of the two targets; LoRA goes on q_proj AND v_proj.")
    if n == 32 * 2 * 4096 * 4096:
        return report(False, "", f"{n:,} is the full m·n of the targeted matrices, not r(m + n).")
    return report(False, "", f"{n:,} is not it. Each adapted matrix adds A (m×r) and B (r×n).")


def _probe_merge(fn):
    gen = torch.Generator().manual_seed(0)
    W0 = torch.randn(6, 10, generator=gen)  # nn.Linear weight: out×in
    A, B = torch.randn(10, 3, generator=gen), torch.randn(3, 6, generator=gen)
    return fn(W0.clone(), A, B, 0.5), W0 + 0.5 * (A @ B).T


def check_ex_2_2(answer) -> bool:
    """A function ``merge(W0, A, B, scale)`` returning the merged ``nn.Linear`` weight (out×in):
    ``W0 + scale · (A B)ᵀ``."""
    if not callable(answer):
        return report(False, "", f"expected a function merge(W0, A, B, scale), got {answer!r}")
    try:
        got, want = _probe_merge(answer)
    except Exception as e:  # a learner's function may fail in any way: explain, don't raise
        return report(False, "", f"your function raised {type(e).__name__}: {e}. "
                      "Hint: nn.Linear stores W0ᵀ (out×in), while A B is in×out.")
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        return report(False, "", f"expected a tensor of shape {tuple(want.shape)} (out×in), got {shape}")
    if torch.allclose(got, want, atol=1e-5):
        return report(True, "merged = W0 + scale·(A B)ᵀ, in nn.Linear's out×in layout.", "")
    gen = torch.Generator().manual_seed(0)
    W0 = torch.randn(6, 10, generator=gen)
    A, B = torch.randn(10, 3, generator=gen), torch.randn(3, 6, generator=gen)
    if torch.allclose(got, W0 + (A @ B).T, atol=1e-5):
        return report(False, "", "you left out the scale α/r (it was 0.5 in the probe).")
    return report(False, "", "the values are wrong: compare with W0 + scale * (A @ B).T")


def check_ex_2_3(answer) -> bool:
    """A function ``to_peft(A, B)`` returning ``(lora_A_weight, lora_B_weight)`` = ``(Aᵀ, Bᵀ)``."""
    if not callable(answer):
        return report(False, "", f"expected a function to_peft(A, B), got {answer!r}")
    gen = torch.Generator().manual_seed(1)
    A, B = torch.randn(12, 4, generator=gen), torch.randn(4, 7, generator=gen)
    try:
        got = answer(A.clone(), B.clone())
        a, b = got
    except Exception as e:
        return report(False, "", f"expected a pair (lora_A_weight, lora_B_weight); got an error "
                      f"{type(e).__name__}: {e}")
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return report(False, "", "both entries must be tensors")
    if tuple(a.shape) != (4, 12) or tuple(b.shape) != (7, 4):
        return report(False, "", f"shapes {tuple(a.shape)}, {tuple(b.shape)}: PEFT's lora_A.weight is r×in "
                      "= (4, 12) and lora_B.weight is out×r = (7, 4) (nn.Linear stores out×in).")
    if torch.equal(a, A.T) and torch.equal(b, B.T):
        return report(True, "lora_A.weight = Aᵀ and lora_B.weight = Bᵀ; PEFT computes x Aᵀᵀ Bᵀᵀ = x A B.", "")
    return report(False, "", "right shapes, wrong values: use the transposes A.T and B.T (no reshape).")


def check_ex_2_4(answer) -> bool:
    """The rsLoRA scale for α = 16, r = 64: α/√r = 2.0 (the paper's α/r would be 0.25)."""
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return report(False, "", f"expected a number, got {answer!r}")
    if math.isclose(value, 2.0, rel_tol=1e-6):
        return report(True, "α/√r = 16/8 = 2.0, eight times the α/r = 0.25 of plain LoRA.", "")
    if math.isclose(value, 0.25, rel_tol=1e-6):
        return report(False, "", "0.25 is α/r (plain LoRA); rsLoRA divides by √r.")
    return report(False, "", f"{value:.4g} is not α/√r for α = 16, r = 64.")
