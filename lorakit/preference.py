"""Preference tuning with LoRA: DPO from scratch, the reference as the adapter switched off (notebook 11).

DPO (Rafailov et al. 2023, arXiv 2305.18290) trains on pairs of answers to one prompt, a chosen
``y_w`` and a rejected ``y_l``. Under the Bradley–Terry model a reward ``r`` prefers ``y_w`` with
probability ``σ(r(x, y_w) − r(x, y_l))``; the policy that maximises ``E[r] − β KL(π ‖ π_ref)`` is
``π(y|x) ∝ π_ref(y|x) exp(r(x, y) / β)``, so ``r = β log(π / π_ref)`` up to a term that cancels in
the difference. Putting that reward into the Bradley–Terry likelihood gives the loss

    L = −log σ(β [(log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x))])

with log-probabilities summed over the response tokens only (notebook 09's loss mask).

With LoRA the reference ``π_ref`` is the model with its adapter switched off
(``adapter_disabled``): no second copy of the weights exists. Every function here takes the
course GPT or a Hugging Face causal LM (with lorakit's LoRA or a PEFT adapter).
"""

from __future__ import annotations

import contextlib
import random

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import encode
from .lora import lora_layers
from .sft import (
    EOS,
    IGNORE,
    TEMPLATE,
    Pair,
    _example,
    collate,
    cut_code,
    logits_of,
    pair_record,
    prompt_ids,
    response_ids,
)
from .targets import replace_module
from .train import set_seed
from .validate import number, positive_int


def token_logps(
    model: nn.Module, batch: dict
) -> tuple[torch.Tensor, torch.Tensor]:  # notebook 11 §2
    """``(logps, mask)``, both (batch, T−1): log p of each next token, and 1 where it is a labelled one.

    Position t predicts token t+1 (as in ``sft.response_loss``); ``IGNORE`` labels (prompt, padding)
    get mask 0 and log-prob 0.
    """
    device = next(model.parameters()).device
    ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
    attention = batch.get("attention_mask")
    logits = logits_of(model, ids, None if attention is None else attention.to(device))[
        :, :-1
    ].float()
    target = labels[:, 1:]
    mask = target != IGNORE
    logps = torch.gather(F.log_softmax(logits, -1), 2, target.clamp(min=0).unsqueeze(-1)).squeeze(
        -1
    )
    return logps * mask, mask.float()


def sequence_logps(model: nn.Module, batch: dict) -> torch.Tensor:  # notebook 11 §2
    """log π(y|x) of each row: the sum of its response tokens' log-probs (batch,)."""
    logps, _ = token_logps(model, batch)
    return logps.sum(-1)


@contextlib.contextmanager  # notebook 11 §2
def adapter_disabled(model: nn.Module):
    """Inside the ``with``, ``model`` computes exactly its base: every LoRA layer is switched off.

    lorakit's LoRA: each ``LoRALinear`` is swapped for its own ``base`` layer (the very same
    module object, so the output *is* the base's, bit for bit) and put back afterwards, even on an
    error. A PEFT model: its own ``disable_adapter()`` context. No weights are copied either way:
    this is how DPO and GRPO get their reference model for free with LoRA.
    """
    if hasattr(model, "disable_adapter") and hasattr(model, "peft_config"):
        with model.disable_adapter():
            yield model
        return
    layers = lora_layers(model)
    if not layers:
        raise ValueError(
            "the model has no LoRA layers to disable: a full fine-tune needs its reference as a "
            "separate frozen copy (copy.deepcopy(model) before training)"
        )
    merged = [name for name, layer in layers.items() if layer.merged]
    if merged:
        raise ValueError(
            f"LoRA layers {merged[:3]} are merged into their base: switching them off would not "
            "remove the update; call lora.unmerge_lora(model) first"
        )
    for name, layer in layers.items():
        replace_module(model, name, layer.base)
    try:
        yield model
    finally:
        for name, layer in layers.items():
            replace_module(model, name, layer)


# notebook 11 §2
def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """The DPO loss of each pair (TRL's argument order): ``−log σ(β (Δ_chosen − Δ_rejected))``.

    ``Δ = log π − log π_ref`` is how much more likely the policy makes an answer than the
    reference; ``β Δ`` is DPO's implicit reward. ``F.logsigmoid`` keeps it finite for any margin.
    Returns per-pair losses; take ``.mean()`` for a batch.
    """
    number(beta, "beta", low=0, low_open=True)
    margin = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return -F.logsigmoid(beta * margin)


# ---------------------------------------------------------------- preference pairs, offline


def rejected_summaries(pairs, seed: int = 0) -> list[str]:  # notebook 11 §2
    """For each pair, another function's summary (a seeded derangement): a fluent but wrong answer."""
    if len(pairs) < 2:
        raise ValueError(
            f"need at least 2 pairs to draw a rejected answer from another function, got {len(pairs)}"
        )
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    # shifting a random order by one: every pair gets a different pair's summary
    out = [""] * len(pairs)
    for k, i in enumerate(order):
        out[i] = pairs[order[(k + 1) % len(order)]].summary
    return out


def preference_example(
    pair: Pair, rejected: str, tokenizer=None, max_len: int = 128
) -> tuple:  # notebook 11 §2
    """``((chosen_ids, chosen_labels), (rejected_ids, rejected_labels))``, one prompt for both.

    ``tokenizer=None``: the course GPT's byte template; else the model's chat template. The
    prompt is cut so that the *longer* answer fits ``max_len``: both rows then share the very same
    prompt tokens, so the loss compares the answers alone.
    """
    positive_int(max_len, "max_len")
    end = None if tokenizer is None else tokenizer.eos_token_id
    if tokenizer is None:
        answers = [encode(s + EOS).tolist() for s in (pair.summary, rejected)]
        budget = max_len - len(encode(TEMPLATE.format(code=""))) - max(map(len, answers))
        if budget < 8:
            raise ValueError(
                f"max_len {max_len} leaves {budget} bytes for the code of {pair.name!r}"
            )
        code = cut_code(pair.code, budget)
        while len(encode(TEMPLATE.format(code=code))) + max(map(len, answers)) > max_len:
            code = code[:-4]  # non-ASCII: characters are several bytes
        prompt = encode(TEMPLATE.format(code=code)).tolist()
    else:
        answers = [response_ids(s, tokenizer, True, end) for s in (pair.summary, rejected)]
        prompt = prompt_ids(pair_record(pair), tokenizer, max_len - max(map(len, answers)))
        if prompt is None:
            raise ValueError(
                f"max_len {max_len} cannot hold the template and both answers of {pair.name!r}"
            )
    return _example(prompt, answers[0], True), _example(prompt, answers[1], True)


def preference_batch(examples: list, pad_id: int) -> dict:  # notebook 11 §2
    """One collated batch: the chosen rows first, then the rejected rows (one forward for both)."""
    return collate([c for c, _ in examples] + [r for _, r in examples], pad_id)


def dpo_logps(
    model: nn.Module, examples: list, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:  # notebook 11 §2
    """``(chosen, rejected)`` log π of each pair's answers under ``model`` (with gradients)."""
    logps = sequence_logps(model, preference_batch(examples, pad_id))
    return logps[: len(examples)], logps[len(examples) :]


def train_dpo(
    model: nn.Module,
    examples: list,
    steps: int,
    batch_size: int,
    lr: float,
    beta: float,  # notebook 11 §2
    pad_id: int,
    seed: int = 0,
    progress: bool = True,
    desc: str = "DPO",
) -> dict:
    """DPO on a LoRA model: the reference is the same model with the adapter off, each step.

    Returns per-step lists: ``loss``, ``accuracy`` (share of pairs whose implicit reward prefers
    the chosen answer) and ``margin`` (mean β(Δ_chosen − Δ_rejected)).
    """
    positive_int(steps, "steps")
    positive_int(batch_size, "batch_size")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(
            "the model has no trainable parameters: inject_lora first (or the adapter was loaded frozen)"
        )
    set_seed(seed)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    history = dict(loss=[], accuracy=[], margin=[])
    model.train()
    for step in tqdm(range(steps), desc=desc, disable=not progress):
        batch = [examples[order[(step * batch_size + j) % len(order)]] for j in range(batch_size)]
        with torch.no_grad(), adapter_disabled(model):
            ref_c, ref_r = dpo_logps(model, batch, pad_id)
        pol_c, pol_r = dpo_logps(model, batch, pad_id)
        loss = dpo_loss(pol_c, pol_r, ref_c, ref_r, beta).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        margin = beta * ((pol_c - ref_c) - (pol_r - ref_r)).detach()
        history["loss"].append(loss.item())
        history["accuracy"].append((margin > 0).float().mean().item())
        history["margin"].append(margin.mean().item())
    model.eval()
    return history


@torch.no_grad()  # notebook 11 §2
def reward_accuracy(model: nn.Module, examples: list, pad_id: int, batch_size: int = 32) -> float:
    """Share of pairs whose implicit reward prefers the chosen answer: Δ_chosen > Δ_rejected, with
    ``Δ = log π − log π_ref`` and the reference the adapter switched off (TRL's ``rewards/accuracies``).

    Raw log-probabilities would mostly compare the answers' lengths; the ratio to the reference
    cancels what the two models share. Before training the policy is the reference: 0 (no pair is
    preferred yet, all margins are exactly 0).
    """
    wins = 0
    for i in range(0, len(examples), batch_size):
        part = examples[i : i + batch_size]
        chosen, rejected = dpo_logps(model, part, pad_id)
        with adapter_disabled(model):
            ref_chosen, ref_rejected = dpo_logps(model, part, pad_id)
        wins += int(((chosen - ref_chosen) - (rejected - ref_rejected) > 0).sum())
    return wins / max(len(examples), 1)


@torch.no_grad()  # notebook 11 §2
def drift(model: nn.Module, examples: list, pad_id: int, batch_size: int = 32) -> float:
    """Mean |log π(y|x) − log π_ref(y|x)| over both answers of every pair (nats): how far DPO moved
    the model from its reference (the adapter off) on this data; β is the leash."""
    total = 0.0
    for i in range(0, len(examples), batch_size):
        part = examples[i : i + batch_size]
        pol = torch.cat(dpo_logps(model, part, pad_id))
        with adapter_disabled(model):
            ref = torch.cat(dpo_logps(model, part, pad_id))
        total += (pol - ref).abs().sum().item()
    return total / max(2 * len(examples), 1)
