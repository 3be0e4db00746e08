"""Worked solutions for notebook 08 (QLoRA). Each ``solve_ex_8_M()`` returns the answer."""

import torch

from lorakit.memory import lora_parameter_count, parameter_counts
from lorakit.quant import quantize_4bit, unpack_nibbles


def solve_ex_8_1() -> float:
    # 4 bits per code + 8/64 (one byte per block) + 32/(64·256) (one float32 per 256 blocks)
    bits = 4 + 8 / 64 + 32 / (64 * 256)
    return parameter_counts("13B")["linear"] * bits / 8 / 1e9


def solve_ex_8_2():
    def backward(grad_y: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        return grad_y @ W  # y = x Wᵀ  ⇒  ∂L/∂x = ∂L/∂y · W

    return backward


def solve_ex_8_3() -> int:
    return lora_parameter_count("7B", 64, "all-linear")


def solve_ex_8_4() -> float:
    g = torch.Generator().manual_seed(64)
    W = torch.randn(256, 256, generator=g) * 0.02
    dW = torch.randn(256, 256, generator=g) * 1e-4
    before = unpack_nibbles(quantize_4bit(W, "nf4", 64, True).packed)
    after = unpack_nibbles(quantize_4bit(W + dW, "nf4", 64, True).packed)
    return (before != after).float().mean().item()
