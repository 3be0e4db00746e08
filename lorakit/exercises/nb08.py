"""Self-checks for notebook 08 (QLoRA). Each ``check_ex_8_M(answer)`` prints right/wrong and why."""

from __future__ import annotations

import torch

from . import report


def _number(answer) -> float | None:
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        return None
    return float(answer)


def check_ex_8_1(answer) -> bool:
    """GB (1e9 bytes) to store LLaMA-13B's decoder linear layers in NF4 with double quantization."""
    from ..memory import parameter_counts, quantized_bits_per_parameter

    right = parameter_counts("13B")["linear"] * quantized_bits_per_parameter(64, True) / 8 / 1e9
    value = _number(answer)
    if value is None:
        return report(False, "", f"expected a number of GB (a float), got {type(answer).__name__}")
    if abs(value - right) <= 0.01 * right:
        return report(True, f"{value:.3f} GB: 12.7 B weights × 4.127 bits / 8 bits per byte.", "")
    if abs(value - right * 4.5 / 4.127) <= 0.01 * right:
        return report(False, "", "that is 4.5 bits/param: without double quantization. Use 4.127.")
    if abs(value - right * 4 / 4.127) <= 0.01 * right:
        return report(False, "", "that counts only the 4-bit codes; the block constants cost 0.127 bits/param more.")
    if abs(value - right * 8) <= 0.08 * right or abs(value - right * 8 / 1.073741824) <= 0.08 * right:
        return report(False, "", "that looks like bits, not bytes: divide by 8.")
    return report(False, "", f"{value:.4g} GB is not it. Hint: parameter_counts('13B')['linear'] × 4.127 / 8 / 1e9.")


def check_ex_8_2(answer) -> bool:
    """A function ``backward(grad_y, W) -> grad_x`` for ``y = x Wᵀ`` (W out×in)."""
    if not callable(answer):
        return report(False, "", f"expected a function backward(grad_y, W), got {type(answer).__name__}")
    g = torch.Generator().manual_seed(6)
    for shape in ((5, 7), (6, 6)):
        W = torch.randn(*shape, generator=g)
        x = torch.randn(3, 4, shape[1], generator=g, requires_grad=True)
        y = x @ W.t()
        grad_y = torch.randn(y.shape, generator=g)
        y.backward(grad_y)
        try:
            got = answer(grad_y, W)
        except Exception as e:  # noqa: BLE001 - a learner's bug must not stop the notebook
            return report(False, "", f"your function raised {type(e).__name__}: {e} (W is out×in = {tuple(W.shape)})")
        if not isinstance(got, torch.Tensor) or got.shape != x.shape:
            return report(False, "", f"grad_x must have x's shape {tuple(x.shape)}, got "
                          f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}")
        if not torch.allclose(got, x.grad, atol=1e-5, rtol=1e-5):
            return report(False, "", "right shape, wrong values: for y = x Wᵀ, grad_x = grad_y W "
                          "(no transpose here; the transpose was in the forward).")
    return report(True, "grad_x = grad_y W, and no gradient for the frozen W at all.", "")


def check_ex_8_3(answer) -> bool:
    """Trainable parameters of QLoRA r=64 on every linear layer of LLaMA-7B (no head)."""
    from ..memory import lora_parameter_count

    right = lora_parameter_count("7B", 64, "all-linear")
    if isinstance(answer, bool) or not isinstance(answer, int):
        return report(False, "", f"expected an int (a count of parameters), got {type(answer).__name__}")
    if answer == right:
        return report(True, f"{answer:,} = 32 layers × 64 × Σ(in + out) over 7 linear layers (≈ 2.4 % of 6.7 B).", "")
    if answer == lora_parameter_count("7B", 64, ["q_proj", "v_proj"]):
        return report(False, "", "that is q_proj and v_proj only; QLoRA puts LoRA on all 7 linear layers per block.")
    if answer == lora_parameter_count("7B", 64, ["q_proj", "k_proj", "v_proj", "o_proj"]):
        return report(False, "", "those are the attention layers only; add gate_proj, up_proj and down_proj.")
    if answer * 8 == right:
        return report(False, "", "that is r = 8 (PEFT's default); QLoRA uses r = 64.")
    return report(False, "", f"{answer:,} is not it. Hint: each adapted layer adds r·(in + out); "
                  "lorakit.memory.linear_shapes('7B') lists (in, out) per layer.")


def check_ex_8_4(answer) -> bool:
    """Fraction of 4-bit codes that change when W0 + dW is requantized, for a tiny dW."""
    from ..quant import quantize_4bit

    g = torch.Generator().manual_seed(64)
    W = torch.randn(256, 256, generator=g) * 0.02
    dW = torch.randn(256, 256, generator=g) * 1e-4
    a = quantize_4bit(W, "nf4", 64, True).packed
    b = quantize_4bit(W + dW, "nf4", 64, True).packed
    codes = lambda p: torch.stack([p >> 4, p & 15], -1).reshape(-1)  # noqa: E731
    right = (codes(a) != codes(b)).float().mean().item()
    value = _number(answer)
    if value is None:
        return report(False, "", f"expected a fraction (a float in [0, 1]), got {type(answer).__name__}")
    if not 0 <= value <= 1:
        return report(False, "", f"a fraction lies in [0, 1], got {value} (a percentage? divide by 100)")
    if abs(value - right) <= 0.002:
        return report(True, f"only {100 * value:.2f} % of the codes move: a small dW mostly rounds away "
                      "when merged into a 4-bit base.", "")
    if abs(value - (a != b).float().mean().item()) <= 0.002:
        return report(False, "", "that compares packed bytes (two codes each); unpack to 4-bit codes first.")
    return report(False, "", f"{value:.4g} is not it. Hint: unpack with (p >> 4, p & 15) and compare code by code.")
