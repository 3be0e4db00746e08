"""Worked solutions for notebook 08 (QLoRA by hand). Each ``solve_ex_8_M()`` returns the answer."""

import torch
import torch.nn as nn

from lorakit.memory import parameter_counts
from lorakit.quant import dequantize_4bit, quantize_4bit


def solve_ex_8_1() -> float:
    # 4 bits per code + 8/64 (one byte per block) + 32/(64·256) (one float32 per 256 blocks) = 4.127
    bits = 4 + 8 / 64 + 32 / (64 * 256)
    return parameter_counts("13B")["linear"] * bits / 8 / 1e9  # bits → bytes → GB


def solve_ex_8_2():
    def lora_backward(x, grad_y, W_hat, A, B, scaling):
        # forward: h = x A (tokens×r), y = x Ŵᵀ + scaling·h B (tokens×out)
        h = x @ A
        grad_B = scaling * h.t() @ grad_y  # r×out: y depends on B through scaling·h B
        grad_h = scaling * grad_y @ B.t()  # tokens×r
        grad_A = x.t() @ grad_h  # in×r: h depends on A through x A
        grad_x = (
            grad_y @ W_hat + grad_h @ A.t()
        )  # tokens×in: both paths reach x; Ŵ gets no gradient
        return grad_x, grad_A, grad_B

    return lora_backward


def solve_ex_8_3():
    @torch.no_grad()
    def merge_exact(layer):
        base = layer.base  # the Linear4bit the adapter was trained on
        W_hat = base.dequantized_weight(
            torch.float32
        )  # out×in: what the trained model multiplies by
        merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
        merged.weight.copy_(
            W_hat + layer.delta().t().float()
        )  # delta() = scaling·A B is in×out: transpose
        if base.bias is not None:
            merged.bias.copy_(base.bias)
        return merged  # a new module: the QLoRA layer is untouched

    return merge_exact


def solve_ex_8_4() -> tuple[float, float]:
    g = torch.Generator().manual_seed(64)
    W = 0.02 * torch.randn(256, 256, generator=g)  # W first …
    dW = 2e-3 * torch.randn(256, 256, generator=g)  # … then dW: the order fixes the numbers
    W_hat = dequantize_4bit(quantize_4bit(W, "nf4", 64, True))  # the 4-bit base
    merged = dequantize_4bit(quantize_4bit(W_hat + dW, "nf4", 64, True))  # merged into 4 bits
    real = merged - W_hat  # what the model's weights actually changed by
    projection = ((real * dW).sum() / dW.pow(2).sum()).item()  # 1: kept on average, 0: rounded away
    noise_ratio = ((real - dW).norm() / dW.norm()).item()
    # ≈ (0.84, 0.80): W_hat sits on the grid, and an element moves to the next code only if its
    # dW crosses the midpoint, half a step away; an update of about half a step is kept only in part.
    return projection, noise_ratio


def solve_ex_8_5() -> tuple[float, float, float]:
    from lorakit.loftq import init_error, loftq

    W = 0.02 * torch.randn(128, 256, generator=torch.Generator().manual_seed(85))
    plain = init_error(W, quantize_4bit(W, "nf4", 64))  # QLoRA's start: B = 0
    return plain, init_error(W, *loftq(W, 4, num_iter=1)), init_error(W, *loftq(W, 4, num_iter=3))


def solve_ex_8_6():
    def merge_zero(zero, A, B, scaling, group_size):
        # pool(x) is a mean over the group, so each of its inputs carries 1/L of the update;
        # the update is constant within the group: it moves the group's zero point only
        return zero + (A @ B * scaling).t() / group_size

    return merge_zero
