"""Worked solutions for the exercises of notebook 03 (rank and alpha)."""

import math

import torch

from lorakit.exercises.nb03 import exercise_adapters


def solve_ex_3_1() -> float:
    """rsLoRA: scale = α / √r."""
    return 16 / math.sqrt(64)


def solve_ex_3_2() -> float:
    """Orthonormal input directions of each A (left-singular vectors), then the overlap."""
    A1, A2 = exercise_adapters()
    U1 = torch.linalg.svd(A1, full_matrices=False)[0]
    U2 = torch.linalg.svd(A2, full_matrices=False)[0]
    i, j = 2, 3
    return float((U1[:, :i].T @ U2[:, :j]).square().sum() / min(i, j))


def solve_ex_3_3() -> float:
    """Each of the i·j squared overlaps of random unit vectors in R^d has mean 1/d:
    E‖U1ᵀU2‖²_F = i·j/d, divided by min(i, j) gives max(i, j)/d."""
    d, i, j = 128, 8, 64
    return i * j / d / min(i, j)
