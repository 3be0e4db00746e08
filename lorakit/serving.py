"""Many LoRA adapters on one base, one batch: each row uses its own adapter (notebook 12 §1).

A server that hosts one base and k adapters receives a batch whose rows ask for different
adapters (or none). Because LoRA stays unmerged, row i computes

    y_i = x_i W0 + x_i A_{a(i)} B_{a(i)} · scaling_{a(i)}

with one shared ``x W0`` for the whole batch. Three ways to compute the adapter part, all equal:

- ``"loop"``: for each adapter, pick its rows and add their update (PEFT's ``adapter_names=``);
- ``"gathered"``: stack every A and B, padded to the largest rank, and index them per row (the
  BGMV kernel of Punica/S-LoRA/vLLM): one batched matmul, whatever the mix;
- ``"segmented"``: sort the rows so that rows sharing an adapter are contiguous, run one matmul
  per segment at the adapter's own rank, unsort (the SGMV kernel).

An adapter is held as *factors*: ``{module path: (A, B, scaling)}`` with ``A`` in×r and ``B``
r×out (the course's row-vector notation; PEFT stores the transposes). ``check_adapters`` refuses
adapters that do not fit the base before anything changes.
"""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn as nn

from .lora import lora_layers
from .targets import replace_module

Factors = dict[str, tuple[torch.Tensor, torch.Tensor, float]]
MODES = ("loop", "gathered", "segmented")
BASE = "__base__"  # PEFT's name for "no adapter" in adapter_names


# ---------------------------------------------------------------- adapters as factors


def lorakit_factors(model: nn.Module) -> Factors:  # notebook 12 §1
    """The adapter of a lorakit model (``inject_lora``) as ``{path: (A, B, scaling)}`` (copies)."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers: inject_lora (and train) first")
    return {
        name: (l.A.detach().clone(), l.B.detach().clone(), float(l.scaling))
        for name, l in layers.items()
    }


def peft_factors(peft_model: nn.Module, adapter: str) -> Factors:  # notebook 12 §1
    """One adapter of a PEFT model in the course's layout: ``A = lora_A.weightᵀ`` (in×r),
    ``B = lora_B.weightᵀ`` (r×out), PEFT's own ``scaling[adapter]``. Paths are the base model's."""
    inner = peft_model.base_model.model
    factors = {}
    for path, module in inner.named_modules():
        lora_A = getattr(module, "lora_A", None)
        if isinstance(lora_A, nn.ModuleDict) and adapter in lora_A:
            factors[path] = (
                lora_A[adapter].weight.detach().t().clone(),
                module.lora_B[adapter].weight.detach().t().clone(),
                float(module.scaling[adapter]),
            )
    if not factors:
        raise ValueError(
            f"the PEFT model has no adapter named {adapter!r}; it has {sorted(peft_model.peft_config)}"
        )
    return factors


def factors_nbytes(factors: Factors) -> int:  # notebook 12 §1 (memory)
    """Bytes of an adapter's A and B."""
    return sum(
        A.numel() * A.element_size() + B.numel() * B.element_size() for A, B, _ in factors.values()
    )


def padded_nbytes(adapters: dict[str, Factors]) -> int:  # notebook 12 §1 (why servers cap the rank)
    """Bytes of the stacked A and B a gathered kernel holds: every adapter padded to the largest rank."""
    first = next(iter(adapters.values()))
    r_max = max(A.shape[1] for f in adapters.values() for A, _, _ in f.values())
    size = next(iter(first.values()))[0].element_size()
    return len(adapters) * size * r_max * sum(A.shape[0] + B.shape[1] for A, B, _ in first.values())


def model_nbytes(model: nn.Module) -> int:  # notebook 12 §1 (memory)
    """Bytes of a model's parameters (a tied weight counted once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


# ---------------------------------------------------------------- checks (before anything changes)


def check_adapters(model: nn.Module, adapters: dict[str, Factors]) -> None:  # notebook 12 §1
    """Raise ValueError unless every adapter fits ``model`` and all target the same layers.

    Refused: no adapters; a name that is not a string or is PEFT's ``"__base__"``; adapters whose
    target layers differ (names both lists); a path the model lacks or that is not an
    ``nn.Linear``; A/B shapes that disagree with each other or with the layer (an adapter trained
    for another base).
    """
    if not isinstance(adapters, dict) or not adapters:
        raise ValueError("adapters must be a non-empty dict {name: factors}")
    names = list(adapters)
    for name in names:
        if not isinstance(name, str) or name == BASE:
            raise ValueError(
                f"adapter names must be strings other than {BASE!r} (it means no adapter), got {name!r}"
            )
    first = set(adapters[names[0]])
    for name in names[1:]:
        other = set(adapters[name])
        if other != first:
            raise ValueError(
                f"adapters target different layers: {names[0]!r} only has {sorted(first - other)}, "
                f"{name!r} only has {sorted(other - first)}; serve or merge adapters with the same "
                "targets"
            )
    modules = dict(model.named_modules())
    for name, factors in adapters.items():
        for path, (A, B, _scaling) in factors.items():
            layer = modules.get(path)
            if not isinstance(layer, nn.Linear):
                raise ValueError(
                    f"adapter {name!r}: layer {path!r} is not an nn.Linear of this model "
                    f"(found {type(layer).__name__}): the adapter was made for another base"
                )
            if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[0]:
                raise ValueError(
                    f"adapter {name!r}, layer {path!r}: A must be in×r and B r×out, "
                    f"got A {tuple(A.shape)} and B {tuple(B.shape)}"
                )
            if (A.shape[0], B.shape[1]) != (layer.in_features, layer.out_features):
                raise ValueError(
                    f"adapter {name!r}, layer {path!r}: the adapter is {A.shape[0]}×{B.shape[1]}, "
                    f"the base layer is {layer.in_features}×{layer.out_features}: the adapter was "
                    "trained for another base"
                )


# ---------------------------------------------------------------- the layer


class MultiLoRALinear(nn.Module):  # notebook 12 §1
    """A frozen ``nn.Linear`` plus k adapters; ``rows`` (set by ``use_rows``) picks one per row.

    ``rows[i] = j`` uses adapter j for batch row i; ``j = k`` means the base alone. The scaling
    is folded into B once (``B·scaling``), as servers do when they load an adapter.
    """

    def __init__(
        self, base: nn.Linear, factors: list[tuple[torch.Tensor, torch.Tensor, float]], mode: str
    ):
        super().__init__()
        self.base, self.mode, self.rows = base, mode, None
        self.A = [A.to(base.weight.dtype) for A, _, _ in factors]
        self.B = [(B * s).to(base.weight.dtype) for _, B, s in factors]
        k, r_max = len(factors), max(A.shape[1] for A in self.A)
        # gathered: one (k+1) stack padded to r_max; slot k is all zeros (= no adapter)
        self.A_stack = torch.zeros(k + 1, base.in_features, r_max, dtype=base.weight.dtype)
        self.B_stack = torch.zeros(k + 1, r_max, base.out_features, dtype=base.weight.dtype)
        for j, (A, B) in enumerate(zip(self.A, self.B)):
            self.A_stack[j, :, : A.shape[1]] = A
            self.B_stack[j, : B.shape[0]] = B

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        rows = self.rows
        if rows is None:
            return y
        if rows.shape[0] != x.shape[0]:
            raise ValueError(f"use_rows named {rows.shape[0]} rows, the batch has {x.shape[0]}")
        x3 = x.reshape(x.shape[0], -1, x.shape[-1])
        if self.mode == "gathered":  # BGMV: one gather, one batched matmul pair
            delta = torch.bmm(torch.bmm(x3, self.A_stack[rows]), self.B_stack[rows])
        elif self.mode == "loop":  # PEFT: one pass per adapter over its rows
            delta = torch.zeros(x3.shape[0], x3.shape[1], y.shape[-1], dtype=y.dtype)
            for j, (A, B) in enumerate(zip(self.A, self.B)):
                picked = rows == j
                if picked.any():
                    delta[picked] = x3[picked] @ A @ B
        else:  # SGMV: sort once, one matmul per contiguous segment at the adapter's own rank
            order = torch.argsort(rows, stable=True)
            counts = torch.bincount(rows, minlength=len(self.A) + 1).tolist()
            xs, parts = x3[order], []
            start = 0
            for j, n in enumerate(counts):
                seg = xs[start : start + n]
                out = y.shape[-1]
                parts.append(
                    seg @ self.A[j] @ self.B[j]
                    if j < len(self.A)
                    else seg.new_zeros(n, x3.shape[1], out)
                )
                start += n
            delta = torch.empty(x3.shape[0], x3.shape[1], y.shape[-1], dtype=y.dtype)
            delta[order] = torch.cat(parts)
        return y + delta.reshape(y.shape)


# ---------------------------------------------------------------- on a model


def attach_adapters(
    model: nn.Module, adapters: dict[str, Factors], mode: str = "gathered"
) -> list[str]:  # notebook 12 §1
    """Replace each targeted ``nn.Linear`` by a ``MultiLoRALinear`` holding every adapter; in place.

    Checks everything first (``check_adapters``): a refused call leaves the model unchanged.
    Returns the replaced module paths.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    check_adapters(model, adapters)
    names = list(adapters)
    paths = list(adapters[names[0]])
    modules = dict(model.named_modules())
    for path in paths:
        replace_module(
            model, path, MultiLoRALinear(modules[path], [adapters[n][path] for n in names], mode)
        )
    model._lorakit_adapters = names
    return paths


def set_mode(model: nn.Module, mode: str) -> None:  # notebook 12 §1
    """Switch every ``MultiLoRALinear`` to ``"loop"``, ``"gathered"`` or ``"segmented"``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    for m in model.modules():
        if isinstance(m, MultiLoRALinear):
            m.mode = mode


@contextlib.contextmanager
def use_rows(model: nn.Module, adapter_names: list):  # notebook 12 §1
    """Inside the ``with``, batch row i uses adapter ``adapter_names[i]`` (``None`` or
    ``"__base__"``: the base alone), like PEFT's ``model(..., adapter_names=...)``."""
    names = getattr(model, "_lorakit_adapters", None)
    if names is None:
        raise ValueError("the model has no adapters attached: call attach_adapters first")
    unknown = sorted({str(a) for a in adapter_names if a not in (None, BASE) and a not in names})
    if unknown:
        raise ValueError(
            f"unknown adapter names {unknown}; attached: {names} (or None / {BASE!r} for the base)"
        )
    rows = torch.tensor(
        [len(names) if a in (None, BASE) else names.index(a) for a in adapter_names]
    )
    layers = [m for m in model.modules() if isinstance(m, MultiLoRALinear)]
    for m in layers:
        m.rows = rows
    try:
        yield model
    finally:
        for m in layers:
            m.rows = None


@torch.no_grad()
def merged_copy(
    model: nn.Module, factors: Factors
) -> nn.Module:  # notebook 12 §1 (one model per tenant)
    """A copy of the plain base ``model`` with one adapter merged: ``W += scaling·(AB)ᵀ``."""
    check_adapters(model, {"adapter": factors})
    merged = copy.deepcopy(model)
    modules = dict(merged.named_modules())
    for path, (A, B, s) in factors.items():
        weight = modules[path].weight
        weight += (A @ B * s).t().to(weight.dtype)
    return merged
