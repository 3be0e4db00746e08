"""Checkers for notebook 01's exercises (solutions: notebooks/solutions/nb01.py)."""

import math

import torch

from . import report

# Exercise 1.3's spectrum: singular values of some ΔW, largest first.
EX_1_3_SINGULAR_VALUES = (5.0, 3.0, 2.0, 1.0, 0.5, 0.1)


def exercise_matrix() -> torch.Tensor:
    """Exercise 1.2's matrix: a fixed 8×6 Gaussian matrix (float64, seed 101)."""
    return torch.randn(8, 6, generator=torch.Generator().manual_seed(101), dtype=torch.float64)


def _number(answer) -> bool:
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()
    return isinstance(answer, (int, float)) and not isinstance(answer, bool) and math.isfinite(answer)


def check_ex_1_1(answer) -> bool:
    """How many times fewer numbers a rank-8 update of a 4096×11008 up_proj needs."""
    want = 4096 * 11008 / (8 * (4096 + 11008))
    if not _number(answer):
        return report(False, "", f"expected a float (a ratio), got {answer!r}")
    answer = float(answer)
    if abs(answer - 4096 * 11008 / (8 * 4096)) < 1e-3 * want * 3:
        return report(False, "", "A is m×r and B is r×n: count r·m + r·n, not r·m twice")
    if abs(answer - 1 / want) < 1e-6:
        return report(False, "", "you computed LoRA/full; the question asks full/LoRA (a number > 1)")
    return report(abs(answer - want) <= 1e-3 * want,
                  f"m·n / r(m+n) = {4096 * 11008:,} / {8 * 15104:,} = {want:.1f}×",
                  f"{answer:.4g} is not m·n / (r(m+n)) with m=4096, n=11008, r=8")


def check_ex_1_2(answer) -> bool:
    """Frobenius error of the best rank-2 approximation of exercise_matrix()."""
    s = torch.linalg.svdvals(exercise_matrix())
    want = float(s[2:].square().sum().sqrt())
    if not _number(answer):
        return report(False, "", f"expected a float, got {answer!r}")
    answer = float(answer)
    if abs(answer - float(s[2])) < 1e-6:
        return report(False, "", "σ3 is the spectral-norm error; the Frobenius error is sqrt(σ3² + σ4² + …)")
    if abs(answer - float(s[2:].sum())) < 1e-6:
        return report(False, "", "square the tail singular values, sum, then take the square root")
    if abs(answer - float(s[1:].square().sum().sqrt())) < 1e-6:
        return report(False, "", "that is the rank-1 error: keep σ1 and σ2, the tail starts at σ3")
    return report(abs(answer - want) < 1e-6 * max(1.0, want),
                  f"‖M − M_2‖_F = sqrt(σ3² + … + σ6²) = {want:.4f} (Eckart–Young)",
                  f"{answer:.6g} is not the Frobenius norm of M minus its best rank-2 approximation")


def check_ex_1_3(answer) -> bool:
    """Smallest r whose top-r directions hold at least 90 % of ‖ΔW‖_F²."""
    s2 = [v * v for v in EX_1_3_SINGULAR_VALUES]
    energies = [sum(s2[:r]) / sum(s2) for r in range(1, len(s2) + 1)]
    want = next(r for r, e in enumerate(energies, 1) if e >= 0.9)
    if isinstance(answer, bool) or not isinstance(answer, int):
        return report(False, "", f"expected an int (a rank), got {answer!r}")
    s = EX_1_3_SINGULAR_VALUES
    plain = next(r for r in range(1, len(s) + 1) if sum(s[:r]) / sum(s) >= 0.9)
    if answer == plain and plain != want:
        return report(False, "", "energy is the sum of squared singular values, σ², not of σ")
    return report(answer == want,
                  f"r = {want}: the top {want} directions hold {100 * energies[want - 1]:.1f} % "
                  f"(r = {want - 1} holds only {100 * energies[want - 2]:.1f} %)",
                  f"r = {answer} holds {100 * energies[min(max(answer, 1), len(s)) - 1]:.1f} % of the energy; "
                  "you want the smallest r with at least 90 %")
