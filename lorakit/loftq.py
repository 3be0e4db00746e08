"""LoftQ: start LoRA where quantization went wrong, so that Q + AB ≈ W at step 0 (notebook 08 §7).

QLoRA starts from the 4-bit base Ŵ = dequant(quant(W)) with B = 0: the model at step 0 is off
by the whole quantization error W − Ŵ, and the adapter must first spend steps learning it back.
LoftQ (Li et al. 2023, arXiv 2310.08659) initialises the adapter to absorb the best rank-r part
of that error, alternating two steps ``num_iter`` times (``nn.Linear`` layout, W out×in):

1. quantize what the adapter does not explain: ``Q = quant(W − scaling·(AB)ᵀ)`` (AB = 0 at first);
2. give the adapter the best rank-r part of what Q misses: ``scaling·(AB)ᵀ = SVD_r(W − deq(Q))``.

The last step is an SVD, so the returned pair is always the best rank-r fit to ``W − deq(Q)``.
The quantizer is ``lorakit.quant``'s NF4, bit-exact with bitsandbytes, so the result equals
PEFT's ``loftq_init`` (which calls bitsandbytes: NF4, blocksize 64, no double quantization),
checked in ``tests/test_loftq.py``. PEFT ignores the LoRA scaling (its ``lora_A``/``lora_B``
give ``Q + B A`` only when ``lora_alpha = r``); here the factors are divided by ``√scaling`` so
``Q + scaling·(AB)ᵀ`` is the fit at any α.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from . import validate
from .lora import lora_layers
from .qlora import prepare_qlora
from .quant import Quantized4bit, dequantize_4bit, quantize_4bit
from .targets import resolve_targets

__all__ = ["svd_factors", "loftq", "prepare_qlora_loftq", "init_error"]


def svd_factors(
    residual: torch.Tensor, r: int
) -> tuple[torch.Tensor, torch.Tensor]:  # notebook 08 §7
    """(L out×r, R r×in) with L R the best rank-r approximation of ``residual`` (Eckart–Young,
    notebook 01), √S split between the two factors; PEFT's ``_low_rank_decomposition``, op for op."""
    U, S, Vh = torch.linalg.svd(residual, full_matrices=False)
    L = U @ torch.sqrt(torch.diag(S)[:, 0:r])
    R = torch.sqrt(torch.diag(S)[0:r, :]) @ Vh
    return L, R


def _loftq(W, r, num_iter, scaling, quant_type, blocksize, double_quant):
    """LoftQ's loop; also returns the matrix quantized last (so a model can be given the same codes)."""
    W = W.detach().float()
    residual = W  # what the 4-bit code must hold
    for _ in range(num_iter):
        q, quantized = (
            quantize_4bit(residual, quant_type, blocksize, double_quant),
            residual,
        )  # 1. quantize
        L, R = svd_factors(W - dequantize_4bit(q), r)  # 2. the best rank-r fit of the error
        residual = W - torch.mm(L, R)
    root = scaling**0.5
    return q, (R.t() / root).contiguous(), (L.t() / root).contiguous(), quantized


@torch.no_grad()
def loftq(
    W: torch.Tensor,
    r: int,
    num_iter: int = 1,
    scaling: float = 1.0,
    quant_type: str = "nf4",  # notebook 08 §7
    blocksize: int = 64,
    double_quant: bool = False,
) -> tuple[Quantized4bit, torch.Tensor, torch.Tensor]:
    """LoftQ for one weight ``W`` (out×in): ``(q, A in×r, B r×out)`` with ``deq(q) + scaling·(AB)ᵀ ≈ W``.

    ``num_iter`` alternations of "quantize what AB misses" and "SVD of what Q misses"; with
    ``num_iter = 1`` it is one quantization (of W itself, as QLoRA's) plus the SVD of its error.
    ``scaling`` (α/r) only rescales A and B; PEFT's factors are ``lora_A = Aᵀ``, ``lora_B = Bᵀ`` at 1."""
    if not isinstance(W, torch.Tensor) or W.dim() != 2:
        raise ValueError(
            f"W must be a 2-D weight (out×in), got {getattr(W, 'shape', type(W).__name__)}"
        )
    validate.integer(r, "r", 1, min(W.shape))
    validate.integer(num_iter, "num_iter", 1, 100)
    validate.number(scaling, "scaling", 0.0, low_open=True)
    return _loftq(W, r, num_iter, scaling, quant_type, blocksize, double_quant)[:3]


def init_error(
    W: torch.Tensor,
    q: Quantized4bit,
    A: torch.Tensor | None = None,
    B: torch.Tensor | None = None,  # notebook 08 §7
    scaling: float = 1.0,
) -> float:
    """Relative Frobenius error of the model at step 0: ``‖W − deq(q) − scaling·(AB)ᵀ‖ / ‖W‖``
    (without A, B: QLoRA's standard init, B = 0)."""
    approx = dequantize_4bit(q, torch.float32)
    if A is not None:
        approx = approx + scaling * (A @ B).t()
    return ((W.float() - approx).norm() / W.float().norm()).item()


@torch.no_grad()
def prepare_qlora_loftq(
    model: nn.Module,
    targets="all-linear",
    r: int = 8,
    alpha: float = 16,
    num_iter: int = 1,  # notebook 08 §7
    quant_type: str = "nf4",
    double_quant: bool = True,
    blocksize: int = 64,
    **qlora_kwargs,
) -> nn.Module:
    """``prepare_qlora`` with LoftQ's start: each target's 4-bit base is ``quant(W − scaling·(AB)ᵀ)`` and its
    A, B the SVD fit of the rest, so the model at step 0 is closer to the 16-bit one. In place.

    The targets' weights are first replaced by what LoftQ quantizes last; ``prepare_qlora`` then
    quantizes them (the same ``quantize_4bit``, so the same codes) and puts LoRA on; A, B are set last.
    Layers that are quantized but not targeted keep QLoRA's plain quantization."""
    names = resolve_targets(model, targets, head_allowed=False)
    validate.integer(r, "r", 1)
    scaling = alpha / r
    factors = {}
    for name in names:
        layer = model.get_submodule(name)
        q, A, B, quantized = _loftq(
            layer.weight, r, num_iter, scaling, quant_type, blocksize, double_quant
        )
        factors[name] = (A, B)
        layer.weight.copy_(quantized)  # prepare_qlora quantizes this: the same codes as q
    prepare_qlora(
        model,
        names,
        r=r,
        alpha=alpha,
        quant_type=quant_type,
        double_quant=double_quant,
        blocksize=blocksize,
        **qlora_kwargs,
    )
    for name, layer in lora_layers(model).items():
        A, B = factors[name]
        layer.A.copy_(A.to(layer.A.dtype))
        layer.B.copy_(B.to(layer.B.dtype))
    return model
