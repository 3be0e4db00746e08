"""Worked solutions for the exercises of notebook 03 (rank and alpha)."""

import math

import torch

from lorakit import lowrank
from lorakit.exercises.nb03 import exercise_adapters


def solve_ex_3_1() -> float:
    """rsLoRA: scaling = α / √r = 16 / 8 = 2 (the paper's α/r would be 0.25)."""
    return 16 / math.sqrt(64)


def solve_ex_3_2() -> float:
    """Orthonormal input directions of each A (left-singular vectors), then the overlap."""
    A1, A2 = exercise_adapters()
    U1 = torch.linalg.svd(A1, full_matrices=False)[0]
    U2 = torch.linalg.svd(A2, full_matrices=False)[0]
    i, j = 2, 3
    return float((U1[:, :i].T @ U2[:, :j]).square().sum() / min(i, j))


def solve_ex_3_3():
    """Measure it: random Gaussian matrices, φ for each pair, the mean.

    What comes out is max(i, j)/d. Why: a random unit vector has expected squared overlap 1/d
    with any fixed unit vector, so E‖U1ᵀU2‖²_F = i·j/d, and φ divides by min(i, j).
    """

    def random_phi(d, i, j, trials, seed=0):
        gen = torch.Generator().manual_seed(seed)
        values = [
            lowrank.subspace_similarity(
                torch.randn(d, i, generator=gen, dtype=torch.float64),
                torch.randn(d, j, generator=gen, dtype=torch.float64),
                i,
                j,
            )
            for _ in range(trials)
        ]
        return sum(values) / trials

    return random_phi
