"""Adapter files: lorakit's own safetensors file and PEFT's folder (notebook 02 §5–§7).

An adapter is ``A`` and ``B`` of every LoRA layer plus the ``LoRAConfig`` that made them: a
file of kilobytes, against megabytes or gigabytes for the base. Loading one checks the file, the
settings, every key and every shape *before* the model changes, so a wrong file leaves the model
as it was; loading a second adapter into an injected model is how the course switches domains.

PEFT writes the same update transposed: its ``lora_A.weight`` is ``Aᵀ`` (r×in) and
``lora_B.weight`` is ``Bᵀ`` (out×r). ``save_peft_adapter``/``load_peft_adapter`` translate, so an
adapter trained here loads into ``peft.PeftModel`` and back.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file

from .files import read_safetensors
from .lora import LoRAConfig, inject_lora, lora_layers, shared_config

ADAPTER_FORMAT = "lorakit-lora"
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."

# ---------------------------------------------------------------- lorakit's format


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:  # notebook 02 §5
    """The adapter alone, ``{"<module path>.A": A, "<module path>.B": B}`` (copies, on the CPU)."""
    state = {}
    for name, layer in lora_layers(model).items():
        state[f"{name}.A"] = layer.A.detach().cpu().clone().contiguous()
        state[f"{name}.B"] = layer.B.detach().cpu().clone().contiguous()
    return state


def _saved_config(model: nn.Module) -> LoRAConfig:
    """The model's ``LoRAConfig`` with the exact module paths as targets (what a file stores)."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers: nothing to save")
    return dataclasses.replace(shared_config(layers), targets=tuple(layers))


def save_adapter(model: nn.Module, path: str | os.PathLike) -> Path:  # notebook 02 §5
    """Write only ``A`` and ``B`` of every LoRA layer (safetensors), the ``LoRAConfig`` in its metadata."""
    config = _saved_config(model)
    path = Path(path)
    meta = dict(format=ADAPTER_FORMAT, lora_config=json.dumps(dataclasses.asdict(config)))
    save_file(adapter_state(model), str(path), metadata=meta)
    return path


# notebook 02 §5 (used again for notebook 05's files)
def check_state(state: dict[str, torch.Tensor], shapes: dict[str, tuple], where: str) -> None:
    """Raise naming every missing, unexpected or wrongly shaped tensor of a saved method."""
    want = set(shapes)
    missing, unexpected = sorted(want - set(state)), sorted(set(state) - want)
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(shapes[k])}"
        for k in sorted(want & set(state))
        if tuple(state[k].shape) != tuple(shapes[k])
    ]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{where} does not fit this model: missing keys {missing[:6]}, "
            f"unexpected keys {unexpected[:6]}, wrong shapes {wrong[:6]}"
        )


def _fitting_layers(model: nn.Module, where: str, config: LoRAConfig) -> dict[str, nn.Module]:
    """The layers the adapter goes on: the model's LoRA layers (same r, alpha, rslora, none
    merged) or, in a model without LoRA, the linear layers the file targets."""
    layers = lora_layers(model)
    if layers:
        mine = shared_config(layers)
        mism = [
            f"{k}={getattr(mine, k)!r} in the model vs {getattr(config, k)!r} in the file"
            for k in ("r", "alpha", "rslora")
            if getattr(mine, k) != getattr(config, k)
        ]
        if mism:
            raise ValueError(
                f"adapter {where} does not fit this model's LoRA layers: {'; '.join(mism)}"
            )
        merged = [n for n, layer in layers.items() if layer.merged]
        if merged:
            raise ValueError(
                f"LoRA layers {merged[:4]} are merged: unmerge_lora(model) before loading another adapter"
            )
        return layers
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    absent = [t for t in config.targets if t not in linears]
    if absent:
        raise ValueError(
            f"adapter {where} targets layers this model lacks: {absent[:6]}; "
            f"its linear layers are {list(linears)[:12]}"
        )
    return {t: linears[t] for t in config.targets}


@torch.no_grad()
def _copy_in(
    model: nn.Module, state: dict[str, torch.Tensor], where: str, config: LoRAConfig
) -> list[str]:
    """Check ``state`` ({"<path>.A": in×r, "<path>.B": r×out}) against the model, inject if needed, copy."""
    fit = _fitting_layers(model, where, config)
    shapes = {
        f"{n}.{k}": shape
        for n, m in fit.items()
        for k, shape in (("A", (m.in_features, config.r)), ("B", (config.r, m.out_features)))
    }
    check_state(state, shapes, f"adapter {where}")
    if not lora_layers(model):
        inject_lora(model, config=config)
    layers = lora_layers(model)
    for n, layer in layers.items():
        layer.A.copy_(state[f"{n}.A"])
        layer.B.copy_(state[f"{n}.B"])
    return list(layers)


def load_adapter(model: nn.Module, path: str | os.PathLike) -> list[str]:  # notebook 02 §5–§6
    """Load an adapter written by ``save_adapter``; inject LoRA first if the model has none.

    Every check (file format, r/alpha/rslora, key names, shapes, merged state) runs before the
    model changes, so a wrong file leaves the model as it was.
    """
    state, meta = read_safetensors(path)
    if meta.get("format") != ADAPTER_FORMAT:
        raise ValueError(
            f"{path} is not a lorakit adapter (metadata format={meta.get('format')!r}, "
            f"expected {ADAPTER_FORMAT!r}); for PEFT folders use load_peft_adapter"
        )
    try:
        config = LoRAConfig(**json.loads(meta["lora_config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(
            f"{path}: adapter metadata 'lora_config' is missing or malformed ({e}); "
            "it needs r, alpha, dropout, rslora and targets"
        ) from e
    return _copy_in(model, state, str(path), config)


# ---------------------------------------------------------------- PEFT's format


def to_peft_state(model: nn.Module) -> dict[str, torch.Tensor]:  # notebook 02 §7
    """The adapter with PEFT's names and orientation: ``lora_A.weight = Aᵀ``, ``lora_B.weight = Bᵀ``."""
    return {
        f"{PEFT_PREFIX}{key[:-2]}.lora_{key[-1]}.weight": tensor.t().contiguous()  # "<path>.A" -> "...lora_A.weight"
        for key, tensor in adapter_state(model).items()
    }


def save_peft_adapter(
    model: nn.Module,
    folder: str | os.PathLike,  # notebook 02 §7
    base_model_name_or_path: str | None = None,
    task_type: str | None = None,
) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` as PEFT does, so that
    ``peft.PeftModel.from_pretrained(base, folder)`` rebuilds the same adapter. ``task_type``
    (e.g. ``"CAUSAL_LM"`` for a Hugging Face LM) picks the ``PeftModel`` subclass PEFT builds."""
    config = _saved_config(model)
    peft_config = (
        dict(  # PEFT's LoraConfig; target_modules as exact paths, which PEFT matches as full names
            peft_type="LORA",
            task_type=task_type,
            base_model_name_or_path=base_model_name_or_path,
            r=config.r,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            use_rslora=config.rslora,
            target_modules=list(config.targets),
            bias="none",
            fan_in_fan_out=False,
            init_lora_weights=True,
            inference_mode=True,
            modules_to_save=None,
            rank_pattern={},
            alpha_pattern={},
            use_dora=False,
        )
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PEFT_CONFIG).write_text(json.dumps(peft_config, indent=2))
    save_file(to_peft_state(model), str(folder / PEFT_WEIGHTS), metadata={"format": "pt"})
    return folder


def _read_peft_config(folder: Path) -> dict:
    cfg_path = folder / PEFT_CONFIG
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder} has no {PEFT_CONFIG}: not a PEFT adapter folder")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path} is not valid JSON ({e})") from e
    if cfg.get("peft_type") != "LORA":
        raise ValueError(f"{cfg_path}: peft_type must be 'LORA', got {cfg.get('peft_type')!r}")
    unsupported = {k: cfg[k] for k in ("rank_pattern", "alpha_pattern", "use_dora") if cfg.get(k)}
    if cfg.get("bias", "none") != "none":
        unsupported["bias"] = cfg["bias"]
    if unsupported:
        raise ValueError(f"{cfg_path}: settings lorakit does not support: {unsupported}")
    if "r" not in cfg or "lora_alpha" not in cfg:
        raise ValueError(f"{cfg_path} needs 'r' and 'lora_alpha', has {sorted(cfg)}")
    return cfg


def load_peft_adapter(model: nn.Module, folder: str | os.PathLike) -> list[str]:  # notebook 02 §7
    """Load a PEFT LoRA adapter folder into ``model`` (injecting LoRA first if it has none),
    transposing ``lora_A.weight``/``lora_B.weight`` back to ``A``/``B``. Validated first."""
    folder = Path(folder)
    cfg = _read_peft_config(folder)
    peft_state, _ = read_safetensors(folder / PEFT_WEIGHTS)
    state, odd = {}, []
    for key, value in peft_state.items():
        name = key.removeprefix(PEFT_PREFIX).replace(".default.weight", ".weight")
        if name.endswith(".lora_A.weight"):
            state[name[: -len(".lora_A.weight")] + ".A"] = value.t()
        elif name.endswith(".lora_B.weight"):
            state[name[: -len(".lora_B.weight")] + ".B"] = value.t()
        else:
            odd.append(key)
    if odd:
        raise ValueError(
            f"{folder / PEFT_WEIGHTS} holds tensors that are not LoRA A/B weights: {odd[:6]}"
        )
    config = LoRAConfig(
        r=int(cfg["r"]),
        alpha=cfg["lora_alpha"],
        dropout=float(cfg.get("lora_dropout") or 0.0),
        rslora=bool(cfg.get("use_rslora", False)),
        targets=sorted({k.rpartition(".")[0] for k in state}),
    )
    return _copy_in(model, state, str(folder), config)
