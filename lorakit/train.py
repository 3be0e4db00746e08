"""Training loop, bits-per-byte evaluation and the cached base model (notebook 00).

Every later notebook starts from the same pretrained base: ``base_model()`` trains it once on
the standard library's source code and caches the weights (safetensors) with a JSON card. The
cache is keyed by the model config, the training settings and a fingerprint of the data, and the
card stores the sha256 of the weights file — so a corrupt, truncated or mismatched cache is
detected, reported and retrained, never silently used.

The learner-size base also ships inside the package (``lorakit/weights/``, 3.5 MB, with its
training card): a workshop starts in seconds instead of pretraining for minutes. It was trained
by exactly this code (``base_model(use_shipped=False)`` retrains it, one call) on the standard
library of the Python named in its card; a different Python's stdlib is still the same kind of
text, so the shipped weights are used whenever the config and settings match.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file
from tqdm.auto import tqdm

from . import __version__
from .data import fingerprint, get_batch, load_splits
from .files import read_safetensors
from .model import GPT, GPTConfig
from .validate import number, positive_int

LN2 = math.log(2.0)


def fast_mode() -> bool:  # notebook 00 §4
    """True when ``LORAKIT_FAST`` is set (the test harness sets it): same code, smaller sizes."""
    return os.environ.get("LORAKIT_FAST", "").strip().lower() not in ("", "0", "false", "no")


def pick_device() -> torch.device:  # notebook 00 §2
    """CUDA if present, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_seed(seed: int) -> None:  # notebook 00 §4
    """Seed Python and torch: the same seed gives the same initial weights and batches."""
    random.seed(seed)
    torch.manual_seed(seed)


def _context(model: nn.Module, context: int | None) -> int:
    if context is None:
        context = getattr(getattr(model, "cfg", None), "context", None)
    if context is None:
        raise ValueError("context must be given: the model has no cfg.context to take it from")
    return positive_int(context, "context")


@torch.no_grad()  # notebook 00 §4
def evaluate_lm(
    model: nn.Module,
    data: torch.Tensor,
    batch_size: int = 32,
    n_batches: int = 20,
    seed: int = 1234,
    context: int | None = None,
) -> float:
    """Mean next-byte cross-entropy in **bits per byte** on fixed random windows of ``data``.

    The windows come from a generator seeded with ``seed``, so two models (or one model before
    and after training) are compared on exactly the same text.
    """
    positive_int(n_batches, "n_batches")
    context = _context(model, context)
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    total = 0.0
    for _ in range(n_batches):
        x, y = get_batch(data, batch_size, context, gen)
        _, loss = model(x.to(device), y.to(device))
        total += loss.item()
    model.train(was_training)
    return total / n_batches / LN2


@dataclass  # notebook 00 §4
class History:
    """What a training run measured: train loss per step and validation loss per evaluation."""

    steps: list = field(default_factory=list)
    train_bpb: list = field(default_factory=list)
    eval_steps: list = field(default_factory=list)
    val_bpb: list = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            k: getattr(self, k) for k in ("steps", "train_bpb", "eval_steps", "val_bpb", "seconds")
        }


def train_lm(  # notebook 00 §4
    model: nn.Module,
    train_data: torch.Tensor,
    val_data: torch.Tensor | None = None,
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    eval_every: int | None = None,
    eval_batches: int = 10,
    weight_decay: float = 0.0,
    grad_clip: float | None = 1.0,
    warmup: int = 0,
    cosine: bool = False,
    context: int | None = None,
    desc: str = "train",
    progress: bool = True,
    optimizer: torch.optim.Optimizer | None = None,
) -> History:
    """AdamW on the parameters that have ``requires_grad`` — all of them for full fine-tuning,
    only ``A`` and ``B`` once LoRA has frozen the rest. Returns a ``History``.

    ``warmup`` steps ramp the learning rate up linearly; ``cosine`` decays it to 10 % by the end.
    ``optimizer``: use this one instead (e.g. LoRA+'s groups, notebook 04); the schedule then
    scales each group's own learning rate and ``lr``/``weight_decay`` are not used.
    """
    positive_int(steps, "steps")
    positive_int(batch_size, "batch_size")
    number(lr, "lr", low=0, low_open=True)
    context = _context(model, context)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (every requires_grad is False)")
    device = params[0].device
    gen = torch.Generator().manual_seed(seed)
    opt = (
        optimizer
        if optimizer is not None
        else torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    )
    group_lrs = [group["lr"] for group in opt.param_groups]

    def lr_at(step: int) -> float:
        """The schedule's factor at ``step`` (times each group's learning rate)."""
        scale = min(1.0, (step + 1) / warmup) if warmup else 1.0
        if cosine:
            scale *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps))
        return scale

    hist = History()
    model.train()
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        for group, group_lr in zip(opt.param_groups, group_lrs):
            group["lr"] = group_lr * lr_at(step)
        x, y = get_batch(train_data, batch_size, context, gen)
        _, loss = model(x.to(device), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        hist.steps.append(step)
        hist.train_bpb.append(loss.item() / LN2)
        last = step == steps - 1
        if val_data is not None and eval_every and (step % eval_every == 0 or last):
            hist.eval_steps.append(step)
            hist.val_bpb.append(
                evaluate_lm(model, val_data, batch_size, eval_batches, context=context)
            )
            model.train()
            bar.set_postfix(val_bpb=f"{hist.val_bpb[-1]:.3f}")
    hist.seconds = time.perf_counter() - start
    model.eval()
    return hist


# ---------------------------------------------------------------- saving and loading weights


def save_gpt(model: GPT, path: str | os.PathLike) -> None:  # notebook 00 §4
    """Weights as safetensors plus the config in the file's metadata: a file, not a pickle."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"gpt_config": json.dumps(model.cfg.to_dict())})


def load_weights(model: GPT, path: str | os.PathLike) -> GPT:  # notebook 00 §4
    """Load a safetensors checkpoint into ``model``, after checking every name and shape.

    Nothing is copied unless everything matches, so a checkpoint from another config leaves
    the model untouched and says which tensors differ.
    """
    state, _ = read_safetensors(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = [
            f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in wrong[:5]
        ]
        raise ValueError(
            f"checkpoint {path} does not fit this model (config {model.cfg}): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shapes {detail}"
        )
    model.load_state_dict(state)
    return model


def load_gpt(path: str | os.PathLike, device: torch.device | str = "cpu") -> GPT:  # notebook 00 §4
    """A GPT rebuilt from the config stored in the checkpoint, with its weights loaded."""
    _, meta = read_safetensors(path)
    if "gpt_config" not in meta:
        raise ValueError(f"{path} has no 'gpt_config' metadata: it was not written by save_gpt")
    model = GPT(GPTConfig(**json.loads(meta["gpt_config"])))
    return load_weights(model, path).to(device)


# ---------------------------------------------------------------- the cached base model


def base_settings() -> dict:  # notebook 00 §4
    """Config and training settings of the base model: learner size, or tiny in test mode.

    Learner size (4 layers, d=128, context 128) trains in a few minutes on 2 CPU cores.
    """
    if fast_mode():
        cfg = GPTConfig(context=64, n_layer=2, n_head=2, d_model=64)
        return dict(config=cfg, steps=80, batch_size=16, lr=3e-3, max_bytes=2_000_000, seed=0)
    cfg = GPTConfig(context=128, n_layer=4, n_head=4, d_model=128)
    return dict(config=cfg, steps=800, batch_size=32, lr=2e-3, max_bytes=None, seed=0)


def cache_dir() -> Path:  # notebook 00 §4
    """``$LORAKIT_CACHE`` if set, else ``~/.cache/lorakit``."""
    return Path(os.environ.get("LORAKIT_CACHE") or Path.home() / ".cache" / "lorakit")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_cache(
    weights: Path, card: Path, key: str, cfg: GPTConfig
) -> tuple[GPT | None, dict, str]:
    """(model, card, "") when the cache is good, else (None, {}, why it is not)."""
    if not weights.exists() and not card.exists():
        return None, {}, ""
    try:
        info = json.loads(card.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return None, {}, f"its card {card.name} is unreadable ({e})"
    if info.get("key") != key or info.get("config") != cfg.to_dict():
        return None, {}, "it was trained with another config, settings or data"
    if not weights.exists() or _sha256(weights) != info.get("sha256"):
        return None, {}, f"{weights.name} is missing or its sha256 does not match the card"
    try:
        return load_gpt(weights), info, ""
    except ValueError as e:
        return None, {}, str(e)


#: the base model that ships with the package (learner size), and its training card
SHIPPED = Path(__file__).resolve().parent / "weights" / "base-learner.safetensors"


def _ship_key(settings: dict) -> str:
    """What must match for the shipped weights to be the ones asked for: config and settings."""
    described = {k: v for k, v in settings.items() if k != "config"}
    described["config"] = settings["config"].to_dict()
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def _read_shipped(settings: dict) -> tuple[GPT | None, dict]:
    """The shipped base model when its card matches ``settings`` and its sha256 checks out."""
    card = SHIPPED.with_suffix(".json")
    if not SHIPPED.exists() or not card.exists():
        return None, {}
    info = json.loads(card.read_text())
    if info.get("ship_key") != _ship_key(settings) or _sha256(SHIPPED) != info.get("sha256"):
        return None, {}
    return load_gpt(SHIPPED), info


def ship_base_model(model: GPT, info: dict, settings: dict | None = None) -> Path:  # notebook 00 §4
    """Write ``model`` and its card to ``lorakit/weights/`` (how the shipped base was made)."""
    settings = settings or base_settings()
    SHIPPED.parent.mkdir(parents=True, exist_ok=True)
    save_gpt(model.cpu(), SHIPPED)
    card = {k: info[k] for k in ("key", "config", "settings", "val_bpb", "history")}
    card.update(
        ship_key=_ship_key(settings),
        sha256=_sha256(SHIPPED),
        trained_with=f"Python {sys.version.split()[0]}, torch {torch.__version__}, lorakit {__version__}",
    )
    SHIPPED.with_suffix(".json").write_text(json.dumps(card, indent=1))
    return SHIPPED


# notebook 00 §4
def base_model(
    progress: bool = True,
    device: torch.device | str | None = None,
    use_shipped: bool = True,
    **overrides,
):
    """The course's pretrained base GPT and a dict describing it; shipped or trained once, then cached.

    Returns ``(model, info)`` with ``info`` holding ``val_bpb``, the training ``history``,
    ``config``, ``path`` and ``trained`` (False when it came from the cache or the package).
    Keyword ``overrides`` replace entries of ``base_settings()`` (config, steps, batch_size, lr,
    ...). ``use_shipped=False`` ignores the weights that ship with lorakit and trains (or uses a
    cache trained here).
    """
    settings = {**base_settings(), **overrides}
    unknown = set(overrides) - set(base_settings())
    if unknown:
        raise ValueError(
            f"unknown base_model settings {sorted(unknown)}; allowed: {sorted(base_settings())}"
        )
    cfg: GPTConfig = settings["config"]
    if use_shipped:  # before reading 12 MB of data: the shipped model needs none
        model, info = _read_shipped(settings)
        if model is not None:
            info.update(path=str(SHIPPED), trained=False)
            return model.to(device or "cpu").eval(), info
    train_data, val_data = load_splits("code", settings["max_bytes"])
    described = {k: v for k, v in settings.items() if k != "config"}
    described.update(config=cfg.to_dict(), data=fingerprint(train_data), version=__version__)
    key = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_dir()
    weights, card = folder / f"base-{key}.safetensors", folder / f"base-{key}.json"

    model, info, why = _read_cache(weights, card, key, cfg)
    if model is not None:
        info.update(path=str(weights), trained=False)
        return model.to(device or "cpu").eval(), info

    if why:
        print(f"lorakit: ignoring the cached base model at {weights}: {why}. Retraining.")

    set_seed(settings["seed"])
    model = GPT(cfg).to(device or pick_device())
    hist = train_lm(
        model,
        train_data,
        val_data,
        steps=settings["steps"],
        batch_size=settings["batch_size"],
        lr=settings["lr"],
        seed=settings["seed"],
        eval_every=max(1, settings["steps"] // 10),
        warmup=max(1, settings["steps"] // 20),
        cosine=True,
        desc="pretraining base",
        progress=progress,
    )
    val_bpb = evaluate_lm(model, val_data, settings["batch_size"], n_batches=20)
    folder.mkdir(parents=True, exist_ok=True)
    model.cpu()
    # write to temporary names, then rename: a run killed half-way leaves no half-written cache
    tmp_weights = weights.with_name(f"{weights.name}.tmp{os.getpid()}")
    tmp_card = card.with_name(f"{card.name}.tmp{os.getpid()}")
    save_gpt(model, tmp_weights)
    info = dict(
        key=key,
        config=cfg.to_dict(),
        settings=described,
        val_bpb=val_bpb,
        history=hist.to_dict(),
        sha256=_sha256(tmp_weights),
    )
    tmp_card.write_text(json.dumps(info, indent=1))
    os.replace(tmp_weights, weights)
    os.replace(tmp_card, card)
    info.update(path=str(weights), trained=True)
    return model.to(device or "cpu").eval(), info


# ---------------------------------------------------------------- a short LoRA experiment


# notebook 03 §3 (the α slider) and §4 (the rank sweep)
def short_lora_run(
    base: nn.Module,
    train_data: torch.Tensor,
    val_data: torch.Tensor,
    *,
    r: int,
    alpha: float,
    steps: int,
    rslora: bool = False,
    targets=("q_proj", "v_proj"),
    lr: float = 2e-3,
    batch_size: int = 16,
    seed: int = 0,
    eval_batches: int = 10,
) -> dict:
    """Train a LoRA adapter on a copy of ``base`` for ``steps`` steps; return what it measured.

    ``base`` is never modified (a deep copy is adapted). The result holds ``val_bpb`` (bits per
    byte on ``val_data``), the per-step ``train_bpb``, ``scaling`` (α/r or α/√r), ``dW_norm``
    (mean ‖scaling·A B‖_F over the adapted layers), ``A`` ({layer name: A, in×r}) and ``seconds``.
    Deterministic for a given ``seed`` (it seeds A's init and the batches).
    """
    import copy

    from .lora import LoRAConfig, inject_lora, lora_layers
    from .validate import positive_int

    if not isinstance(base, nn.Module):
        raise TypeError(f"base must be an nn.Module, got {type(base).__name__}")
    positive_int(steps, "steps")
    config = LoRAConfig(r=r, alpha=alpha, rslora=rslora, targets=tuple(targets))
    model = copy.deepcopy(base).cpu()
    set_seed(seed)
    inject_lora(model, config=config)
    hist = train_lm(
        model,
        train_data,
        None,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        progress=False,
    )
    layers = lora_layers(model)
    with torch.no_grad():
        norms = [float(torch.linalg.matrix_norm(layer.delta())) for layer in layers.values()]
    return dict(
        r=r,
        alpha=alpha,
        rslora=rslora,
        steps=steps,
        seed=seed,
        scaling=config.scaling,
        val_bpb=evaluate_lm(model, val_data, batch_size, eval_batches),
        train_bpb=list(hist.train_bpb),
        dW_norm=sum(norms) / len(norms),
        A={name: layer.A.detach().clone() for name, layer in layers.items()},
        seconds=hist.seconds,
    )


# ---------------------------------------------------------------- old names (deprecated)
# One meaning per name (issue 25): ``hf.load_model`` loads a Hugging Face model, ``sft.train_sft``
# and ``sft.evaluate_sft`` work on instruction pairs. The old names stay as plain aliases (no
# warning: a notebook cell that writes to stderr fails) for notebooks written against them.
train = train_lm  # deprecated: use train_lm
evaluate = evaluate_lm  # deprecated: use evaluate_lm
save_model = save_gpt  # deprecated: use save_gpt
load_model = load_gpt  # deprecated: use load_gpt
