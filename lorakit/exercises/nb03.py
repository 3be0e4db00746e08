"""Checkers for notebook 03's exercises (solutions: notebooks/solutions/nb03.py)."""

import math

import torch

from . import as_number, close, report


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


def check_ex_3_1(answer) -> bool:
    """The rsLoRA scaling for alpha = 16, r = 64: 2.0. Any number type; accepted within 0.5 %."""
    want = 16 / math.sqrt(64)
    answer = as_number(answer)
    if answer is None:
        return report(False, "", "expected one number (the scaling)")
    if close(answer, 16 / 64, rel=5e-3):
        return report(False, "", "α/r = 0.25 is the paper's scaling; rsLoRA divides by √r instead")
    return report(
        close(answer, want, rel=5e-3),
        f"α/√r = 16/8 = {want:g}: the update keeps its size as r grows",
        f"{answer:g} is not α/√r for α = 16, r = 64",
    )


def check_ex_3_2(answer) -> bool:
    """φ(A1, A2, i=2, j=3) for exercise_adapters(). Any number type; accepted within 1e-4."""
    A1, A2 = exercise_adapters()
    U1 = torch.linalg.svd(A1, full_matrices=False)[0]
    U2 = torch.linalg.svd(A2, full_matrices=False)[0]
    want = _phi(U1, U2, 2, 3)
    answer = as_number(answer)
    if answer is None:
        return report(False, "", "expected one number in [0, 1]")
    if abs(answer - want * 2) < 1e-4:
        return report(False, "", "divide ‖U1ᵀU2‖²_F by min(i, j) = 2 so that φ lies in [0, 1]")
    Q1, Q2 = A1 / A1.norm(dim=0), A2 / A2.norm(dim=0)
    if abs(answer - _phi(Q1, Q2, 2, 3)) < 1e-4 or abs(answer - _phi(A1, A2, 2, 3)) < 1e-4:
        return report(
            False,
            "",
            "use the left-singular vectors U of each A (torch.linalg.svd), "
            "not A's own columns: they are not orthonormal",
        )
    return report(
        abs(answer - want) < 1e-4,
        f"φ = {want:.4f}: the shared top direction overlaps almost fully, the second barely",
        f"{answer:.6g} is not ‖U1[:, :2]ᵀ U2[:, :3]‖²_F / 2",
    )


def check_ex_3_3(answer) -> bool:
    """A function ``random_phi(d, i, j, trials, seed)`` returning the mean φ(i, j) of random Gaussian
    subspaces, called with 200 trials; each mean must lie within 0.03 of max(i, j)/d (about 4
    standard errors); single draws with two seeds must differ (a measurement, not a formula)."""
    if not callable(answer):
        return report(
            False,
            "",
            f"expected a function random_phi(d, i, j, trials, seed) -> float, got {answer!r}",
        )
    cases = [(16, 2, 4), (32, 3, 3), (24, 6, 2)]
    measured = {}
    for d, i, j in cases:
        try:
            value = as_number(answer(d, i, j, 200, 0))
        except Exception as e:  # a learner's function may fail in any way: explain, don't raise
            return report(
                False, "", f"random_phi({d}, {i}, {j}, 200, 0) raised {type(e).__name__}: {e}"
            )
        if value is None:
            return report(
                False, "", f"random_phi({d}, {i}, {j}, 200, 0) must return one number (a mean φ)"
            )
        measured[(d, i, j)] = value
    try:
        one_a, one_b = as_number(answer(16, 2, 4, 1, 1)), as_number(answer(16, 2, 4, 1, 2))
    except Exception as e:
        return report(False, "", f"random_phi(16, 2, 4, 1, seed) raised {type(e).__name__}: {e}")
    if one_a is not None and one_a == one_b:
        return report(
            False,
            "",
            "one draw with seed 1 and one with seed 2 gave the same value: is it measured "
            "(random matrices from the seeded generator), or a formula?",
        )
    for (d, i, j), value in measured.items():
        want, tol = max(i, j) / d, 0.03
        if abs(value - want) > tol:
            if abs(value - min(i, j) / d) <= tol:
                return report(
                    False,
                    "",
                    f"for (d, i, j) = {(d, i, j)} you get {value:.4f} = min(i, j)/d: did you "
                    "divide ‖U1ᵀU2‖² by max(i, j) instead of min(i, j)?",
                )
            if abs(value - i * j / d) <= tol:
                return report(
                    False,
                    "",
                    f"for {(d, i, j)} you get {value:.4f} ≈ i·j/d: that is ‖U1ᵀU2‖²_F, "
                    "φ divides it by min(i, j)",
                )
            return report(
                False,
                "",
                f"for (d, i, j) = {(d, i, j)} the mean φ is {value:.4f}, expected about "
                f"{want:.4f} (± {tol}); orthonormalise each random matrix (QR or SVD) "
                "before comparing",
            )
    return report(
        True,
        "mean φ(i, j) ≈ max(i, j)/d: each of the i·j squared overlaps of random unit vectors "
        "averages 1/d, and φ divides their sum by min(i, j). So trained adapters' φ must be "
        "compared with max(i, j)/d, not with 0.",
        "",
    )
