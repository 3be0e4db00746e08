"""Worked solutions for the exercises of notebook 02 (LoRA from scratch)."""

import math


def solve_ex_2_1() -> int:
    """32 layers × (q_proj, v_proj) × r (m + n), with m = n = 4096 and r = 8."""
    layers, targets, r, d = 32, 2, 8, 4096
    return layers * targets * r * (d + d)


def solve_ex_2_2():
    """nn.Linear keeps W0ᵀ (out×in); A B is in×out, so transpose it before adding."""

    def merge(W0, A, B, scale):
        return W0 + scale * (A @ B).T

    return merge


def solve_ex_2_3():
    """PEFT stores its two matrices as nn.Linear weights (out×in): Aᵀ is r×in, Bᵀ is out×r."""

    def to_peft(A, B):
        return A.T.contiguous(), B.T.contiguous()

    return to_peft


def solve_ex_2_4() -> float:
    """rsLoRA: α/√r."""
    return 16 / math.sqrt(64)
