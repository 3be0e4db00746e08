"""Self-checks for notebook 08 (QLoRA by hand). Each ``check_ex_8_M(answer)`` prints right/wrong
and why, returns a bool, and never raises. Tolerances are stated in each docstring."""

from __future__ import annotations

import copy
import numbers

import torch
import torch.nn as nn

from . import report


def _number(answer) -> float | None:
    """A float from any real number (int, float, numpy or 0-d torch scalar); None for anything else."""
    if isinstance(answer, bool):
        return None
    if isinstance(answer, torch.Tensor):
        return (
            float(answer.item()) if answer.numel() == 1 and not answer.dtype == torch.bool else None
        )
    if isinstance(answer, numbers.Real):
        return float(answer)
    try:  # numpy scalars register as numbers.Real; other array-likes of one element
        import numpy as np

        if isinstance(answer, np.ndarray) and answer.size == 1 and answer.dtype != bool:
            return float(answer.item())
    except ImportError:  # pragma: no cover
        pass
    return None


def _numbers(answer, n: int) -> list[float] | None:
    """``n`` floats from a tuple, list, numpy array or tensor of ``n`` numbers; None otherwise."""
    if isinstance(answer, torch.Tensor):
        answer = answer.flatten().tolist()
    elif hasattr(answer, "tolist") and not isinstance(answer, (str, bytes)):
        answer = answer.tolist()
    if not isinstance(answer, (tuple, list)) or len(answer) != n:
        return None
    values = [_number(a) for a in answer]
    return None if any(v is None for v in values) else values


# ---------------------------------------------------------------- 8.1


def check_ex_8_1(answer) -> bool:
    """GB (1e9 bytes) to store LLaMA-13B's decoder linear layers in NF4 with double quantization.

    Tolerance: 1 % of the right value (any real number type)."""
    from ..memory import parameter_counts, quantized_bits_per_parameter

    right = parameter_counts("13B")["linear"] * quantized_bits_per_parameter(64, True) / 8 / 1e9
    value = _number(answer)
    if value is None:
        return report(False, "", f"expected a number of GB, got {type(answer).__name__}")
    if abs(value - right) <= 0.01 * right:
        return report(True, f"{value:.3f} GB: 12.7 B weights × 4.127 bits / 8 bits per byte.", "")
    if abs(value - right * 4.5 / 4.127) <= 0.01 * right:
        return report(False, "", "that is 4.5 bits/param: without double quantization. Use 4.127.")
    if abs(value - right * 4 / 4.127) <= 0.01 * right:
        return report(
            False,
            "",
            "that counts only the 4-bit codes; the block constants cost 0.127 bits/param more.",
        )
    if (
        abs(value - right * 8) <= 0.08 * right
        or abs(value - right * 8 / 1.073741824) <= 0.08 * right
    ):
        return report(False, "", "that looks like bits, not bytes: divide by 8.")
    if abs(value - right / 1.073741824) <= 0.01 * right:
        return report(False, "", "that is GiB (2^30 bytes); the question asks for GB = 1e9 bytes.")
    return report(
        False,
        "",
        f"{value:.4g} GB is not it (tolerance 1 %). Hint: linear parameters × 4.127 / 8 / 1e9.",
    )


# ---------------------------------------------------------------- 8.2


def _lora_probe(seed: int = 8):
    g = torch.Generator().manual_seed(seed)
    n_in, n_out, r, tokens = 7, 5, 3, 4
    x = torch.randn(tokens, n_in, generator=g, dtype=torch.float64)
    W_hat = torch.randn(n_out, n_in, generator=g, dtype=torch.float64)
    A = torch.randn(n_in, r, generator=g, dtype=torch.float64)
    B = torch.randn(
        r, n_out, generator=g, dtype=torch.float64
    )  # non-zero: the adapter path carries gradient
    grad_y = torch.randn(tokens, n_out, generator=g, dtype=torch.float64)
    return x, grad_y, W_hat, A, B, 0.5


def check_ex_8_2(answer) -> bool:
    """``lora_backward(x, grad_y, W_hat, A, B, scaling) -> (grad_x, grad_A, grad_B)`` for
    ``y = x Ŵᵀ + scaling·(x A) B``; compared with autograd, tolerance 1e-5 (absolute and relative)."""
    if not callable(answer):
        return report(
            False,
            "",
            f"expected a function lora_backward(x, grad_y, W_hat, A, B, scaling), "
            f"got {type(answer).__name__}",
        )
    x, grad_y, W_hat, A, B, s = _lora_probe()
    xs, As, Bs = (t.clone().requires_grad_(True) for t in (x, A, B))
    (xs @ W_hat.t() + s * (xs @ As) @ Bs).backward(grad_y)
    want = {"grad_x": xs.grad, "grad_A": As.grad, "grad_B": Bs.grad}
    try:
        got = answer(x.clone(), grad_y.clone(), W_hat.clone(), A.clone(), B.clone(), s)
    except Exception as e:  # noqa: BLE001 - a learner's bug must not stop the notebook
        return report(
            False,
            "",
            f"your function raised {type(e).__name__}: {e} "
            f"(x is {tuple(x.shape)}, W_hat {tuple(W_hat.shape)}, A {tuple(A.shape)}, B {tuple(B.shape)})",
        )
    if (
        not isinstance(got, (tuple, list))
        or len(got) != 3
        or not all(isinstance(t, torch.Tensor) for t in got)
    ):
        return report(False, "", "return three tensors: (grad_x, grad_A, grad_B)")
    for (name, w), t in zip(want.items(), got):
        if t.shape != w.shape:
            return report(
                False,
                "",
                f"{name} must have the shape of what it is the gradient of, {tuple(w.shape)}; "
                f"got {tuple(t.shape)}",
            )
    close = {
        name: torch.allclose(t.double(), w, atol=1e-5, rtol=1e-5)
        for (name, w), t in zip(want.items(), got)
    }
    if all(close.values()):
        return report(
            True,
            "grad_B = scaling·hᵀ grad_y, grad_A = scaling·xᵀ (grad_y Bᵀ), and grad_x = grad_y Ŵ "
            "+ scaling·grad_y Bᵀ Aᵀ: the frozen path and the adapter path both reach x.",
            "",
        )
    grad_x = got[0].double()
    if not close["grad_x"] and torch.allclose(grad_x, grad_y @ W_hat, atol=1e-5):
        return report(
            False,
            "",
            "grad_x has only the frozen path grad_y Ŵ; the adapter path "
            "scaling·grad_y Bᵀ Aᵀ reaches x too.",
        )
    if all(
        torch.allclose(t.double(), w / s, atol=1e-5)
        for (n, w), t in zip(want.items(), got)
        if n != "grad_x"
    ):
        return report(False, "", "grad_A and grad_B are missing the factor scaling.")
    wrong = [name for name, ok in close.items() if not ok]
    return report(
        False,
        "",
        f"{', '.join(wrong)} differ from autograd. Hint: with h = x A, "
        "y = x Ŵᵀ + scaling·h B, so ∂L/∂B = scaling·hᵀ ∂L/∂y and ∂L/∂h = scaling·∂L/∂y Bᵀ.",
    )


# ---------------------------------------------------------------- 8.3


def _qlora_probe(seed: int = 83):
    from ..lora import LoRAConfig, LoRALinear
    from ..qlora import Linear4bit

    g = torch.Generator().manual_seed(seed)
    linear = nn.Linear(96, 40, bias=True)
    with torch.no_grad():
        linear.weight.copy_(0.05 * torch.randn(40, 96, generator=g))
        linear.bias.copy_(0.1 * torch.randn(40, generator=g))
    layer = LoRALinear(
        Linear4bit.from_linear(linear, "nf4", 64, double_quant=True), LoRAConfig(r=4, alpha=8)
    )
    with torch.no_grad():
        layer.A.copy_(0.2 * torch.randn(layer.A.shape, generator=g))
        layer.B.copy_(0.2 * torch.randn(layer.B.shape, generator=g))
    return linear, layer, torch.randn(6, 96, generator=g)


def check_ex_8_3(answer) -> bool:
    """``merge_exact(layer) -> nn.Linear`` (float32) computing what the QLoRA ``layer`` computes,
    within 1e-5 on the outputs, without changing ``layer`` (codes, constants, A, B)."""
    if not callable(answer):
        return report(
            False, "", f"expected a function merge_exact(layer), got {type(answer).__name__}"
        )
    linear, layer, x = _qlora_probe()
    before = copy.deepcopy(layer.state_dict())
    with torch.no_grad():
        want = layer(x)
    try:
        with torch.no_grad():
            merged = answer(layer)
    except Exception as e:  # noqa: BLE001
        return report(
            False,
            "",
            f"your function raised {type(e).__name__}: {e}. Hint: Ŵ is out×in "
            "(layer.base.dequantized_weight(torch.float32)) and layer.delta() is in×out.",
        )
    changed = [k for k, v in layer.state_dict().items() if not torch.equal(v, before[k])]
    if changed:
        return report(
            False,
            "",
            f"your function changed the trained layer ({changed}); build a new "
            "nn.Linear and leave the QLoRA layer as it was.",
        )
    if type(merged).__name__ == "Linear4bit":
        return report(
            False,
            "",
            "that is a 4-bit layer again: requantizing rounds a second time. The exact "
            "merge keeps Ŵ + scaling·(AB)ᵀ in float32.",
        )
    if not isinstance(merged, nn.Linear):
        return report(
            False,
            "",
            f"return an nn.Linear (in_features {layer.in_features}, out_features "
            f"{layer.out_features}), got {type(merged).__name__}",
        )
    if merged.weight.shape != (layer.out_features, layer.in_features):
        return report(
            False,
            "",
            f"nn.Linear stores its weight out×in = {(layer.out_features, layer.in_features)}, "
            f"got {tuple(merged.weight.shape)}: transpose the update (A B is in×out).",
        )
    if merged.weight.dtype != torch.float32:
        return report(
            False,
            "",
            f"keep the merged weight in float32 (got {merged.weight.dtype}): a 16-bit "
            "copy rounds once more, which is a different question.",
        )
    with torch.no_grad():
        got = merged(x)
        err = (got - want).abs().max().item()
        if err <= 1e-5:
            return report(
                True,
                f"max |Δ| = {err:.1e}: Ŵ + scaling·(AB)ᵀ plus the bias is the trained layer, exactly.",
                "",
            )
        if (
            merged.bias is None
            or (got - merged.bias if merged.bias is not None else got)
            .sub(want - layer.base.bias)
            .abs()
            .max()
            .item()
            <= 1e-5
        ):
            return report(
                False,
                "",
                "the weight is right but the bias is missing or wrong: copy layer.base.bias.",
            )
        W16 = linear.weight + layer.delta().t()
        if torch.allclose(merged.weight, W16, atol=1e-6):
            return report(
                False,
                "",
                "that merges into the original 16-bit weights; the adapter was trained "
                "against the dequantized Ŵ.",
            )
        W_hat = layer.base.dequantized_weight(torch.float32)
        if torch.allclose(merged.weight, W_hat + layer.delta().t() / layer.scaling, atol=1e-6):
            return report(
                False,
                "",
                "layer.delta() is already scaled; (A @ B) needs the factor layer.scaling.",
            )
        if torch.allclose(merged.weight, W_hat, atol=1e-6):
            return report(False, "", "that is Ŵ alone: add the update scaling·(AB)ᵀ.")
    return report(
        False,
        "",
        f"the outputs differ from the trained layer by up to {err:.2g} (tolerance 1e-5). "
        "Hint: weight = Ŵ + layer.delta().t(), bias = layer.base.bias.",
    )


# ---------------------------------------------------------------- 8.4


def _requantize_stats(dw_first: bool = False, from_w: bool = False) -> tuple[float, float]:
    from ..quant import dequantize_4bit, quantize_4bit

    g = torch.Generator().manual_seed(64)
    if dw_first:
        dW = 2e-3 * torch.randn(256, 256, generator=g)
        W = 0.02 * torch.randn(256, 256, generator=g)
    else:
        W = 0.02 * torch.randn(256, 256, generator=g)
        dW = 2e-3 * torch.randn(256, 256, generator=g)
    W_hat = dequantize_4bit(quantize_4bit(W, "nf4", 64, True))
    real = dequantize_4bit(quantize_4bit(W_hat + dW, "nf4", 64, True)) - (W if from_w else W_hat)
    return ((real * dW).sum() / dW.pow(2).sum()).item(), ((real - dW).norm() / dW.norm()).item()


def check_ex_8_4(answer) -> bool:
    """``(projection, noise_ratio)`` of merging ``dW`` into the 4-bit ``W_hat``; tolerance 0.001 on each.

    Strict on purpose: drawing ``dW`` before ``W`` gives numbers ≈ 0.008 and 0.003 away, and is rejected."""
    values = _numbers(answer, 2)
    if values is None:
        return report(
            False, "", f"expected two numbers (projection, noise_ratio), got {answer!r:.80}"
        )
    right = _requantize_stats()
    near = lambda a, b: all(abs(u - v) <= 1e-3 for u, v in zip(a, b))  # noqa: E731
    if near(values, right):
        return report(
            True,
            f"projection {right[0]:.3f}, noise ratio {right[1]:.3f}: an update about half "
            "the grid step is partly rounded away (a projection of 1 would keep all of it); "
            "larger updates survive, smaller ones vanish (section 6's sweep).",
            "",
        )
    if near(values, right[::-1]):
        return report(False, "", "the two numbers are swapped: (projection, noise_ratio).")
    if near(values, _requantize_stats(dw_first=True)):
        return report(
            False, "", "you drew dW before W: draw W first, then dW, from the same generator."
        )
    if near(values, _requantize_stats(from_w=True)):
        return report(
            False,
            "",
            "the realized change is measured from W_hat (what the model had), not from W.",
        )
    return report(
        False,
        "",
        f"({values[0]:.4g}, {values[1]:.4g}) is not it (tolerance 0.001). Hint: realized = "
        "dequant(quant(W_hat + dW)) - W_hat; projection = <realized, dW>/<dW, dW>; "
        "noise = ‖realized - dW‖/‖dW‖.",
    )


# ----------------------------------------------------------------- sections 7-8 (LoftQ, QA-LoRA)


def _ex_8_5_weight() -> torch.Tensor:
    return 0.02 * torch.randn(128, 256, generator=torch.Generator().manual_seed(85))


def check_ex_8_5(answer) -> bool:
    """(QLoRA's step-0 relative error, LoftQ's with r = 4 and T = 1, LoftQ's with T = 3), NF4 blocks
    of 64, scaling 1, on 0.02·randn(128, 256) from seed 85. Three numbers, each within 1e-4."""
    from ..loftq import init_error, loftq
    from ..quant import quantize_4bit
    from . import as_numbers

    W = _ex_8_5_weight()
    plain = init_error(W, quantize_4bit(W, "nf4", 64))
    t1 = init_error(W, *loftq(W, 4, num_iter=1))
    t3 = init_error(W, *loftq(W, 4, num_iter=3))
    got = as_numbers(answer, length=3)
    if got is None:
        return report(
            False, "", f"expected three numbers (plain, LoftQ T=1, LoftQ T=3), got {answer!r}"
        )
    if all(abs(a - b) < 1e-4 for a, b in zip(got, (plain, t1, t3))):
        return report(
            True,
            f"{plain:.4f} → {t1:.4f} → {t3:.4f}: the rank-4 fit of the residual takes "
            f"{100 * (1 - t1 / plain):.1f} % of the quantization error at once, and alternating a little more.",
            "",
        )
    if abs(got[1] - plain) < 1e-4 or abs(got[2] - plain) < 1e-4:
        return report(
            False, "", "LoftQ's error must include the adapter: ‖W − deq(Q) − (AB)ᵀ‖ / ‖W‖"
        )
    if abs(got[0] - plain) >= 1e-4:
        return report(
            False, "", "the first number is QLoRA's start, B = 0: ‖W − deq(quant(W))‖ / ‖W‖"
        )
    return report(
        False,
        "",
        "alternate T times: Q = quant(W − (AB)ᵀ), then (AB)ᵀ = the rank-4 SVD of W − deq(Q) "
        "(lorakit.loftq.loftq does it; init_error measures it)",
    )


def check_ex_8_6(answer) -> bool:
    """``merge_zero(zero, A, B, scaling, group_size)`` → the new zero points (out×G) that fold a
    QA-LoRA adapter into its 4-bit base. Checked on a random layer with a bias: the merged layer's
    outputs must equal the trained one's within 1e-5, and the arguments must not change."""
    from ..qalora import dequantize_groupwise, pool, quantize_groupwise

    if not callable(answer):
        return report(
            False,
            "",
            f"expected a function merge_zero(zero, A, B, scaling, group_size), got {answer!r}",
        )
    g = torch.Generator().manual_seed(86)
    L, r, scaling = 16, 3, 2.5
    W = torch.randn(24, 64, generator=g)
    codes, scale, zero = quantize_groupwise(W, L)
    A, B = torch.randn(64 // L, r, generator=g), torch.randn(r, 24, generator=g)
    x = torch.randn(5, 64, generator=g)
    trained = x @ dequantize_groupwise(codes, scale, zero).t() + scaling * pool(x, L) @ A @ B
    before = [t.clone() for t in (zero, A, B)]
    try:
        new_zero = answer(zero, A, B, scaling, L)
    except Exception as error:  # a learner's function may raise anything
        return report(False, "", f"merge_zero raised {type(error).__name__}: {error}")
    if not all(torch.equal(a, b) for a, b in zip(before, (zero, A, B))):
        return report(False, "", "merge_zero changed its arguments in place: return a new tensor")
    if not isinstance(new_zero, torch.Tensor) or new_zero.shape != zero.shape:
        return report(
            False,
            "",
            f"the new zero points must be a tensor of shape {tuple(zero.shape)} (out×G), got "
            f"{getattr(new_zero, 'shape', type(new_zero).__name__)}",
        )
    merged = x @ dequantize_groupwise(codes, scale, new_zero.float()).t()
    if torch.allclose(merged, trained, atol=1e-5):
        return report(
            True,
            "the codes and scales are untouched and the outputs equal the trained layer's: "
            "a 4-bit merge that is exact.",
            "",
        )
    delta = (A @ B * scaling).t()
    if torch.allclose(new_zero, zero + delta, atol=1e-6):
        return report(
            False,
            "",
            "pool(x) is a MEAN over the group: each of its L inputs carries 1/L of the update",
        )
    if torch.allclose(new_zero, zero + delta / scaling / L, atol=1e-6):
        return report(False, "", "the update carries the scaling α/r too")
    return report(False, "", "each group's shift is scaling·(AB)ᵀ / group_size, shape out×G")
