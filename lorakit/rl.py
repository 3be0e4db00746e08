"""Reinforcement learning with LoRA: a reward Python can verify, and GRPO from scratch (notebook 11).

The task is notebook 09's: read a function's code, write the first line of its docstring. The
**verifier** (``reward_parts``) scores an answer with rules a learner can read in one screen:

- ``stops``    — the model ended its answer with the end-of-sequence marker within the budget;
- ``sentence`` — one line that starts with a capital letter and ends with a full stop;
- ``overlap``  — the content words it shares with the true docstring line, divided by the larger
  of the two word counts: padding an answer with guessed words *lowers* it, so a long list of
  likely words cannot win.

GRPO (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300) samples a group of G answers per prompt,
scores each, and uses the group itself as the baseline: the advantage of answer i is
``(r_i − mean r) / std r`` within its group (``group_advantages``). The loss is PPO's clipped
ratio on every answer token plus a KL penalty to the reference model (``grpo_loss``). With LoRA
the reference is the model with its adapter switched off (``preference.adapter_disabled``); a
full fine-tune needs a frozen copy of the whole model.

Everything takes the course GPT (bytes, ``byte_task``) or a Hugging Face causal LM
(its tokenizer and chat template, ``chat_task``).
"""

from __future__ import annotations

import copy
import json
import os
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .data import decode, encode
from .lora import inject_lora, remove_lora
from .preference import adapter_disabled, token_logps
from .sft import (
    EOS,
    TEMPLATE,
    _example,
    byte_examples,
    collate,
    docstring_pairs,
    pair_record,
    prompt_ids,
    train_sft,
)
from .train import base_model, cache_dir, fast_mode, load_weights, save_model, set_seed
from .validate import number, positive_int

#: words too common to count as sharing content ("Return the ..." is in every other docstring)
STOPWORDS = frozenset(
    """a an the of to in on at by for from with as is are be it its this that these
those and or not if else when then than into given all any each one object value values return returns""".split()
)
#: weights of the verifier's three parts; they sum to 1, so a reward lies in [0, 1]
WEIGHTS = dict(stops=0.25, sentence=0.25, overlap=0.5)


def content_words(text: str) -> set[str]:  # notebook 11 §1
    """Lower-case words of at least 3 letters that are not ``STOPWORDS`` (snake_case split at ``_``)."""
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 3 and w not in STOPWORDS}


def reward_parts(answer: str, stopped: bool, summary: str) -> dict[str, float]:  # notebook 11 §1
    """The verifier's three checks of ``answer`` against the true ``summary``, each in [0, 1]."""
    text = answer.strip()
    sentence = bool(text) and "\n" not in text and text[0].isupper() and text.endswith(".")
    got, want = content_words(text), content_words(summary)
    overlap = len(got & want) / max(len(got), len(want), 1)
    return dict(stops=float(bool(stopped)), sentence=float(sentence), overlap=overlap)


def reward(answer: str, stopped: bool, summary: str) -> float:  # notebook 11 §1
    """The weighted sum of ``reward_parts`` (``WEIGHTS``): 1.0 for the true summary, ended with EOS."""
    parts = reward_parts(answer, stopped, summary)
    return sum(WEIGHTS[k] * v for k, v in parts.items())


# ---------------------------------------------------------------- prompts for either kind of model


@dataclass
class Task:  # notebook 11 §1
    """Prompts as token ids, the true summaries the verifier compares with, and how to read tokens."""

    prompts: list[list[int]]
    summaries: list[str]
    end_id: int
    pad_id: int
    decode: Callable[[list[int]], str]
    context: int | None = None  # the course GPT's context: prompt + answer must fit


def byte_task(pairs, code_bytes: int, context: int) -> Task:  # notebook 11 §1
    """The course GPT's task: ``TEMPLATE`` around the first ``code_bytes`` bytes of each function.

    Every prompt has the same length, so a whole step's groups are sampled in one batch; functions
    shorter than ``code_bytes`` are left out.
    """
    positive_int(code_bytes, "code_bytes")
    head, tail = (encode(part).tolist() for part in TEMPLATE.split("{code}"))
    kept = [p for p in pairs if len(encode(p.code)) >= code_bytes]
    prompts = [head + encode(p.code)[:code_bytes].tolist() + tail for p in kept]
    return Task(prompts, [p.summary for p in kept], ord(EOS), 0, lambda ids: decode(ids), context)


def chat_task(pairs, tokenizer, max_code_chars: int = 300) -> Task:  # notebook 11 §5
    """A Hugging Face chat model's task: notebook 09's chat prompt (instruction + code's head)."""
    prompts = [prompt_ids(pair_record(p, max_code_chars), tokenizer) for p in pairs]
    return Task(
        prompts,
        [p.summary for p in pairs],
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
        lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
    )


# ---------------------------------------------------------------- sampling a group


@torch.no_grad()  # notebook 11 §3
def sample(
    model: nn.Module,
    task: Task,
    prompts: list[list[int]],
    n: int,
    max_new: int,
    temperature: float = 1.0,
    seed: int = 0,
) -> list[list[tuple[list[int], bool]]]:
    """``n`` answers to each prompt: per prompt, a list of ``(token ids without the end marker, stopped)``.

    ``temperature=0``: greedy. Sampling is from the model's full distribution (no top-k), so the
    log-probabilities GRPO computes are those of the policy that sampled. The course GPT has no
    padding mask: its prompts must be of one length (``byte_task`` makes them so).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    if hasattr(model, "cfg") and hasattr(
        model, "blocks"
    ):  # the course GPT: byte by byte, all rows at once
        if len({len(p) for p in prompts}) != 1:
            raise ValueError(
                "the course GPT samples prompts of one length only (byte_task makes them so)"
            )
        if len(prompts[0]) + max_new > model.cfg.context:
            raise ValueError(
                f"prompt ({len(prompts[0])}) + max_new ({max_new}) exceeds the context {model.cfg.context}"
            )
        ids = torch.tensor([p for p in prompts for _ in range(n)], device=device)
        out = torch.empty(len(ids), 0, dtype=torch.long)
        done = torch.zeros(len(ids), dtype=torch.bool)
        for _ in range(max_new):
            logits = model(ids)[0][:, -1].float().cpu()
            if temperature == 0:
                nxt = logits.argmax(-1)
            else:
                nxt = torch.multinomial(
                    torch.softmax(logits / temperature, -1), 1, generator=gen
                ).squeeze(-1)
            out = torch.cat([out, nxt.unsqueeze(1)], 1)
            done |= nxt == task.end_id
            if done.all():
                break
            ids = torch.cat([ids, nxt.unsqueeze(1).to(device)], 1)
        rows = out.tolist()
    else:  # a Hugging Face model: its own generate, prompts padded on the left
        torch.manual_seed(seed)
        T = max(len(p) for p in prompts)
        ids = torch.tensor(
            [[task.pad_id] * (T - len(p)) + p for p in prompts for _ in range(n)], device=device
        )
        attention = torch.tensor(
            [[0] * (T - len(p)) + [1] * len(p) for p in prompts for _ in range(n)], device=device
        )
        kwargs = (
            dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
            if temperature
            else dict(do_sample=False)
        )
        rows = model.generate(
            input_ids=ids,
            attention_mask=attention,
            max_new_tokens=max_new,
            eos_token_id=task.end_id,
            pad_token_id=task.pad_id,
            **kwargs,
        )[:, T:].tolist()
    model.train(was_training)
    answers = []
    for row in rows:
        stopped = task.end_id in row
        answers.append((row[: row.index(task.end_id)] if stopped else row, stopped))
    return [answers[k * n : (k + 1) * n] for k in range(len(prompts))]


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:  # notebook 11 §3
    """``(r − mean r) / (std r + eps)`` within each group (row): GRPO's advantage, no value model.

    ``rewards`` is (groups, G). ``std`` is ``torch.std`` (n − 1), as TRL computes it. A group
    whose rewards are all equal gets advantage 0 for every answer: it teaches nothing.
    """
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(
            f"rewards must be (groups, G) with G >= 2, got shape {tuple(rewards.shape)}"
        )
    return (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + eps)


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    mask: torch.Tensor,  # notebook 11 §3
    advantages: torch.Tensor,
    clip: float = 0.2,
    kl_coef: float = 0.04,
) -> tuple[torch.Tensor, dict]:
    """GRPO's loss (DeepSeekMath eq. 3) and its statistics; all token tensors (answers, T).

    Per token: ``min(ρ Â, clip(ρ, 1 − ε, 1 + ε) Â) − β KL``, with ``ρ = π / π_old`` and the KL
    estimated without bias by ``π_ref/π − log(π_ref/π) − 1`` (≥ 0); averaged over each answer's
    tokens, then over the answers, and negated (we minimise). ``advantages`` is one per answer.
    """
    ratio = torch.exp(logps - old_logps)
    A = advantages.unsqueeze(1)
    surrogate = torch.min(ratio * A, torch.clamp(ratio, 1 - clip, 1 + clip) * A)
    log_ref_ratio = ref_logps - logps
    kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1
    per_token = -(surrogate - kl_coef * kl)
    lengths = mask.sum(1).clamp(min=1)
    loss = ((per_token * mask).sum(1) / lengths).mean()
    tokens = mask.sum().clamp(min=1)
    stats = dict(
        kl=((kl * mask).sum() / tokens).item(),
        clipped=((((ratio - 1).abs() > clip).float() * mask).sum() / tokens).item(),
    )
    return loss, stats


def _answer_batch(task: Task, prompt: list[int], answers) -> dict:
    """Prompt + answer (+ end marker where it stopped) per row; only answer tokens are labelled."""
    rows = [
        _example(prompt, ids + ([task.end_id] if stopped else []), True) for ids, stopped in answers
    ]
    return collate(rows, task.pad_id)


def _reference_logps(model: nn.Module, reference: nn.Module | None, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        if reference is None:
            with adapter_disabled(model):
                return token_logps(model, batch)[0]
        return token_logps(reference, batch)[0]


def train_grpo(
    model: nn.Module,
    task: Task,
    steps: int,
    *,
    lr: float,
    group_size: int = 8,  # notebook 11 §3
    prompts_per_step: int = 4,
    max_new: int = 48,
    temperature: float = 1.0,
    clip: float = 0.2,
    kl_coef: float = 0.04,
    updates_per_batch: int = 1,
    reference: nn.Module | None = None,
    reward_fn: Callable[[str, bool, str], float] | None = None,
    seed: int = 0,
    progress: bool = True,
    desc: str = "GRPO",
) -> dict:
    """GRPO on ``model``'s trainable parameters; the history of the run, one entry per step.

    Each step: ``prompts_per_step`` prompts (seeded order), ``group_size`` sampled answers each,
    rewards from the verifier, group-normalised advantages, then ``updates_per_batch`` AdamW
    updates on the same samples (from the second on, the ratio ρ moves away from 1 and the clip
    acts). ``reference=None``: the model itself with its adapter off (LoRA); a full fine-tune
    passes a frozen copy. ``reward_fn(answer, stopped, summary)``: the verifier (default ``reward``).
    History: ``reward`` (mean), ``zero_groups`` (share of groups whose
    rewards were all equal), ``kl``, ``clipped`` (share of tokens), ``loss``.
    """
    positive_int(steps, "steps")
    positive_int(group_size, "group_size")
    positive_int(prompts_per_step, "prompts_per_step")
    number(lr, "lr", low=0, low_open=True)
    if group_size < 2:
        raise ValueError(
            f"group_size must be at least 2 (the group is the baseline), got {group_size}"
        )
    params = [p for p in model.parameters() if p.requires_grad]
    history = dict(reward=[], zero_groups=[], kl=[], clipped=[], loss=[])
    if not params:
        raise ValueError(
            "the model has no trainable parameters: the adapter was loaded frozen "
            "(PeftModel.from_pretrained(..., is_trainable=True)) or never injected (inject_lora)"
        )
    score = reward if reward_fn is None else reward_fn
    set_seed(seed)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    order = torch.randperm(
        len(task.prompts), generator=torch.Generator().manual_seed(seed)
    ).tolist()
    for step in tqdm(range(steps), desc=desc, disable=not progress):
        picked = [
            order[(step * prompts_per_step + j) % len(order)] for j in range(prompts_per_step)
        ]
        answers = sample(
            model,
            task,
            [task.prompts[i] for i in picked],
            group_size,
            max_new,
            temperature,
            seed=seed * 100_003 + step,
        )
        groups = []
        for i, group in zip(picked, answers):
            scores = [score(task.decode(ids), stopped, task.summaries[i]) for ids, stopped in group]
            groups.append((task.prompts[i], group, scores))
        R = torch.tensor([g[2] for g in groups])
        adv = group_advantages(R)
        batches = [_answer_batch(task, prompt, answers) for prompt, answers, _ in groups]
        model.train()
        with torch.no_grad():
            old = [token_logps(model, b)[0] for b in batches]
        refs = [_reference_logps(model, reference, b) for b in batches]
        for _ in range(updates_per_batch):
            opt.zero_grad(set_to_none=True)
            total, stats = 0.0, dict(kl=0.0, clipped=0.0)
            for k, b in enumerate(batches):
                logps, mask = token_logps(model, b)
                loss, s = grpo_loss(logps, old[k], refs[k], mask, adv[k], clip, kl_coef)
                (loss / len(batches)).backward()
                total += loss.item() / len(batches)
                stats = {key: stats[key] + s[key] / len(batches) for key in stats}
            opt.step()
        model.eval()
        history["reward"].append(R.mean().item())
        history["zero_groups"].append((R.std(1) == 0).float().mean().item())
        history["kl"].append(stats["kl"])
        history["clipped"].append(stats["clipped"])
        history["loss"].append(total)
    return history


@torch.no_grad()  # notebook 11 §3
def greedy_answers(
    model: nn.Module, task: Task, max_new: int, batch_size: int = 64
) -> list[tuple[str, bool]]:
    """``model``'s greedy answer to every prompt of ``task``: ``(text, stopped)``."""
    out = []
    for i in range(0, len(task.prompts), batch_size):
        for ((ids, stopped),) in sample(
            model, task, task.prompts[i : i + batch_size], 1, max_new, temperature=0
        ):
            out.append((task.decode(ids), stopped))
    return out


def mean_reward(model: nn.Module, task: Task, max_new: int) -> float:  # notebook 11 §3
    """The verifier's mean reward of ``model``'s greedy answers to every prompt of ``task``."""
    answers = greedy_answers(model, task, max_new)
    return sum(reward(a, stopped, s) for (a, stopped), s in zip(answers, task.summaries)) / max(
        len(answers), 1
    )


# ---------------------------------------------------------------- the starting point: notebook 09's SFT


def sft_settings() -> dict:  # notebook 11 §3
    """Notebook 09 §3's LoRA fine-tune of the course GPT, at the current mode's sizes."""
    fast = fast_mode()
    return dict(
        max_summary=28 if fast else 60,
        steps=40 if fast else 150,
        batch_size=16,
        lr=1e-2,
        r=8,
        alpha=16,
        targets="all-linear",
        seed=0,
    )


def sft_start(progress: bool = True) -> tuple[nn.Module, dict]:  # notebook 11 §3
    """The course GPT after notebook 09's supervised fine-tune (LoRA, merged): where RL starts.

    Trained once with ``sft_settings()`` and cached (safetensors) beside the base model; later
    calls read it in a second. Returns ``(model, settings)``.
    """
    base, info = base_model(progress=False)
    settings = sft_settings()
    key = zlib.crc32(
        json.dumps(
            dict(
                settings,
                base=info.get("sha256") or info.get("key") or str(info.get("path")),
                config=base.cfg.to_dict(),
                init="seeded",  # LoRA's A drawn after set_seed: older caches drew it unseeded
            ),
            sort_keys=True,
            default=str,
        ).encode()
    )
    path = cache_dir() / f"sft-start-{key:08x}.safetensors"
    model = copy.deepcopy(base)
    if path.exists():
        try:
            return load_weights(model, path).eval(), settings
        except (OSError, ValueError):
            pass  # unreadable: train it again
    examples = byte_examples(docstring_pairs("train", settings["max_summary"]), base.cfg.context)
    # A starts random: seed it here, or it depends on whatever drew random numbers before this
    # call (train_sft seeds only the batches), and the same settings give another start
    set_seed(settings["seed"])
    inject_lora(model, settings["targets"], r=settings["r"], alpha=settings["alpha"])
    train_sft(
        model,
        examples,
        settings["steps"],
        settings["batch_size"],
        settings["lr"],
        pad_id=0,
        seed=settings["seed"],
        progress=progress,
        desc="notebook 09's SFT",
    )
    remove_lora(model, merge=True)
    model.requires_grad_(True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    save_model(model, tmp)
    os.replace(tmp, path)  # atomic: a run killed half-way leaves no half-written cache
    return model.eval(), settings


def answer_examples(task: Task) -> list:  # notebook 11 §4
    """SFT on the same task: each prompt with its true summary and end marker (``IGNORE`` on the
    prompt); pairs whose prompt and answer do not fit the course GPT's context are left out."""
    if task.context is None:
        raise ValueError(
            "answer_examples builds the course GPT's examples; use sft.chat_example for a chat model"
        )
    out = []
    for prompt, summary in zip(task.prompts, task.summaries):
        answer = encode(summary).tolist() + [task.end_id]
        if len(prompt) + len(answer) <= task.context:
            out.append(_example(prompt, answer, True))
    return out
