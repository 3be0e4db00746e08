"""Checkers for notebook 03's exercises (solutions: notebooks/solutions/nb03.py)."""

import math

import torch

from . import report


def exercise_adapters() -> tuple[torch.Tensor, torch.Tensor]:
    """Exercise 3.2's two adapters' A matrices: 16×4 and 16×6 (float64, seeds 31 and 32).

    They share one planted input direction, as two trained adapters of the same layer tend to.
    """
    g1, g2 = torch.Generator().manual_seed(31), torch.Generator().manual_seed(32)
    shared = torch.randn(16, 1, generator=torch.Generator().manual_seed(33), dtype=torch.float64)
    A1 = torch.randn(16, 4, generator=g1, dtype=torch.float64) + 3 * shared
    A2 = torch.randn(16, 6, generator=g2, dtype=torch.float64) + 3 * shared
    return A1, A2


def _phi(U1: torch.Tensor, U2: torch.Tensor, i: int, j: int) -> float:
    return float((U1[:, :i].T @ U2[:, :j]).square().sum() / min(i, j))


def _number(answer) -> bool:
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()
    return isinstance(answer, (int, float)) and not isinstance(answer, bool) and math.isfinite(answer)


def check_ex_3_1(answer) -> bool:
    """The rsLoRA scale for alpha = 16, r = 64."""
    want = 16 / math.sqrt(64)
    if not _number(answer):
        return report(False, "", f"expected a float (the scale), got {answer!r}")
    answer = float(answer)
    if abs(answer - 16 / 64) < 1e-9:
        return report(False, "", "α/r = 0.25 is the paper's scale; rsLoRA divides by √r instead")
    return report(abs(answer - want) < 1e-9, f"α/√r = 16/8 = {want:g}: the update keeps its size as r grows",
                  f"{answer:g} is not α/√r for α = 16, r = 64")


def check_ex_3_2(answer) -> bool:
    """φ(A1, A2, i=2, j=3) for exercise_adapters()."""
    A1, A2 = exercise_adapters()
    U1 = torch.linalg.svd(A1, full_matrices=False)[0]
    U2 = torch.linalg.svd(A2, full_matrices=False)[0]
    want = _phi(U1, U2, 2, 3)
    if not _number(answer):
        return report(False, "", f"expected a float in [0, 1], got {answer!r}")
    answer = float(answer)
    if abs(answer - want * 2) < 1e-6:
        return report(False, "", "divide ‖U1ᵀU2‖²_F by min(i, j) = 2 so that φ lies in [0, 1]")
    Q1, Q2 = A1 / A1.norm(dim=0), A2 / A2.norm(dim=0)
    if abs(answer - _phi(Q1, Q2, 2, 3)) < 1e-6 or abs(answer - _phi(A1, A2, 2, 3)) < 1e-6:
        return report(False, "", "use the left-singular vectors U of each A (torch.linalg.svd), "
                                 "not A's own columns: they are not orthonormal")
    return report(abs(answer - want) < 1e-6,
                  f"φ = {want:.4f}: the shared top direction overlaps almost fully, the second barely",
                  f"{answer:.6g} is not ‖U1[:, :2]ᵀ U2[:, :3]‖²_F / 2")


def check_ex_3_3(answer) -> bool:
    """Expected φ of two random subspaces: d = 128, i = 8, j = 64."""
    want = 64 / 128
    if not _number(answer):
        return report(False, "", f"expected a float, got {answer!r}")
    answer = float(answer)
    if abs(answer - 8 * 64 / 128) < 1e-6:
        return report(False, "", "E‖U1ᵀU2‖²_F = i·j/d = 4 is right, but φ divides it by min(i, j) = 8")
    if abs(answer - 8 / 128) < 1e-6:
        return report(False, "", "i·j/d / min(i, j) = max(i, j)/d, not min(i, j)/d")
    return report(abs(answer - want) < 1e-3,
                  "max(i, j)/d = 64/128 = 0.5: a 64-dim random subspace already holds half of any direction",
                  f"{answer:.4g} is not the expected φ of random subspaces (hint: E‖U1ᵀU2‖²_F = i·j/d)")
