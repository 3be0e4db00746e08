"""Training a real model well: the options ``sft.train_sft`` and ``hf.fine_tune`` take (notebook 09 §10).

Each is off by default (the course's short runs do not need them) and each fixes something a real
fine-tune runs into:

- ``learning_rate``: linear warm-up, then constant (QLoRA's choice, the default) or a **cosine**
  decay to ``min_ratio · lr`` (what most SFT recipes use: large steps first, small ones at the end);
- ``choose_optimizer`` / ``make_optimizer``: ``"adamw"`` (torch, float32 states: 8 bytes per
  trainable parameter), or bitsandbytes' ``"paged_adamw_8bit"`` / ``"adamw_8bit"`` (blockwise
  8-bit states: ≈ 2.03 bytes per parameter, paged to host memory under pressure). Those run only on
  CUDA; elsewhere the documented **fallback** is torch's AdamW, and the reason is returned;
- ``length_grouped_order``: batches of examples of similar length, so little of each padded batch
  is padding (``padding_share`` measures it); the order is still random across batches;
- ``end_of_turn_id``: the token a chat template closes an assistant turn with, read from the
  template itself (ChatML's ``<|im_end|>``; Gemma's ``<end_of_turn>``, which is **not** its EOS);
- ``save_adapter_for_peft`` / ``load_peft_over_4bit``: the adapter in PEFT's format, loaded with
  ``peft.PeftModel.from_pretrained`` over a bitsandbytes 4-bit base.

Gradient clipping and gradient accumulation are arguments of ``sft.train_sft`` itself.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from .quiet import quiet_import
from .validate import integer, number, positive_int

SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adamw", "adamw_8bit", "paged_adamw_8bit")
#: bytes of optimizer state per trainable parameter: AdamW keeps two float32 moments; bitsandbytes'
#: 8-bit AdamW keeps two uint8 moments plus one float32 absmax per 256-value block of each
STATE_BYTES_PER_PARAM = {
    "adamw": 8.0,
    "adamw_8bit": 2 * (1 + 4 / 256),
    "paged_adamw_8bit": 2 * (1 + 4 / 256),
}
#: bitsandbytes keeps 32-bit states for tensors smaller than this (its ``min_8bit_size``)
MIN_8BIT_SIZE = 4096


# ---------------------------------------------------------------- the learning-rate schedule


def learning_rate(
    step: int,
    steps: int,
    lr: float,
    warmup: int = 0,
    schedule: str = "constant",  # notebook 09 §10
    min_ratio: float = 0.0,
) -> float:
    """The learning rate of ``step`` (0-based) of ``steps``.

    Warm-up: ``lr · (step + 1) / warmup`` for the first ``warmup`` steps (the first step already
    moves; starting at 0 would waste it). Then ``"constant"``: ``lr``; or ``"cosine"``: from
    ``lr`` down to ``min_ratio · lr`` along half a cosine, ``p = (step − warmup)/(steps − warmup)``,
    ``lr_min + (lr − lr_min) · ½(1 + cos πp)`` — transformers' ``get_cosine_schedule_with_warmup``
    after its warm-up when ``min_ratio = 0``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    integer(step, "step", low=0)
    positive_int(steps, "steps")
    integer(warmup, "warmup", low=0)
    number(min_ratio, "min_ratio", low=0, high=1)
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    p = (step - warmup) / max(1, steps - warmup)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))


# ---------------------------------------------------------------- the optimizer


# notebook 09 §10
def choose_optimizer(
    name: str, device: torch.device | str, bitsandbytes_available: bool | None = None
) -> tuple[str, str]:  # notebook 09 §10
    """``(optimizer that will run, why)`` for the requested ``name`` on ``device``.

    bitsandbytes' 8-bit optimizers update their states with CUDA kernels (0.50 on the CPU fails at
    the first step), so on a CPU, MPS, or without bitsandbytes the fallback is ``"adamw"`` (torch,
    float32 states: 4× the memory, the same update up to the 8-bit rounding of the moments).
    ``why`` is ``""`` when the request is granted.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    device = torch.device(device)
    if name == "adamw":
        return name, ""
    if device.type != "cuda":
        return "adamw", (
            f"{name} needs CUDA (bitsandbytes' 8-bit optimizer kernels); on {device.type} "
            "torch's AdamW (float32 states) runs instead"
        )
    if bitsandbytes_available is None:
        bitsandbytes_available = quiet_import("bitsandbytes") is not None
    if not bitsandbytes_available:
        return (
            "adamw",
            f"{name} needs bitsandbytes (pip install bitsandbytes); torch's AdamW runs instead",
        )
    return name, ""


# notebook 09 §10
def make_optimizer(
    params, name: str, lr: float, device: torch.device | str, weight_decay: float = 0.0
) -> tuple[torch.optim.Optimizer, str, str]:  # notebook 09 §10
    """``(optimizer, chosen name, why)``: ``choose_optimizer``, then build it over ``params``."""
    chosen, why = choose_optimizer(name, device)
    params = list(params)
    if chosen == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay), chosen, why
    bnb = quiet_import("bitsandbytes")
    cls = bnb.optim.PagedAdamW8bit if chosen == "paged_adamw_8bit" else bnb.optim.AdamW8bit
    return cls(params, lr=lr, weight_decay=weight_decay), chosen, why


def optimizer_state_bytes(params, name: str) -> int:  # notebook 09 §10
    """Bytes the optimizer ``name`` keeps for ``params``: ``STATE_BYTES_PER_PARAM`` per value (a
    tensor under ``MIN_8BIT_SIZE`` keeps 32-bit states in bitsandbytes), ignoring the step counter.

    On CUDA, ``memory.track_peak`` measures the same states: paged ones live in unified memory,
    which it adds to the allocator's peak (``memory.paged_state_bytes``).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    total = 0.0
    for p in params:
        n = p.numel()
        if name == "adamw" or n < MIN_8BIT_SIZE:
            total += 8 * n
        else:
            total += 2 * (n + 4 * math.ceil(n / 256))
    return int(total)


# ---------------------------------------------------------------- less padding


def length_grouped_order(
    lengths, batch_size: int, seed: int = 0, group: int = 50
) -> list[int]:  # notebook 09 §10
    """A random order of ``range(len(lengths))`` whose consecutive ``batch_size`` chunks hold
    examples of similar length (transformers' ``group_by_length``).

    Shuffle; cut into mega-batches of ``group · batch_size``; sort each by length; cut into batches;
    shuffle the batches, then put the one holding the longest example first (an out-of-memory error
    shows at step 1, not at step 900). Still an epoch: every index appears once.
    """
    positive_int(batch_size, "batch_size")
    positive_int(group, "group")
    n = len(lengths)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen).tolist()
    mega = group * batch_size
    batches = []
    for start in range(0, n, mega):
        chunk = sorted(perm[start : start + mega], key=lambda i: -lengths[i])
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    shuffled = [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]
    longest = max(
        range(len(shuffled)), key=lambda b: max(lengths[i] for i in shuffled[b]), default=0
    )
    shuffled.insert(0, shuffled.pop(longest))
    return [i for batch in shuffled for i in batch]


def padding_share(lengths, order, batch_size: int) -> float:  # notebook 09 §10
    """The share of padding among all tokens when ``order`` is cut into batches of ``batch_size``,
    each right-padded to its longest example (what ``sft.collate`` does)."""
    positive_int(batch_size, "batch_size")
    real = padded = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[start : start + batch_size]]
        real += sum(batch)
        padded += max(batch) * len(batch)
    return 1 - real / max(padded, 1)


# ---------------------------------------------------------------- the end-of-turn token

_PROBE = "lorakit-probe-7f3a"


def _as_ids(encoded) -> list[int]:
    return list(encoded if isinstance(encoded, list) else encoded["input_ids"])


def end_of_turn_id(tokenizer) -> int:  # notebook 09 §10
    """The token the chat template closes an assistant turn with.

    Render a conversation whose assistant turn is a probe string and read what the template writes
    right after it: the first special (or added) token there. ChatML gives ``<|im_end|>`` (SmolLM2
    and Qwen set it as EOS too); Gemma gives ``<end_of_turn>`` while its EOS is ``<eos>``, so a
    model trained to end answers with EOS never learns the stop its template (and ``generate``'s
    chat use) expects. A template that writes nothing special after the answer falls back to EOS.
    """
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise ValueError(
            "the tokenizer has no chat template: there is no end-of-turn token to find"
        )
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    if _PROBE not in text:
        raise ValueError(
            "the chat template did not write the assistant's message: cannot find its end"
        )
    after = text[text.index(_PROBE) + len(_PROBE) :]
    special = set(tokenizer.all_special_ids) | set(
        getattr(tokenizer, "added_tokens_decoder", {}) or {}
    )
    for token_id in _as_ids(tokenizer(after, add_special_tokens=False)):
        if token_id in special:
            return int(token_id)
    if tokenizer.eos_token_id is None:
        raise ValueError(
            "the template writes no special token after an answer and the tokenizer has no EOS"
        )
    return int(tokenizer.eos_token_id)


# ---------------------------------------------------------------- the adapter, for PEFT


def save_adapter_for_peft(
    model: nn.Module, folder: str | os.PathLike, model_id: str | os.PathLike
) -> Path:  # notebook 09 §10
    """Save the LoRA adapter of a lorakit QLoRA/LoRA Hugging Face model in PEFT's format (notebook 09 §10).

    ``adapter_config.json`` (with ``task_type="CAUSAL_LM"`` and the base model's id) and
    ``adapter_model.safetensors``: ``peft.PeftModel.from_pretrained(base, folder)`` rebuilds it,
    over a 16-bit base or a bitsandbytes 4-bit one (``load_peft_over_4bit``).
    """
    from .adapters import save_peft_adapter

    return save_peft_adapter(
        model, folder, base_model_name_or_path=str(model_id), task_type="CAUSAL_LM"
    )


# notebook 09 §10
def load_peft_over_4bit(
    model_id: str | os.PathLike,
    folder: str | os.PathLike,
    compute_dtype: torch.dtype,
    device: torch.device | str = "cpu",
    local_only: bool = False,
) -> nn.Module:
    """``peft.PeftModel.from_pretrained`` of ``folder`` over ``model_id`` loaded in 4 bits by
    bitsandbytes (NF4, double quantization: the storage lorakit's ``Linear4bit`` computes bit for
    bit), in eval mode. bitsandbytes ≥ 0.47 loads and runs 4-bit layers on the CPU too."""
    from .hf import load_bnb_4bit

    base = load_bnb_4bit(model_id, compute_dtype, device, local_only)
    peft = quiet_import("peft")
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # PEFT's notes about the adapter's base id: not a problem here
        return peft.PeftModel.from_pretrained(base, str(folder)).eval()
