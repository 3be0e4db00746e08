"""Checkers for notebook 01's exercises (solutions: notebooks/solutions/nb01.py)."""

import torch

from . import as_integer, as_number, close, report

# Exercise 1.3's spectrum: singular values of some ΔW, largest first.
EX_1_3_SINGULAR_VALUES = (5.0, 3.0, 2.0, 1.0, 0.5, 0.1)


def exercise_matrix() -> torch.Tensor:
    """Exercise 1.2's matrix: a fixed 8×6 Gaussian matrix (float64, seed 101)."""
    return torch.randn(8, 6, generator=torch.Generator().manual_seed(101), dtype=torch.float64)


def check_ex_1_1(answer) -> bool:
    """How many times fewer numbers a rank-8 update of a 4096×11008 up_proj needs (373.2×).
    Any number type; accepted within 0.5 % (373 passes)."""
    want = 4096 * 11008 / (8 * (4096 + 11008))
    answer = as_number(answer)
    if answer is None:
        return report(False, "", "expected a number (a ratio)")
    if close(answer, 4096 * 11008 / (8 * 4096), rel=5e-3) or close(
        answer, 4096 * 11008 / (8 * 11008), rel=5e-3
    ):
        return report(False, "", "A is m×r and B is r×n: count r·m + r·n, not r·m twice")
    if close(answer, 1 / want, rel=5e-3):
        return report(
            False, "", "you computed LoRA/full; the question asks full/LoRA (a number > 1)"
        )
    return report(
        close(answer, want, rel=5e-3),
        f"m·n / r(m+n) = {4096 * 11008:,} / {8 * 15104:,} = {want:.1f}×",
        f"{answer:.4g} is not m·n / (r(m+n)) with m=4096, n=11008, r=8",
    )


def check_ex_1_2(answer) -> bool:
    """Frobenius error of the best rank-2 approximation of exercise_matrix(). Any number type;
    accepted within 0.1 % (four significant digits)."""
    s = torch.linalg.svdvals(exercise_matrix())
    want = float(s[2:].square().sum().sqrt())
    answer = as_number(answer)
    if answer is None:
        return report(False, "", "expected one number")
    if close(answer, float(s[2]), rel=1e-3):
        return report(
            False, "", "σ3 is the spectral-norm error; the Frobenius error is sqrt(σ3² + σ4² + …)"
        )
    if close(answer, float(s[2:].sum()), rel=1e-3):
        return report(False, "", "square the tail singular values, sum, then take the square root")
    if close(answer, float(s[1:].square().sum().sqrt()), rel=1e-3):
        return report(False, "", "that is the rank-1 error: keep σ1 and σ2, the tail starts at σ3")
    return report(
        close(answer, want, rel=1e-3),
        f"‖M − M_2‖_F = sqrt(σ3² + … + σ6²) = {want:.4f} (Eckart–Young)",
        f"{answer:.6g} is not the Frobenius norm of M minus its best rank-2 approximation",
    )


def check_ex_1_3(answer) -> bool:
    """Smallest r whose top-r directions hold at least 90 % of ‖ΔW‖_F² (3). Any whole number (3.0 too)."""
    s2 = [v * v for v in EX_1_3_SINGULAR_VALUES]
    energies = [sum(s2[:r]) / sum(s2) for r in range(1, len(s2) + 1)]
    want = next(r for r, e in enumerate(energies, 1) if e >= 0.9)
    answer = as_integer(answer)
    if answer is None:
        return report(False, "", "expected a whole number (a rank)")
    s = EX_1_3_SINGULAR_VALUES
    plain = next(r for r in range(1, len(s) + 1) if sum(s[:r]) / sum(s) >= 0.9)
    if answer == plain and plain != want:
        return report(False, "", "energy is the sum of squared singular values, σ², not of σ")
    return report(
        answer == want,
        f"r = {want}: the top {want} directions hold {100 * energies[want - 1]:.1f} % "
        f"(r = {want - 1} holds only {100 * energies[want - 2]:.1f} %)",
        f"r = {answer} holds {100 * energies[min(max(answer, 1), len(s)) - 1]:.1f} % of the energy; "
        "you want the smallest r with at least 90 %",
    )


def check_ex_1_4(answer) -> bool:
    """A function ``gradient_rank(k)`` that measures the rank of a Linear(64, 48) weight gradient
    for a batch of k random rows: min(k, 48) for k = 1, 3, 7, 100 (exact)."""
    if not callable(answer):
        return report(False, "", f"expected a function gradient_rank(k) -> int, got {answer!r}")
    got = {}
    for k in (1, 3, 7, 100):
        try:
            torch.manual_seed(k)
            got[k] = as_integer(answer(k))
        except Exception as e:  # a learner's function may fail in any way: explain, don't raise
            return report(False, "", f"gradient_rank({k}) raised {type(e).__name__}: {e}")
        if got[k] is None:
            return report(False, "", f"gradient_rank({k}) must return a whole number (a rank)")
    want = {k: min(k, 48) for k in got}
    if got == want:
        return report(
            True,
            "rank = min(k, 48): the gradient Xᵀ G is a sum of k outer products, one per "
            "input row. A fine-tuning run adds up many such steps over thousands of rows, "
            "so nothing forces ΔW to be low rank; that it concentrates anyway (section 6) "
            "is a property of the data and the model, which LoRA bets on.",
            "",
        )
    if all(v == 48 for v in got.values()):
        return report(False, "", "every answer is 48: was the batch really k rows (shape (k, 64))?")
    if all(v == 1 for v in got.values()):
        return report(
            False, "", "every answer is 1: did you sum the batch before the layer, or use one row?"
        )
    return report(
        False,
        "",
        f"measured {got}; expected {want}. Use matrix_rank on layer.weight.grad "
        "after loss.backward() for a batch of shape (k, 64).",
    )
