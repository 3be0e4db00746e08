"""QA-LoRA: LoRA whose merge keeps the model 4-bit, exactly (notebook 08 §8).

Notebook 08 §6 measured the problem: an adapter merged into a 4-bit base is either exact but no
longer 4-bit (into Ŵ, kept in 16/32 bits) or 4-bit but a different model (requantized). QA-LoRA
(Xu et al. 2023, arXiv 2309.14717) changes two things so that both hold:

1. **The base is quantized per group with a zero point**: each row of the weight (``nn.Linear``
   layout, W out×in) is cut into groups of ``group_size`` = L consecutive inputs, and each group
   stores 4-bit codes plus a float ``scale`` and ``zero``: ``Ŵ[o, gL + j] = scale[o, g]·code + zero[o, g]``
   (asymmetric min–max INT4, as GPTQ stores it; NF4's absmax has no zero point to absorb a shift).
2. **The adapter sees the input pooled per group**: ``y = x Ŵᵀ + scaling · pool(x) A B`` with
   ``pool(x)[g] = mean(x[gL : (g+1)L])``, ``A ∈ R^{G×r}`` (G = in/L groups), ``B ∈ R^{r×out}``.

Then the update in weight space, ``ΔWᵀ[o, gL + j] = scaling·(AB)[g, o] / L``, is constant across
each quantization group, so merging only moves each group's zero point:
``zero' = zero + scaling·(AB)ᵀ / L``. The codes and the scales do not change: the merged model is
4-bit, stores the same bytes, and computes the trained model up to float rounding.

PEFT implements the pooled forward as ``peft.tuners.lora.variants.QALoraLinearVariant`` (dispatched
only for GPTQ layers, ``LoraConfig(use_qalora=True, qalora_group_size=L)``), with
``pool(x)·G`` as the input to its ``lora_A``; so its ``lora_A.weight = Aᵀ / G`` and
``lora_B.weight = Bᵀ`` compute the same thing (``tests/test_qalora.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from . import validate
from .lora import LoRAConfig
from .targets import replace_module, resolve_targets

__all__ = [
    "quantize_groupwise",
    "dequantize_groupwise",
    "GroupLinear4bit",
    "QALoRALinear",
    "prepare_qalora",
    "qalora_layers",
    "merge_qalora",
    "pool",
]


def _check_group(W: torch.Tensor, group_size: int) -> None:
    validate.integer(group_size, "group_size", 1)
    if W.dim() != 2 or W.shape[1] % group_size:
        raise ValueError(
            f"group_size must divide in_features: W is {tuple(W.shape)} (out×in), "
            f"group_size {group_size}"
        )


@torch.no_grad()
def quantize_groupwise(
    W: torch.Tensor, group_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # notebook 08 §8
    """Asymmetric INT4 per group of ``group_size`` inputs of each row: ``(codes uint8 out×in,
    scale float32 out×G, zero float32 out×G)`` with ``Ŵ = scale·code + zero``, code in 0..15."""
    _check_group(W, group_size)
    out_features, in_features = W.shape
    groups = W.detach().float().view(out_features, in_features // group_size, group_size)
    lo, hi = groups.amin(dim=2), groups.amax(dim=2)
    scale = ((hi - lo) / 15).clamp(min=1e-12)  # 16 levels from the min to the max
    codes = (
        torch.round((groups - lo.unsqueeze(2)) / scale.unsqueeze(2)).clamp(0, 15).to(torch.uint8)
    )
    return codes.view(out_features, in_features), scale, lo


def dequantize_groupwise(
    codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor
) -> torch.Tensor:  # notebook 08 §8
    """``scale·code + zero`` per group (out×in float32)."""
    out_features, n_groups = scale.shape
    groups = codes.view(out_features, n_groups, -1).float()
    return (groups * scale.unsqueeze(2) + zero.unsqueeze(2)).view(codes.shape)


class _FrozenLinear(torch.autograd.Function):
    """``y = x Ŵᵀ``; backward returns only ``grad_x = grad_y Ŵ``, dequantizing again (as 08 §2)."""

    @staticmethod
    def forward(ctx, x, layer):
        ctx.layer = layer
        return x @ layer.dequantized_weight().t()

    @staticmethod
    def backward(ctx, grad_y):
        return grad_y @ ctx.layer.dequantized_weight(), None


class GroupLinear4bit(nn.Module):  # notebook 08 §8
    """A frozen linear layer stored as group-wise INT4: codes (two per byte) + float32 scale and zero.

    Build it with ``GroupLinear4bit.from_linear(linear, group_size)``."""

    def __init__(
        self,
        codes: torch.Tensor,
        scale: torch.Tensor,
        zero: torch.Tensor,
        bias: torch.Tensor | None,
    ):
        super().__init__()
        self.out_features, self.in_features = codes.shape
        self.group_size = self.in_features // scale.shape[1]
        flat = codes.reshape(-1)
        self.register_buffer(
            "packed", (flat[0::2] << 4) | flat[1::2]
        )  # as lorakit.quant.pack_nibbles
        self.register_buffer("scale", scale)
        self.register_buffer("zero", zero)
        self.bias = (
            None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        )

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = 32) -> GroupLinear4bit:
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear needs an nn.Linear, got {type(linear).__name__}")
        if linear.in_features * linear.out_features % 2:
            raise ValueError("two codes per byte: in_features·out_features must be even")
        return cls(*quantize_groupwise(linear.weight, group_size), linear.bias)

    def codes(self) -> torch.Tensor:
        return torch.stack([self.packed >> 4, self.packed & 0xF], dim=-1).view(
            self.out_features, self.in_features
        )

    def dequantized_weight(self) -> torch.Tensor:
        return dequantize_groupwise(self.codes(), self.scale, self.zero)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _FrozenLinear.apply(x.float(), self)
        return (y if self.bias is None else y + self.bias).to(x.dtype)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.packed, self.scale, self.zero))

    def bits_per_parameter(self) -> float:
        """4 + 2·32 / group_size with float32 scale and zero (from the stored bytes)."""
        return 8.0 * self.nbytes / (self.in_features * self.out_features)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, group_size={self.group_size}"


def pool(x: torch.Tensor, group_size: int) -> torch.Tensor:  # notebook 08 §8
    """The mean of each group of ``group_size`` consecutive input features: (..., in) → (..., in/L)."""
    return x.view(*x.shape[:-1], x.shape[-1] // group_size, group_size).mean(dim=-1)


class QALoRALinear(nn.Module):  # notebook 08 §8
    """``base(x) + scaling · pool(x) A B`` with ``A`` G×r (G = in/group_size) and ``B`` r×out, B = 0 at init."""

    def __init__(self, base: GroupLinear4bit, config: LoRAConfig):
        super().__init__()
        self.base, self.config = base, config
        self.in_features, self.out_features = base.in_features, base.out_features
        self.group_size = base.group_size
        n_groups = base.in_features // base.group_size
        if config.r > min(n_groups, base.out_features):
            raise ValueError(
                f"r must be between 1 and min(in/group_size, out) = {min(n_groups, base.out_features)}, "
                f"got {config.r}"
            )
        base.requires_grad_(False)
        A_t = torch.empty(config.r, n_groups)
        nn.init.kaiming_uniform_(A_t, a=math.sqrt(5))  # PEFT's init on its (pooled) lora_A
        self.A = nn.Parameter(A_t.t().contiguous())  # G×r
        self.B = nn.Parameter(torch.zeros(config.r, base.out_features))  # r×out

    @property
    def scaling(self) -> float:
        return self.config.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (
            pool(x.float(), self.group_size) @ self.A @ self.B * self.scaling
        ).to(x.dtype)

    def delta(self) -> torch.Tensor:
        """The update as a full in×out matrix: each group's row of ``scaling·AB`` spread over its L inputs, / L."""
        return (self.A @ self.B * self.scaling).repeat_interleave(
            self.group_size, dim=0
        ) / self.group_size


def qalora_layers(model: nn.Module) -> dict[str, QALoRALinear]:  # notebook 08 §8
    return {n: m for n, m in model.named_modules() if isinstance(m, QALoRALinear)}


def prepare_qalora(
    model: nn.Module,
    targets="all-linear",
    r: int = 8,
    alpha: float = 16,  # notebook 08 §8
    group_size: int = 32,
) -> nn.Module:
    """Every linear layer but the head becomes a ``GroupLinear4bit``; the targets get QA-LoRA; only A, B train.
    In place (like ``qlora.prepare_qlora``)."""
    linear = resolve_targets(model, "all-linear")
    names = set(resolve_targets(model, targets, head_allowed=False))
    config = LoRAConfig(r=r, alpha=alpha, targets=tuple(sorted(names)))
    for path in linear:  # check every shape before changing anything
        _check_group(model.get_submodule(path).weight, group_size)
    model.requires_grad_(False)
    for path in linear:
        base = GroupLinear4bit.from_linear(model.get_submodule(path), group_size)
        replace_module(model, path, QALoRALinear(base, config) if path in names else base)
    return model


@torch.no_grad()
def merge_qalora(model: nn.Module) -> list[str]:  # notebook 08 §8
    """Fold every adapter into its base's zero points: ``zero += scaling·(AB)ᵀ / L``. In place.

    The codes and scales stay as they are, so the merged layers are ``GroupLinear4bit`` again,
    with the same bytes stored; the merged model computes the trained one up to float rounding."""
    layers = qalora_layers(model)
    if not layers:
        raise ValueError("the model has no QA-LoRA layers: call prepare_qalora first")
    for name, layer in layers.items():
        layer.base.zero.add_((layer.A @ layer.B * layer.scaling).t() / layer.group_size)
        replace_module(model, name, layer.base)
    return list(layers)
