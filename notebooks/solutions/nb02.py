"""Worked solutions for the exercises of notebook 02 (LoRA from scratch)."""

import torch


def solve_ex_2_1():
    """Write y = x W0 + s·(x A) B and differentiate one factor at a time, using ∂(xM)/∂M = xᵀ(·):

    ∂L/∂B = s·(x A)ᵀ G          (r×n: the LoRA path's input to B is x A)
    ∂L/∂A = s·xᵀ (G Bᵀ)         (m×r: the gradient flows back through B first)
    ∂L/∂x = G W0ᵀ + s·G Bᵀ Aᵀ   (k×m: both paths reach x)

    ∂L/∂A contains B, so at initialisation (B = 0) A gets no gradient: only B moves at first.
    """

    def lora_backward(x, W0, A, B, s, G):
        grad_B = s * (x @ A).T @ G
        grad_A = s * x.T @ (G @ B.T)
        grad_x = G @ W0.T + s * G @ B.T @ A.T
        return grad_A, grad_B, grad_x

    return lora_backward


def solve_ex_2_2():
    """nn.Linear keeps W0ᵀ (out×in); A B is in×out, so transpose it before adding. `W0 + ...`
    makes a new tensor; `W0 += ...` would overwrite the base weight that unmerging (and every other
    adapter on the same base) needs."""

    def merge(W0, A, B, scaling):
        return W0 + scaling * (A @ B).T

    return merge


def solve_ex_2_3():
    """PEFT stores its two matrices as nn.Linear weights (out×in): Aᵀ is r×in, Bᵀ is out×r."""

    def to_peft(A, B):
        return A.T.contiguous(), B.T.contiguous()

    return to_peft


def solve_ex_2_4():
    """Train only A and B with Adam from the given start; W0 is a plain tensor (never trained).

    Result: (A random, B = 0) and (A = 0, B random) both learn; (A = 0, B = 0) never moves, since
    ∂L/∂A = s·xᵀ G Bᵀ = 0 and ∂L/∂B = s·(xA)ᵀ G = 0 at every step.
    """
    from lorakit.exercises.nb02 import toy_problem

    def final_loss(A0, B0, steps=100, lr=2e-2):
        x, W0, target = toy_problem()
        A, B = A0.clone().requires_grad_(True), B0.clone().requires_grad_(True)
        opt = torch.optim.Adam([A, B], lr=lr)
        for _ in range(steps):
            loss = ((x @ W0 + x @ A @ B - target) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return float(((x @ W0 + x @ A @ B - target) ** 2).mean())

    return final_loss
