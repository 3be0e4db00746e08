"""Worked solutions for notebook 12 (shipping adapters). Each ``solve_ex_12_M()`` returns the answer."""

import torch

from lorakit.export import roundtrip


def solve_ex_12_1() -> tuple[float, float]:
    layers, per_rank = (
        32,
        (4096 + 4096) + (4096 + 1024),
    )  # one unit of rank: a column of A, a row of B
    ranks = [64, 64, 8, 8, 8, 8, 8, 8]
    bytes_per_number = 2  # fp16
    padded = len(ranks) * max(ranks) * layers * per_rank * bytes_per_number / 1e6
    own = sum(ranks) * layers * per_rank * bytes_per_number / 1e6
    return padded, own  # ≈ (436.2, 149.9): the cap costs 2.9× here


def solve_ex_12_2():
    def q8_0(x):
        blocks = x.float().reshape(-1, 32)
        d = blocks.abs().amax(dim=1, keepdim=True) / 127  # float32 scale per block
        inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
        v = blocks * inv
        q = (torch.sign(v) * torch.floor(v.abs() + 0.5)).to(torch.int8)  # halves away from zero
        out = torch.cat([d.half().view(torch.uint8), q.view(torch.uint8)], dim=1)  # 2 + 32 bytes
        return out.reshape(*x.shape[:-1], -1)

    return q8_0


def solve_ex_12_3():
    def merge_exact(a1, a2, w1, w2):
        (A1, B1, s1), (A2, B2, s2) = a1, a2
        A = torch.cat([w1 * s1 * A1, w2 * s2 * A2], dim=1)  # in × (r1 + r2)
        B = torch.cat([B1, B2], dim=0)  # (r1 + r2) × out
        return A, B  # A @ B = w1 s1 A1 B1 + w2 s2 A2 B2

    return merge_exact


def solve_ex_12_4() -> tuple[float, float, float]:
    g = torch.Generator().manual_seed(12)
    W = 0.02 * torch.randn(256, 256, generator=g)  # W first …
    dW = 1e-4 * torch.randn(256, 256, generator=g)  # … then dW
    W_q = roundtrip(W, "Q4_0")  # the exported (or downloaded) base
    scratch = roundtrip(W + dW, "Q4_0") - W_q  # merged in float, then quantized
    into = roundtrip(W_q + dW, "Q4_0") - W_q  # merged into the quantized weights
    projection = lambda real: ((real * dW).sum() / dW.pow(2).sum()).item()  # noqa: E731
    noise = ((scratch - dW).norm() / dW.norm()).item()
    # ≈ (1.01, 6.9, 0.03): unbiased but noisy from scratch; rounded away into the quantized base
    return projection(scratch), noise, projection(into)
