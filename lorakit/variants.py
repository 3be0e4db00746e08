"""Three LoRA variants built on ``lorakit.lora``: DoRA, PiSSA's initialisation, LoRA+ (notebook 04).

Same notation as ``lorakit.lora`` (row vectors, ``y = x W0``, ``W0`` in×out, ``A`` in×r, ``B``
r×out, ``s`` = ``scaling`` = α/r or α/√r). Each one changes a single thing about plain LoRA:

- **DoRA** (Liu et al. 2024, arXiv 2402.09353; PEFT ``LoraConfig(use_dora=True)``) splits the
  adapted weight into a direction and a trainable magnitude per output column::

      W' = m ⊙ (W0 + s A B) / ‖W0 + s A B‖_col        (‖·‖_col: the norm of each column, over inputs)

  ``m`` starts at ``‖W0‖_col``, so at init W' = W0. As in the paper (§4.3) and PEFT, the norm is
  treated as a constant in the backward pass (detached).
- **PiSSA** (Meng et al. 2024, arXiv 2404.02948; PEFT ``init_lora_weights="pissa"``) starts ``A``
  and ``B`` from the top-r singular directions of ``W0`` and freezes the residual:
  ``W0 ← W0 − s A B`` with ``s A B`` = the best rank-r part of ``W0`` (notebook 01's Eckart–Young).
  The model is unchanged at init; training moves the principal part, not a zero-initialised one.
- **LoRA+** (Hayou et al. 2024, arXiv 2402.12354; PEFT ``create_loraplus_optimizer``) trains ``B``
  with a learning rate ``ratio`` times ``A``'s. Only the optimizer changes.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .lora import LoRALinear, inject_lora, lora_layers
from .validate import number

# ---------------------------------------------------------------- DoRA


class DoRALinear(LoRALinear):  # notebook 04 §7 (my_dora)
    """LoRA with a learned magnitude: ``y = (x W0 + dropout(x) A B s) ⊙ m / ‖W0 + s A B‖_col``.

    A subclass of ``LoRALinear``, so injection, ``lora_layers``, merging and the doctor treat it
    as an adapter. Dropout acts on the LoRA path only; PEFT (with dropout > 0) also rescales the
    dropped-out base path, so the two agree exactly with dropout 0, the default. ``delta()`` is the change DoRA makes to the weight, ``W' − W0``, so
    ``merge_lora`` folds in the right thing. The base must be an ``nn.Linear`` (DoRA reads W0).
    """

    def __init__(self, base: nn.Module, *args, **kw):
        if not isinstance(base, nn.Linear):
            raise TypeError(
                f"DoRA needs an nn.Linear base (it reads W0's column norms), got {type(base).__name__}"
            )
        super().__init__(base, *args, **kw)
        with torch.no_grad():
            self.magnitude = nn.Parameter(self._column_norm())  # out: ‖W0‖_col, as B = 0
        self._merged_delta: torch.Tensor | None = None

    def _W0(self) -> torch.Tensor:
        return self.base.weight.t().to(self.A.dtype)  # in×out (nn.Linear stores out×in)

    def _column_norm(self) -> torch.Tensor:
        """‖W0 + s A B‖ per output column (a norm over the inputs), out."""
        return torch.linalg.vector_norm(self._W0() + (self.A @ self.B) * self.scaling, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        bias = self.base.bias
        plain = y - bias if bias is not None else y
        lora = (self.dropout(x).to(self.A.dtype) @ self.A @ self.B) * self.scaling
        factor = self.magnitude / self._column_norm().detach()  # the norm is a constant (DoRA §4.3)
        out = (plain.to(self.A.dtype) + lora) * factor
        out = out.to(y.dtype)
        return out + bias if bias is not None else out

    def delta(self) -> torch.Tensor:
        """``W' − W0`` (in×out). Remembered when computed unmerged, so that unmerging subtracts
        exactly what merging added (once merged, W0 is no longer in the base weight)."""
        if self.merged and self._merged_delta is not None:
            return self._merged_delta
        W0 = self._W0()
        d = (W0 + (self.A @ self.B) * self.scaling) * (self.magnitude / self._column_norm()) - W0
        self._merged_delta = d.detach()
        return d


# notebook 04 §7
def inject_dora(
    model: nn.Module, targets=None, r: int | None = None, alpha: float | None = None, **kw
) -> list[str]:
    """``inject_lora`` with ``DoRALinear`` layers: only A, B and the magnitudes train."""
    return inject_lora(model, targets, r, alpha, layer=DoRALinear, **kw)


# ---------------------------------------------------------------- PiSSA


@torch.no_grad()  # notebook 04 §7
def pissa_init(layer: LoRALinear) -> LoRALinear:
    """Start ``A``, ``B`` from the top-r singular directions of W0 and keep only the residual.

    With ``weight = W0ᵀ = V S Uᵀ`` (SVD of the stored out×in matrix, the way PEFT takes it, so the
    arbitrary signs of singular vectors agree with PEFT's):
    ``A = U_r √(S_r/s)`` (in×r), ``B = √(S_r/s) V_rᵀ`` (r×out), so ``s A B`` is the best rank-r
    part of W0, and the base weight becomes ``W0 − s A B``: the layer's output is unchanged.
    """
    if not isinstance(layer, LoRALinear) or isinstance(layer, DoRALinear):
        raise TypeError(f"pissa_init needs a plain LoRALinear, got {type(layer).__name__}")
    if not isinstance(layer.base, nn.Linear):
        raise TypeError(
            f"PiSSA needs an nn.Linear base (it takes W0's SVD), got {type(layer.base).__name__}"
        )
    if layer.merged:
        raise ValueError("the layer is merged: unmerge_lora first (PiSSA rewrites W0)")
    weight = layer.base.weight
    V, S, Uh = torch.linalg.svd(weight.float(), full_matrices=False)  # weight (out×in) = V S Uh
    r, s = layer.config.r, layer.scaling
    root = torch.sqrt(S[:r] / s)
    A = Uh[:r].t() * root  # in×r
    B = root[:, None] * V[:, :r].t()  # r×out
    layer.A.copy_(A.to(layer.A.dtype))
    layer.B.copy_(B.to(layer.B.dtype))
    weight.copy_((weight.float() - s * (A @ B).t()).to(weight.dtype))
    return layer


def inject_pissa(
    model: nn.Module, targets: str | list[str], r: int, alpha: float, **kw
) -> list[str]:  # notebook 04 §7
    """``inject_lora``, then ``pissa_init`` on every new layer (the residual replaces W0)."""
    names = inject_lora(model, targets, r, alpha, **kw)
    for layer in lora_layers(model).values():
        pissa_init(layer)
    return names


# ---------------------------------------------------------------- LoRA+


def loraplus_param_groups(
    model: nn.Module, lr: float, ratio: float = 16.0
) -> list[dict]:  # notebook 04 §7
    """Trainable parameters in two groups: ``B`` (and 1-D parameters such as DoRA's magnitude,
    as PEFT does) at ``lr · ratio``, everything else (``A``) at ``lr``. No weight decay, PEFT's
    default for LoRA+."""
    number(lr, "lr", low=0, low_open=True)
    number(ratio, "ratio", low=0, low_open=True)
    group_A, group_B, has_B = [], [], False
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        has_B |= name.endswith(".B")
        (group_B if name.endswith(".B") or p.ndim == 1 else group_A).append(p)
    if not has_B:
        raise ValueError(
            "no trainable LoRA B found: inject LoRA (inject_lora) before building the optimizer"
        )
    return [
        dict(params=group_A, lr=lr, weight_decay=0.0),
        dict(params=group_B, lr=lr * ratio, weight_decay=0.0),
    ]


def loraplus_optimizer(
    model: nn.Module, lr: float, ratio: float = 16.0
) -> torch.optim.AdamW:  # notebook 04 §7
    """AdamW with LoRA+'s two learning rates (B's is ``ratio`` × A's; the paper suggests 16)."""
    return torch.optim.AdamW(loraplus_param_groups(model, lr, ratio))
