"""The LoRA layer, its hyper-parameters, injection by module name, merging (notebook 02).

Notation (row-vector convention, the course's notation from notebook 01): a linear layer
computes ``y = x W0`` with ``W0`` in×out. LoRA learns ``dW = A B`` with ``A`` in×r (random at
init) and ``B`` r×out (zero at init), scaled by ``scaling = alpha / r`` (or ``alpha / sqrt(r)``
with rsLoRA):

    y = x W0 + dropout(x) A B · scaling

``nn.Linear`` stores ``W0ᵀ`` (out×in) as ``weight``, so merging adds ``scaling · (A B)ᵀ`` to it.
The hyper-parameters travel as one record, ``LoRAConfig`` (PEFT's ``LoraConfig``): a layer holds
it, an adapter file stores it (``lorakit.adapters``).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn

from .model import count_parameters
from .targets import check_targets, replace_module, resolve_targets
from .validate import integer, lora_base, number

# ---------------------------------------------------------------- the hyper-parameters


@dataclasses.dataclass(frozen=True)  # notebook 02 §2 (the hyper-parameters: 02 §1; rsLoRA: 03 §4)
class LoRAConfig:
    """LoRA's hyper-parameters, validated once (PEFT's ``LoraConfig``: r, lora_alpha,
    lora_dropout, use_rslora, target_modules).

    ``targets``: module names (full paths or last components) or ``"all-linear"``.
    """

    r: int = 8
    alpha: float = 16
    dropout: float = 0.0
    rslora: bool = False
    targets: tuple[str, ...] | str = ("q_proj", "v_proj")

    def __post_init__(self):
        integer(self.r, "r", low=1)
        number(self.alpha, "alpha", low=0, low_open=True)
        number(self.dropout, "dropout", low=0, high=1, high_open=True)
        if not isinstance(self.rslora, bool):
            raise TypeError(
                f"rslora must be True or False, got {type(self.rslora).__name__} {self.rslora!r}"
            )
        object.__setattr__(
            self, "targets", check_targets(self.targets)
        )  # frozen: a list becomes a tuple

    @property  # notebook 02 §1 (α/r) and 03 §4 (α/√r)
    def scaling(self) -> float:
        """``alpha / r`` (the paper), or ``alpha / sqrt(r)`` (rsLoRA, which keeps the update's
        size stable as r grows)."""
        return self.alpha / math.sqrt(self.r) if self.rslora else self.alpha / self.r


# ---------------------------------------------------------------- the layer


class LoRALinear(nn.Module):  # notebook 02 §1
    """LoRA written out in full: frozen ``base`` + ``dropout(x) @ A @ B * scaling``.

    Notebook 02 §1's class, with its hyper-parameters in one ``LoRAConfig``, a ``merged`` flag
    (merging, 02 §4) and ``A``, ``B`` placed where the base's weights live (a 4-bit base,
    notebook 08). ``B`` starts at zero, so at init the output equals the base's exactly.
    ``inject_lora`` checks the base and the rank before it builds one.
    """

    def __init__(self, base: nn.Module, config: LoRAConfig, dtype: torch.dtype | None = None):
        super().__init__()
        self.base, self.config, self.merged = base, config, False
        base.requires_grad_(False)
        m, n = self.in_features, self.out_features = base.in_features, base.out_features
        dtype, device = _base_dtype_device(base, dtype)
        A_t = torch.empty(
            config.r, m, dtype=dtype, device=device
        )  # PEFT initialises the r×m matrix ...
        nn.init.kaiming_uniform_(A_t, a=5**0.5)  # ... uniform in ±1/sqrt(m)
        self.A = nn.Parameter(A_t.t().contiguous())  # m×r
        self.B = nn.Parameter(torch.zeros(config.r, n, dtype=dtype, device=device))  # r×n, zero
        self.scaling = config.scaling
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:  # the update is inside base.weight already
            return y
        lora = self.dropout(x).to(self.A.dtype) @ self.A @ self.B * self.scaling
        return y + lora.to(y.dtype)

    def delta(self) -> torch.Tensor:
        """The update ``dW = scaling · A B`` (in×out), the thing that merging adds."""
        return self.A @ self.B * self.scaling

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"in={self.in_features}, out={self.out_features}, r={c.r}, alpha={c.alpha}, "
            f"scaling={self.scaling:.4g}, dropout={c.dropout}, rslora={c.rslora}, merged={self.merged}"
        )


# ---------------------------------------------------------------- its helpers (not taught)


def _config(config: LoRAConfig | None, **given) -> LoRAConfig:
    """``config`` itself, or a ``LoRAConfig`` of the keyword hyper-parameters given; not both."""
    given = {k: v for k, v in given.items() if v is not None}
    if config is None:
        return LoRAConfig(**given)
    if not isinstance(config, LoRAConfig) or given:
        raise TypeError(
            f"pass either one LoRAConfig as config or the keywords {sorted(given)}, not both; "
            f"got config={config!r}"
        )
    return config


def shared_config(
    layers: dict[str, LoRALinear],
) -> LoRAConfig:  # notebook 02 §5 (one adapter file, one setting)
    """The one ``LoRAConfig`` the LoRA layers of a model share (one adapter holds one setting)."""
    configs = {layer.config for layer in layers.values()}
    if len(configs) != 1:
        raise ValueError(
            f"LoRA layers disagree on their settings ({sorted(map(repr, configs))}); "
            "one adapter holds one setting"
        )
    return configs.pop()


def _base_dtype_device(
    base: nn.Module, dtype: torch.dtype | None
) -> tuple[torch.dtype, torch.device]:
    """A and B live where the base's weights live, in their dtype when that is floating point.

    A packed 4-bit base stores uint8, which cannot hold A and B: then ``dtype`` (or torch's
    default dtype) is used instead.
    """
    weight = getattr(base, "weight", None)
    tensors = [weight] if isinstance(weight, torch.Tensor) else []
    tensors += list(base.parameters()) + list(base.buffers())
    device = tensors[0].device if tensors else torch.device("cpu")
    if dtype is not None:
        return dtype, device
    if isinstance(weight, torch.Tensor) and weight.is_floating_point():
        return weight.dtype, device
    return torch.get_default_dtype(), device


# ---------------------------------------------------------------- finding and injecting


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:  # notebook 02 §2
    """Every LoRALinear in ``model`` by module path, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def inject_lora(
    model: nn.Module,
    targets: str | list[str] | None = None,
    r: int | None = None,  # notebook 02 §2
    alpha: float | None = None,
    *,
    config: LoRAConfig | None = None,
    layer_types: tuple[type, ...] = (nn.Linear,),
    layer: type = LoRALinear,
    dtype: torch.dtype | None = None,
    **hyper,
) -> list[str]:
    """Wrap the targeted linear layers of ``model`` in ``LoRALinear`` and freeze everything else.

    ``targets``: a list of module names (full dotted paths or their last components, so
    ``"q_proj"`` matches ``"blocks.0.attn.q_proj"``), or ``"all-linear"`` (every linear layer
    but the output head, as QLoRA does). Give ``targets, r, alpha`` (``dropout``, ``rslora`` in
    ``hyper``) or one ``config``. ``layer``: the class to wrap with (``DoRALinear``, notebook 04).
    Afterwards only the adapters train. Returns the wrapped module paths. Everything is
    validated before the model is changed.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    config = _config(config, targets=targets, r=r, alpha=alpha, **hyper)
    existing = lora_layers(model)
    if existing:
        raise ValueError(
            f"the model already has LoRA layers ({list(existing)[:4]}...): injecting twice is not "
            "supported; call remove_lora(model) first or load_adapter to switch adapters"
        )
    names = resolve_targets(model, config.targets, layer_types)
    for name in names:
        lora_base(name, model.get_submodule(name), config.r)
    new = {name: layer(model.get_submodule(name), config, dtype=dtype) for name in names}
    model.requires_grad_(False)
    for name, wrapped in new.items():
        replace_module(model, name, wrapped)
        for p in wrapped.parameters(recurse=False):
            p.requires_grad_(True)
    return names


def remove_lora(model: nn.Module, merge: bool = False) -> list[str]:  # notebook 02 §4
    """Put the plain base layers back. With ``merge=True`` the update is folded into them first
    (PEFT's ``merge_and_unload``); otherwise any merge is undone, restoring ``W0``."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers to remove")
    if merge:
        merge_lora(model, _only_unmerged=True)
    elif any(layer.merged for layer in layers.values()):
        unmerge_lora(model, _only_merged=True)
    for name, layer in layers.items():
        replace_module(model, name, layer.base)
    return list(layers)


def parameter_report(model: nn.Module) -> dict:  # notebook 02 §2
    """Trainable and total parameter counts, and the trainable percentage."""
    total, trainable = count_parameters(model), count_parameters(model, trainable_only=True)
    return dict(trainable=trainable, total=total, percent=100.0 * trainable / max(total, 1))


# ---------------------------------------------------------------- merging


def _layers_for_merge(model: nn.Module) -> dict[str, LoRALinear]:
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers: call inject_lora first")
    bad = [n for n, layer in layers.items() if not isinstance(layer.base, nn.Linear)]
    if bad:
        kind = type(layers[bad[0]].base).__name__
        raise TypeError(
            f"merging needs a floating-point nn.Linear base; {bad[:4]} wrap a {kind}. "
            "Merge into the 16-bit weights instead (dequantize first)."
        )
    return layers


@torch.no_grad()  # notebook 02 §4
def merge_lora(model: nn.Module, _only_unmerged: bool = False) -> list[str]:
    """Fold ``scaling · (A B)ᵀ`` into each base weight, in place: inference then costs exactly a
    plain Linear. Refuses to merge twice (the update would be added twice)."""
    layers = _layers_for_merge(model)
    done = [n for n, layer in layers.items() if layer.merged]
    if done and not _only_unmerged:
        raise ValueError(
            f"LoRA layers {done[:4]} are already merged: merging twice would add dW twice"
        )
    for layer in layers.values():
        if not layer.merged:
            W = layer.base.weight
            W.add_(layer.delta().t().to(W.dtype))
            layer.merged = True
    return list(layers)


@torch.no_grad()  # notebook 02 §4
def unmerge_lora(model: nn.Module, _only_merged: bool = False) -> list[str]:
    """Subtract ``scaling · (A B)ᵀ`` again, restoring ``W0`` up to float rounding."""
    layers = _layers_for_merge(model)
    not_merged = [n for n, layer in layers.items() if not layer.merged]
    if not_merged and not _only_merged:
        raise ValueError(f"LoRA layers {not_merged[:4]} are not merged: nothing to unmerge")
    for layer in layers.values():
        if layer.merged:
            W = layer.base.weight
            W.sub_(layer.delta().t().to(W.dtype))
            layer.merged = False
    return list(layers)
