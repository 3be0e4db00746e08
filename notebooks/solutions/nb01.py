"""Worked solutions for the exercises of notebook 01 (low-rank updates)."""

import torch

from lorakit.exercises.nb01 import EX_1_3_SINGULAR_VALUES, exercise_matrix


def solve_ex_1_1() -> float:
    """A dense ΔW has m·n numbers; A (m×r) and B (r×n) have r(m + n)."""
    m, n, r = 4096, 11008, 8
    return m * n / (r * (m + n))


def solve_ex_1_2() -> float:
    """Eckart–Young: the error is the norm of the singular values you dropped."""
    s = torch.linalg.svdvals(exercise_matrix())
    return float(s[2:].square().sum().sqrt())


def solve_ex_1_3() -> int:
    """Cumulative sum of σ², divided by the total; first r where it reaches 0.9."""
    s2 = torch.tensor(EX_1_3_SINGULAR_VALUES).square()
    energy = s2.cumsum(0) / s2.sum()
    return int((energy >= 0.9).nonzero()[0]) + 1


def solve_ex_1_4():
    """One step's gradient is Xᵀ G: a sum of k outer products x_i g_iᵀ (one per input row), so
    its rank is at most k (and at most min(in, out) = 48). Measured, not assumed."""

    def gradient_rank(k: int) -> int:
        layer = torch.nn.Linear(64, 48, bias=False)
        x, target = torch.randn(k, 64), torch.randn(k, 48)
        ((layer(x) - target) ** 2).sum().backward()
        return int(torch.linalg.matrix_rank(layer.weight.grad))

    return gradient_rank
