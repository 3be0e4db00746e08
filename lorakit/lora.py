"""The LoRA layer, injection by module name, merging, and adapter files (notebook 02).

Notation (row-vector convention, DESIGN.md): a linear layer computes ``y = x W0`` with
``W0`` in×out. LoRA learns ``dW = A B`` with ``A`` in×r (random at init) and ``B`` r×out
(zero at init), scaled by ``alpha / r`` (or ``alpha / sqrt(r)`` with rsLoRA):

    y = x W0 + dropout(x) A B · scale

``nn.Linear`` stores ``W0ᵀ`` (out×in) as ``weight``, so merging adds ``scale · (A B)ᵀ`` to it.
The LoRA paper and PEFT write the same update transposed: PEFT's ``lora_A.weight`` is ``Aᵀ``
(r×in) and ``lora_B.weight`` is ``Bᵀ`` (out×r). ``save_peft_adapter``/``load_peft_adapter``
translate between the two, so an adapter trained here loads into ``peft.PeftModel`` and back.

Several adapters on one base are kept deliberately simple: an adapter is a small file; switch
domains with ``load_adapter`` (the frozen base is never touched).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

ADAPTER_FORMAT = "lorakit-lora"
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."

# ---------------------------------------------------------------- the layer


def _check_hyper(r, alpha, dropout, in_features: int, out_features: int) -> None:
    """Validate r, alpha and dropout against a layer's shape (raises before anything is built)."""
    if isinstance(r, bool) or not isinstance(r, int):
        raise TypeError(f"r must be an int, got {type(r).__name__} {r!r}")
    most = min(in_features, out_features)
    if not 1 <= r <= most:
        raise ValueError(
            f"r must be between 1 and min(in, out) = {most} (layer {in_features}×{out_features}), got {r}"
        )
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha must be a number, got {type(alpha).__name__} {alpha!r}")
    if not (alpha > 0 and math.isfinite(alpha)):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
        raise TypeError(f"dropout must be a number, got {type(dropout).__name__} {dropout!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def lora_scaling(r: int, alpha: float, rslora: bool = False) -> float:
    """``alpha / r`` (the paper), or ``alpha / sqrt(r)`` (rsLoRA, which keeps the update's size
    stable as r grows)."""
    return alpha / math.sqrt(r) if rslora else alpha / r


def _base_dtype_device(base: nn.Module, dtype: torch.dtype | None) -> tuple[torch.dtype, torch.device]:
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


class LoRALinear(nn.Module):
    """A frozen ``base`` layer plus a trainable low-rank update ``dropout(x) A B · scale``.

    ``base`` is an ``nn.Linear`` or any module with ``in_features``, ``out_features`` and a
    ``forward(x)`` (for example a 4-bit linear layer, notebook 08). ``B`` starts at zero, so at
    init the output equals the base's exactly and training starts from the pretrained model.
    """

    def __init__(
        self,
        base: nn.Module,
        r: int,
        alpha: float,
        dropout: float = 0.0,
        rslora: bool = False,
        *,
        dtype: torch.dtype | None = None,
    ):
        in_features = getattr(base, "in_features", None)
        out_features = getattr(base, "out_features", None)
        if not isinstance(base, nn.Module) or not isinstance(in_features, int) or not isinstance(out_features, int):
            raise TypeError(
                "base must be an nn.Module with integer in_features and out_features "
                f"(e.g. nn.Linear), got {type(base).__name__}"
            )
        if isinstance(base, LoRALinear):
            raise TypeError("base is already a LoRALinear: LoRA on LoRA is not supported")
        _check_hyper(r, alpha, dropout, in_features, out_features)
        super().__init__()
        self.base = base
        self.in_features, self.out_features = in_features, out_features
        self.r, self.alpha, self.rslora = r, alpha, bool(rslora)
        self.scaling = lora_scaling(r, alpha, rslora)
        self.dropout_p = float(dropout)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        for p in base.parameters():
            p.requires_grad_(False)
        dtype, device = _base_dtype_device(base, dtype)
        # PEFT's init: kaiming_uniform(a=sqrt(5)) on the r×in matrix, i.e. U(±1/sqrt(in)).
        A_t = torch.empty(r, in_features, dtype=dtype, device=device)
        nn.init.kaiming_uniform_(A_t, a=math.sqrt(5))
        self.A = nn.Parameter(A_t.t().contiguous())  # in×r
        self.B = nn.Parameter(torch.zeros(r, out_features, dtype=dtype, device=device))  # r×out

    def delta(self) -> torch.Tensor:
        """The update ``dW = scale · A B`` (in×out), the thing that merging adds."""
        return (self.A @ self.B) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        lora = (self.dropout(x).to(self.A.dtype) @ self.A @ self.B) * self.scaling
        return y + lora.to(y.dtype)

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, r={self.r}, alpha={self.alpha}, "
            f"scaling={self.scaling:.4g}, dropout={self.dropout_p}, rslora={self.rslora}, merged={self.merged}"
        )


# ---------------------------------------------------------------- finding and injecting


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Every LoRALinear in ``model`` by module path, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def linear_names(model: nn.Module) -> list[str]:
    """Paths of every ``nn.Linear`` (the names a target list can use)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def _matches(path: str, target: str) -> bool:
    """A target names a module by its full path or by its last component(s), as PEFT does."""
    return path == target or path.endswith("." + target)


def _resolve_targets(model: nn.Module, targets: str | list[str], layer_types: tuple[type, ...]) -> list[str]:
    candidates = [n for n, m in model.named_modules() if isinstance(m, layer_types) and not isinstance(m, LoRALinear) and n]
    if targets == "all-linear":
        chosen = [n for n in candidates if n.split(".")[-1] != "lm_head"]
        if not chosen:
            raise ValueError(f"'all-linear' found no linear layer other than lm_head; layers: {candidates}")
        return chosen
    if isinstance(targets, str):
        targets = [targets]
    if not isinstance(targets, (list, tuple, set)) or not all(isinstance(t, str) for t in targets):
        raise TypeError(f"targets must be 'all-linear' or a list of module names (str), got {targets!r}")
    if not targets:
        raise ValueError("targets is empty: name at least one module, e.g. ['q_proj', 'v_proj'] or 'all-linear'")
    chosen = [n for n in candidates if any(_matches(n, t) for t in targets)]
    unused = [t for t in targets if not any(_matches(n, t) for n in candidates)]
    if not chosen or unused:
        raise ValueError(
            f"target(s) {unused or list(targets)} match no linear layer; the linear layers are: {candidates}"
        )
    return chosen


def inject_lora(
    model: nn.Module,
    targets: str | list[str],
    r: int,
    alpha: float,
    *,
    layer_types: tuple[type, ...] = (nn.Linear,),
    **kw,
) -> list[str]:
    """Wrap the targeted linear layers of ``model`` in ``LoRALinear`` and freeze everything else.

    ``targets``: a list of module names (full dotted paths or their last components, so
    ``"q_proj"`` matches ``"blocks.0.attn.q_proj"``), or ``"all-linear"`` (every linear layer
    but the output head ``lm_head``, as QLoRA does). ``kw`` goes to ``LoRALinear`` (dropout,
    rslora, dtype). Afterwards only ``A`` and ``B`` have ``requires_grad``. Returns the wrapped
    module paths. Everything is validated before the model is changed.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    existing = lora_layers(model)
    if existing:
        raise ValueError(
            f"the model already has LoRA layers ({list(existing)[:4]}...): injecting twice is not "
            "supported; call remove_lora(model) first or load_adapter to switch adapters"
        )
    names = _resolve_targets(model, targets, layer_types)
    new = {name: LoRALinear(model.get_submodule(name), r, alpha, **kw) for name in names}  # validates
    for p in model.parameters():
        p.requires_grad_(False)
    for name, layer in new.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer)
        layer.A.requires_grad_(True)
        layer.B.requires_grad_(True)
    return names


def remove_lora(model: nn.Module, merge: bool = False) -> list[str]:
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
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer.base)
    return list(layers)


def parameter_report(model: nn.Module) -> dict:
    """Trainable and total parameter counts, and the trainable percentage."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
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


@torch.no_grad()
def merge_lora(model: nn.Module, _only_unmerged: bool = False) -> list[str]:
    """Fold ``scale · (A B)ᵀ`` into each base weight, in place: inference then costs exactly a
    plain Linear. Refuses to merge twice (the update would be added twice)."""
    layers = _layers_for_merge(model)
    done = [n for n, layer in layers.items() if layer.merged]
    if done and not _only_unmerged:
        raise ValueError(f"LoRA layers {done[:4]} are already merged: merging twice would add dW twice")
    for layer in layers.values():
        if not layer.merged:
            W = layer.base.weight
            W.add_(layer.delta().t().to(W.dtype))
            layer.merged = True
    return list(layers)


@torch.no_grad()
def unmerge_lora(model: nn.Module, _only_merged: bool = False) -> list[str]:
    """Subtract ``scale · (A B)ᵀ`` again, restoring ``W0`` up to float rounding."""
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


# ---------------------------------------------------------------- adapter files (lorakit format)


def _common(layers: dict[str, LoRALinear], attr: str):
    values = {getattr(layer, attr) for layer in layers.values()}
    if len(values) != 1:
        raise ValueError(f"LoRA layers disagree on {attr} ({sorted(values)}); one adapter file holds one setting")
    return values.pop()


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter alone, ``{"<module path>.A": A, "<module path>.B": B}`` (copies, on the CPU)."""
    state = {}
    for name, layer in lora_layers(model).items():
        state[f"{name}.A"] = layer.A.detach().cpu().clone().contiguous()
        state[f"{name}.B"] = layer.B.detach().cpu().clone().contiguous()
    return state


def save_adapter(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write only ``A`` and ``B`` of every LoRA layer (safetensors) with r, alpha, rslora and the
    targets in its metadata: a file of kilobytes, against megabytes or gigabytes for the base."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers: nothing to save")
    meta = dict(
        format=ADAPTER_FORMAT,
        r=str(_common(layers, "r")),
        alpha=json.dumps(_common(layers, "alpha")),
        rslora=json.dumps(_common(layers, "rslora")),
        dropout=json.dumps(_common(layers, "dropout_p")),
        targets=json.dumps(list(layers)),
    )
    path = Path(path)
    save_file(adapter_state(model), str(path), metadata=meta)
    return path


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata of a safetensors file; never unpickles anything."""
    if not path.is_file():
        raise FileNotFoundError(f"adapter file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from e
    return state, meta


def _check_keys(state: dict[str, torch.Tensor], shapes: dict[str, tuple], where: str) -> None:
    """Raise naming every missing, unexpected or wrongly shaped tensor of an adapter."""
    want = set(shapes)
    missing, unexpected = sorted(want - set(state)), sorted(set(state) - want)
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {shapes[k]}"
             for k in sorted(want & set(state)) if tuple(state[k].shape) != shapes[k]]
    if missing or unexpected or wrong:
        raise ValueError(
            f"adapter {where} does not fit this model: missing keys {missing[:6]}, "
            f"unexpected keys {unexpected[:6]}, wrong shapes {wrong[:6]}"
        )


def _check_against_layers(layers: dict[str, LoRALinear], state: dict[str, torch.Tensor], where: str,
                          r: int, alpha: float, rslora: bool) -> None:
    """The adapter's settings and tensors must fit the LoRA layers already in the model."""
    mism = [f"{k}={mine!r} in the model vs {theirs!r} in the file"
            for k, mine, theirs in (("r", _common(layers, "r"), r),
                                    ("alpha", float(_common(layers, "alpha")), float(alpha)),
                                    ("rslora", _common(layers, "rslora"), rslora)) if mine != theirs]
    if mism:
        raise ValueError(f"adapter {where} does not fit this model's LoRA layers: {'; '.join(mism)}")
    shapes = {}
    for n, layer in layers.items():
        shapes[f"{n}.A"], shapes[f"{n}.B"] = tuple(layer.A.shape), tuple(layer.B.shape)
    _check_keys(state, shapes, where)


@torch.no_grad()
def load_adapter(model: nn.Module, path: str | os.PathLike) -> list[str]:
    """Load an adapter written by ``save_adapter``; inject LoRA first if the model has none.

    Every check (file format, r/alpha/rslora, key names, shapes, merged state) runs before the
    model changes, so a wrong file leaves the model as it was. Loading a second adapter into an
    injected model is how this course switches domains: the base weights are never touched.
    """
    path = Path(path)
    state, meta = _read_safetensors(path)
    if meta.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{path} is not a lorakit adapter (metadata format={meta.get('format')!r}, "
                         f"expected {ADAPTER_FORMAT!r}); for PEFT folders use load_peft_adapter")
    try:
        r, alpha, rslora = int(meta["r"]), json.loads(meta["alpha"]), json.loads(meta["rslora"])
        dropout, targets = json.loads(meta.get("dropout", "0.0")), json.loads(meta["targets"])
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path}: adapter metadata is incomplete or malformed ({e!r}); "
                         "it needs r, alpha, rslora and targets") from e
    return _copy_in(model, state, str(path), targets, r, alpha, rslora, dropout)


def _copy_in(model: nn.Module, state: dict[str, torch.Tensor], where: str, targets: list[str],
             r: int, alpha: float, rslora: bool, dropout: float) -> list[str]:
    """Check ``state`` ({"<path>.A"/".B": tensor}) against the model, inject if needed, copy."""
    layers = lora_layers(model)
    if not layers:
        _check_fresh(model, targets, state, where, r)
        inject_lora(model, targets, r, alpha, dropout=dropout, rslora=rslora)
        layers = lora_layers(model)
    else:
        merged = [n for n, layer in layers.items() if layer.merged]
        if merged:
            raise ValueError(f"LoRA layers {merged[:4]} are merged: unmerge_lora(model) before loading another adapter")
        _check_against_layers(layers, state, where, r, alpha, rslora)
    for n, layer in layers.items():
        layer.A.copy_(state[f"{n}.A"])
        layer.B.copy_(state[f"{n}.B"])
    return list(layers)


def _check_fresh(model: nn.Module, targets: list[str], state: dict, where, r: int) -> None:
    """Before injecting into a model without LoRA: the target layers exist and the shapes fit."""
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    absent = [t for t in targets if t not in linears]
    if absent:
        raise ValueError(f"adapter {where} targets layers this model lacks: {absent[:6]}; "
                         f"its linear layers are {list(linears)[:12]}")
    shapes = {}
    for t in targets:
        shapes[f"{t}.A"] = (linears[t].in_features, r)
        shapes[f"{t}.B"] = (r, linears[t].out_features)
    _check_keys(state, shapes, str(where))


# ---------------------------------------------------------------- PEFT's format


def to_peft_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter with PEFT's names and orientation: ``lora_A.weight = Aᵀ``, ``lora_B.weight = Bᵀ``."""
    state = {}
    for name, layer in lora_layers(model).items():
        state[f"{PEFT_PREFIX}{name}.lora_A.weight"] = layer.A.detach().t().contiguous().cpu()
        state[f"{PEFT_PREFIX}{name}.lora_B.weight"] = layer.B.detach().t().contiguous().cpu()
    return state


def save_peft_adapter(model: nn.Module, folder: str | os.PathLike,
                      base_model_name_or_path: str | None = None) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` as PEFT does, so that
    ``peft.PeftModel.from_pretrained(base, folder)`` rebuilds the same adapter."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers: nothing to save")
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_model_name_or_path,
        "r": _common(layers, "r"),
        "lora_alpha": _common(layers, "alpha"),
        "lora_dropout": _common(layers, "dropout_p"),
        "use_rslora": _common(layers, "rslora"),
        "target_modules": list(layers),  # exact paths: PEFT matches them as full names
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_dora": False,
    }
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PEFT_CONFIG).write_text(json.dumps(config, indent=2))
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
    unsupported = {k: cfg[k] for k in ("rank_pattern", "alpha_pattern") if cfg.get(k)}
    unsupported.update({k: cfg[k] for k in ("use_dora",) if cfg.get(k)})
    if cfg.get("bias", "none") != "none":
        unsupported["bias"] = cfg["bias"]
    if unsupported:
        raise ValueError(f"{cfg_path}: settings lorakit does not support: {unsupported}")
    for key in ("r", "lora_alpha"):
        if key not in cfg:
            raise ValueError(f"{cfg_path} has no {key!r}")
    return cfg


@torch.no_grad()
def load_peft_adapter(model: nn.Module, folder: str | os.PathLike) -> list[str]:
    """Load a PEFT LoRA adapter folder into ``model`` (injecting LoRA first if it has none),
    transposing ``lora_A.weight``/``lora_B.weight`` back to ``A``/``B``. Validated first."""
    folder = Path(folder)
    cfg = _read_peft_config(folder)
    peft_state, _ = _read_safetensors(folder / PEFT_WEIGHTS)
    r, alpha, rslora = int(cfg["r"]), cfg["lora_alpha"], bool(cfg.get("use_rslora", False))
    dropout = float(cfg.get("lora_dropout", 0.0) or 0.0)
    state, odd = {}, []
    for key, value in peft_state.items():
        name = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key
        name = name.replace(".default.weight", ".weight")
        if name.endswith(".lora_A.weight"):
            state[name[: -len(".lora_A.weight")] + ".A"] = value.t()
        elif name.endswith(".lora_B.weight"):
            state[name[: -len(".lora_B.weight")] + ".B"] = value.t()
        else:
            odd.append(key)
    if odd:
        raise ValueError(f"{folder / PEFT_WEIGHTS} holds tensors that are not LoRA A/B weights: {odd[:6]}")
    targets = sorted({k.rpartition(".")[0] for k in state})
    return _copy_in(model, state, str(folder), targets, r, alpha, rslora, dropout)
