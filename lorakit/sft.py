"""Instruction tuning data from the standard library: prompt → response pairs, masks, loss (notebook 09).

The task: given a Python function's source with its docstring removed, write the docstring's
first line ("Return the number of items."). Every CPython ships thousands of such pairs, so the
task works offline and in CI. Three habits of supervised fine-tuning (SFT) are taught here:

- a fixed **prompt template** (``TEMPLATE`` for the byte-level course GPT; a real instruct model
  uses its own chat template, ``chat_example``), so the model learns where the answer starts;
- an **end-of-sequence marker** after the response (``EOS``, or the tokenizer's EOS token), so it
  learns to stop;
- a **loss mask**: only response tokens count (labels of prompt tokens are ``IGNORE``), so the
  model is trained to answer, not to write prompts.

Labels are aligned with ``input_ids`` (the Hugging Face convention); the loss shifts them by one.
Validation pairs come from modules never seen in training (split by module name).

Your own data (notebook 09 §8): a JSONL file of ``{"prompt", "response"}`` records or chat
``{"messages": [...]}`` (``read_jsonl``, ``split_records``) becomes ids and labels through the
model's own chat template (``record_example``, ``encode_records``): a prompt too long for
``max_len`` loses the end of its content, never a template marker, the response or its EOS.
``lorakit.data_doctor`` checks the result for the traps that make a model never stop.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import os
import sys
import sysconfig
import textwrap
import time
import warnings
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import _stdlib_files, decode, encode
from .recipe import learning_rate, length_grouped_order, make_optimizer
from .train import cache_dir, fast_mode, set_seed
from .validate import integer, positive_int

#: the ignore index of ``F.cross_entropy``: a label that contributes nothing to the loss
IGNORE = -100
#: the byte-level end-of-sequence marker: ASCII "end of text", absent from the stdlib's source
EOS = "\x03"
#: the course GPT's prompt template; the response follows it directly
TEMPLATE = "### Code\n{code}\n### Summary\n"
#: the instruction a chat model receives before the code (``chat_example``)
INSTRUCTION = "Write the one-line docstring summary of this Python function.\n\n"
#: a small own-data example in JSONL, built from the stdlib task with ``pair_record`` (notebook 09 §8)
EXAMPLE_JSONL = Path(__file__).parent / "sft_data" / "docstrings.jsonl"


@dataclass(frozen=True)  # notebook 09 §1
class Pair:
    """One example: the function's ``code`` without its docstring, and the docstring's first line."""

    module: str
    name: str
    code: str
    summary: str


def _is_validation(module: str) -> bool:
    """Every 10th module (by a stable hash of its path) is held out: its functions are never seen."""
    return zlib.crc32(module.encode()) % 10 == 0


def _pairs_in(source: str, module: str, max_summary_chars: int) -> list[Pair]:
    tree = ast.parse(source)
    lines = source.splitlines()
    pairs = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        doc = ast.get_docstring(node)
        if not doc:
            continue
        summary = doc.strip().splitlines()[0].strip()
        # one clean sentence: long enough to say something, short enough for a small context
        if (
            not (12 <= len(summary) <= max_summary_chars and summary.endswith("."))
            or EOS in summary
        ):
            continue
        first_doc, last_doc = node.body[0].lineno, node.body[0].end_lineno
        kept = [
            lines[i - 1]
            for i in range(node.lineno, node.end_lineno + 1)
            if not first_doc <= i <= last_doc
        ]
        code = textwrap.dedent("\n".join(kept)).strip("\n")
        pairs.append(Pair(module, node.name, code, summary))
    return pairs


def _all_pairs(max_summary_chars: int) -> list[Pair]:
    """Parse every stdlib module once (seconds, once) and cache the pairs as JSON."""
    root = sysconfig.get_paths()["stdlib"]
    files = _stdlib_files(want_tests=False)
    if fast_mode():
        files = files[::5]  # test mode: every 5th module, same code path, a fifth of the parsing
    key = zlib.crc32(f"{sys.version}|{root}|{max_summary_chars}|{len(files)}|1".encode())
    path = cache_dir() / f"sft-pairs-{key:08x}.json"
    if path.exists():
        try:
            return [Pair(**p) for p in json.loads(path.read_text())]
        except (OSError, ValueError, TypeError):
            pass  # unreadable or from another version: rebuild it
    pairs: list[Pair] = []
    for file in files:
        try:
            with open(file, encoding="utf-8") as f:
                pairs += _pairs_in(f.read(), os.path.relpath(file, root), max_summary_chars)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # a few stdlib files are templates or use another encoding: skip them
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps([asdict(p) for p in pairs]))
    os.replace(tmp, path)  # atomic: a run killed half-way leaves no half-written cache
    return pairs


@functools.lru_cache(maxsize=8)  # notebook 09 §1
def docstring_pairs(split: str = "train", max_summary_chars: int = 72) -> tuple[Pair, ...]:
    """All (code → first docstring line) pairs of the standard library, for ``split``.

    ``split`` is ``"train"`` or ``"val"``; the split is by module, so a validation function's
    module was never seen in training. Deterministic for a given Python version; parsed once,
    then read from the cache folder (``lorakit.train.cache_dir()``).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    integer(max_summary_chars, "max_summary_chars", low=12)
    return tuple(
        p for p in _all_pairs(max_summary_chars) if _is_validation(p.module) == (split == "val")
    )


def cut_code(code: str, max_chars: int) -> str:  # notebook 09 §1
    """The head of ``code`` in at most ``max_chars`` characters, cut at a line end when possible."""
    if len(code) <= max_chars:
        return code
    head = code[:max_chars]
    return head[: head.rfind("\n")] if "\n" in head else head


def prompt_of(pair: Pair, max_code_chars: int) -> str:  # notebook 09 §2
    """The course GPT's prompt: ``TEMPLATE`` around the function's code (its head, if long)."""
    return TEMPLATE.format(code=cut_code(pair.code, max_code_chars))


def _example(
    prompt_ids: list[int], response_ids: list[int], mask: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor(prompt_ids + response_ids, dtype=torch.long)
    labels = ids.clone()
    if mask:
        labels[: len(prompt_ids)] = IGNORE  # prompt tokens are context, not something to learn
    return ids, labels


# notebook 09 §2
def byte_example(
    pair: Pair, context: int, mask: bool = True, eos: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, labels)`` in bytes for the course GPT, at most ``context`` long.

    The response (and ``EOS``) is always kept whole; the code is cut to fit what is left.
    """
    response = pair.summary + (EOS if eos else "")
    budget = context - len(encode(TEMPLATE.format(code=""))) - len(encode(response))
    if budget < 8:
        raise ValueError(
            f"context {context} leaves {budget} bytes for the code of {pair.name!r}; "
            "use a shorter max_summary_chars or a longer context"
        )
    prompt = prompt_of(pair, budget)
    while (
        len(encode(prompt)) > len(prompt) and len(encode(prompt)) + len(encode(response)) > context
    ):
        budget -= 4  # non-ASCII code: characters are several bytes; shrink until it fits
        prompt = prompt_of(pair, budget)
    return _example(encode(prompt).tolist(), encode(response).tolist(), mask)


def byte_examples(
    pairs, context: int, mask: bool = True, eos: bool = True
) -> list:  # notebook 09 §3
    """``byte_example`` for every pair whose response fits ``context`` with some code; others skipped."""
    overhead = len(encode(TEMPLATE.format(code=""))) + 8 + (1 if eos else 0)
    return [
        byte_example(p, context, mask, eos)
        for p in pairs
        if len(encode(p.summary)) + overhead <= context
    ]


def _record_parts(record, where: str = "record") -> tuple[list[dict], int, str]:
    """``(prompt messages, index of the message whose content may be shortened, response)``.

    A record is ``{"prompt": str, "response": str}`` or a chat ``{"messages": [...]}`` whose last
    message is the assistant's answer (the one trained on; earlier turns are context).
    """
    if not isinstance(record, dict):
        raise TypeError(f"{where} must be a dict, got {type(record).__name__}")
    if "messages" in record:
        messages = record["messages"]
        if (
            not isinstance(messages, list)
            or len(messages) < 2
            or not all(
                isinstance(m, dict)
                and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str)
                for m in messages
            )
        ):
            raise ValueError(
                f"{where}: 'messages' must be a list of at least two "
                "{'role': str, 'content': str} dicts"
            )
        if messages[-1]["role"] != "assistant":
            raise ValueError(
                f"{where}: the last message must be the assistant's answer, "
                f"got role {messages[-1]['role']!r}"
            )
        users = [i for i, m in enumerate(messages[:-1]) if m["role"] == "user"]
        if not users:
            raise ValueError(f"{where}: no 'user' message before the answer")
        return [dict(m) for m in messages[:-1]], users[-1], messages[-1]["content"]
    if isinstance(record.get("prompt"), str) and isinstance(record.get("response"), str):
        return [{"role": "user", "content": record["prompt"]}], 0, record["response"]
    raise ValueError(
        f"{where} needs 'prompt' and 'response' strings, or 'messages'; got keys {sorted(record)}"
    )


def _template_ids(messages: list[dict], tokenizer) -> list[int]:
    """The prompt as the model sees it at generation time: its chat template with the assistant
    marker (``add_generation_prompt=True``); for the course GPT (``tokenizer=None``), ``TEMPLATE``."""
    if tokenizer is None:
        if len(messages) != 1:
            raise ValueError(
                "the course GPT's template has one prompt; use a chat model for multi-turn records"
            )
        return encode(TEMPLATE.format(code=messages[0]["content"])).tolist()
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if not isinstance(ids, list):  # transformers 5 may return an encoding
        ids = ids["input_ids"]
    return list(ids)


def _drop_tokens(text: str, n: int, tokenizer) -> str:
    """``text`` without (about) its last ``n`` tokens."""
    if tokenizer is None:
        return text[: max(0, len(text) - n)]  # a character is at least one byte
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        keep = len(enc["input_ids"]) - n
        return text[: enc["offset_mapping"][keep - 1][1]] if keep > 0 else ""
    except (NotImplementedError, ValueError):  # a slow tokenizer has no offsets: estimate
        per_token = len(text) / max(1, len(tokenizer(text, add_special_tokens=False)["input_ids"]))
        return text[: max(0, len(text) - math.ceil(n * per_token))]


def response_ids(
    response: str,
    tokenizer,
    eos: bool = True,  # notebook 09 §8
    end_id: int | None = None,
) -> list[int]:
    """The answer's tokens and, with ``eos``, the end token: ``end_id`` if given (the template's
    end-of-turn token, notebook 09 §10), else the tokenizer's EOS (``EOS`` for the course GPT)."""
    if tokenizer is None:
        return encode(response + (EOS if eos else "")).tolist()
    ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    end = tokenizer.eos_token_id if end_id is None else end_id
    if eos and end is None:
        raise ValueError(
            "the tokenizer has no eos_token: set tokenizer.eos_token to the model's end-of-turn token"
        )
    return ids + [end] if eos else ids


def prompt_ids(record, tokenizer, max_len: int | None = None) -> list[int] | None:  # notebook 09 §8
    """The record's prompt through the template, its content shortened to fit ``max_len`` tokens.

    Only the *content* of the last user message is cut (from its end): the template's markers
    (the system turn, "user", "assistant starts here") always stay whole. ``None`` when even an
    empty content does not fit.
    """
    messages, k, _ = _record_parts(record)
    content = messages[k]["content"]
    n = len(content)
    while True:
        messages[k] = dict(messages[k], content=content[:n])
        ids = _template_ids(messages, tokenizer)
        over = len(ids) - (max_len if max_len is not None else len(ids))
        if over <= 0:
            return ids
        if n == 0:
            return None
        n = min(n - 1, len(_drop_tokens(content[:n], over, tokenizer)))  # always progresses


def record_example(
    record,
    tokenizer,
    max_len: int,
    mask: bool = True,  # notebook 09 §8
    eos: bool = True,
    end_id: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(input_ids, labels)`` of one record, at most ``max_len`` tokens; ``None`` if it cannot fit.

    The prompt goes through the model's own chat template with the assistant marker, exactly as
    at generation time (``tokenizer=None``: the course GPT's byte ``TEMPLATE``); the response
    and its EOS follow and are never cut — the prompt's content is shortened instead.
    With ``mask``, prompt labels are ``IGNORE``: only the answer and its EOS are learned.
    """
    positive_int(max_len, "max_len")
    _, _, response = _record_parts(record)
    answer = response_ids(response, tokenizer, eos, end_id)
    prompt = prompt_ids(record, tokenizer, max_len - len(answer))
    if prompt is None:
        return None
    return _example(prompt, answer, mask)


def encode_records(
    records,
    tokenizer,
    max_len: int,
    mask: bool = True,  # notebook 09 §8
    eos: bool = True,
) -> tuple[list, int]:
    """``(examples, dropped)``: ``record_example`` for every record; those that cannot fit are
    dropped, counted, and a warning says how many (raise ``max_len`` or shorten the answers)."""
    examples, dropped = [], 0
    for i, record in enumerate(records):
        _record_parts(record, f"record {i}")  # a bad record fails here, naming its index
        ex = record_example(record, tokenizer, max_len, mask, eos)
        if ex is None:
            dropped += 1
        else:
            examples.append(ex)
    if dropped:
        warnings.warn(
            f"{dropped} of {len(records)} records cannot fit max_len={max_len} even with an empty "
            "prompt (template + response + EOS is longer): dropped",
            stacklevel=2,
        )
    return examples, dropped


def read_jsonl(path: str | os.PathLike) -> list[dict]:  # notebook 09 §8
    """One record per line: ``{"prompt", "response"}`` or ``{"messages": [...]}``; checked on read."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {line_no}: not valid JSON ({e.msg})") from e
            _record_parts(record, f"{path}, line {line_no}")
            records.append(record)
    return records


def write_jsonl(records, path: str | os.PathLike) -> Path:  # notebook 09 §8
    """Write ``records`` one JSON object per line (UTF-8), checking each first."""
    for i, record in enumerate(records):
        _record_parts(record, f"record {i}")
    path = Path(path)
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    return path


def split_records(
    records, val_share: float = 0.1, seed: int = 0
) -> tuple[list, list]:  # notebook 09 §8
    """``(train, held_out)``: a seeded shuffle, then the last ``val_share`` of it held out."""
    if not 0 < val_share < 1:
        raise ValueError(f"val_share must be between 0 and 1 (exclusive), got {val_share}")
    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, round(val_share * len(records)))
    if n_val >= len(records):
        raise ValueError(
            f"{len(records)} records are too few to hold out {val_share:.0%} and train on the rest"
        )
    return [records[i] for i in order[:-n_val]], [records[i] for i in order[-n_val:]]


def pair_record(pair: Pair, max_code_chars: int = 600) -> dict:  # notebook 09 §8
    """The stdlib task as an own-data record: the instruction and the code, and the summary."""
    return {"prompt": INSTRUCTION + cut_code(pair.code, max_code_chars), "response": pair.summary}


@torch.no_grad()  # notebook 09 §8
def answer_records(
    model: nn.Module, tokenizer, records, max_new_tokens: int = 32, batch_size: int = 16
) -> list[tuple[str, bool]]:
    """Greedy answers to each record's prompt: ``(text, stopped)``, stopped = it ended with EOS.

    Batched with **left** padding: every prompt then ends where generation starts (right padding
    would make a short prompt's model continue after its pad tokens).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    pad = (
        eos if tokenizer.pad_token_id is None else tokenizer.pad_token_id
    )  # masked out: any id will do
    out = []
    for i in range(0, len(records), batch_size):
        prompts = [prompt_ids(r, tokenizer) for r in records[i : i + batch_size]]
        T = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (T - len(p)) + p for p in prompts], device=device)
        attention = torch.tensor(
            [[0] * (T - len(p)) + [1] * len(p) for p in prompts], device=device
        )
        gen = model.generate(
            input_ids=ids,
            attention_mask=attention,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=pad,
        )[:, T:].tolist()
        for row in gen:
            stopped = eos in row
            row = row[: row.index(eos)] if stopped else row
            out.append((tokenizer.decode(row, skip_special_tokens=True), stopped))
    model.train(was_training)
    return out


def stop_rate(answers: list[tuple[str, bool]]) -> float:  # notebook 09 §8
    """The share of answers that ended with EOS: a model that never learned EOS scores 0."""
    return sum(stopped for _, stopped in answers) / max(1, len(answers))


def chat_example(
    pair: Pair,
    tokenizer,
    max_len: int,
    mask: bool = True,
    eos: bool = True,  # notebook 09 §6
    max_code_chars: int = 600,
    end_id: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, labels)`` for a Hugging Face chat model: ``record_example`` of ``pair_record(pair)``.

    The prompt is the user turn (``INSTRUCTION`` + the code's head) plus the template's "assistant
    starts here" marker (``add_generation_prompt=True``); the response is the summary and the
    tokenizer's EOS token, or ``end_id`` when given: the template's own end-of-turn token
    (``recipe.end_of_turn_id``, notebook 09 §10), which differs from EOS in Gemma's template.
    Over ``max_len``, the code is shortened: marker, summary and end token stay.
    """
    example = record_example(
        pair_record(pair, max_code_chars), tokenizer, max_len, mask, eos, end_id
    )
    if example is None:
        raise ValueError(
            f"max_len {max_len} cannot hold the chat template and the summary of {pair.name!r} "
            "even without code; use a longer max_len"
        )
    return example


# notebook 09 §2
def collate(
    examples: list[tuple[torch.Tensor, torch.Tensor]], pad_id: int
) -> dict[str, torch.Tensor]:
    """Right-pad a batch: ``input_ids`` with ``pad_id``, ``labels`` with ``IGNORE``, and the mask.

    With causal attention, padding on the right never changes what the real tokens see.
    """
    T = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), T), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(examples), T), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, : len(x)], labels[i, : len(y)], attention[i, : len(x)] = x, y, 1
    return dict(input_ids=ids, labels=labels, attention_mask=attention)


# notebook 09 §2
def logits_of(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Next-token logits (batch, T, vocab) from the course GPT or a Hugging Face causal LM."""
    if hasattr(model, "cfg") and hasattr(model, "blocks"):  # the course GPT
        return model(input_ids)[0]
    return model(input_ids=input_ids, attention_mask=attention_mask).logits


# notebook 09 §2
def response_loss(
    model: nn.Module, batch: dict[str, torch.Tensor], reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy (nats) of each labelled token given the tokens before it; ``IGNORE`` skipped.

    Position t predicts token t+1, so logits drop their last position and labels their first.
    """
    device = next(model.parameters()).device
    ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
    mask = batch.get("attention_mask")
    logits = logits_of(model, ids, None if mask is None else mask.to(device))
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)).float(),
        labels[:, 1:].reshape(-1),
        ignore_index=IGNORE,
        reduction=reduction,
    )


@torch.no_grad()  # notebook 09 §3
def evaluate_sft(model: nn.Module, examples: list, pad_id: int, batch_size: int = 32) -> float:
    """Mean loss over every **response** token of ``examples``, in bits per token."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        batch = collate(examples[i : i + batch_size], pad_id)
        # always score the response only, whatever the training mask was
        total += response_loss(model, batch, reduction="sum").item()
        count += int((batch["labels"][:, 1:] != IGNORE).sum())
    model.train(was_training)
    return total / max(count, 1) / math.log(2)


def train_sft(
    model: nn.Module,
    examples: list,
    steps: int,
    batch_size: int,
    lr: float,
    pad_id: int,  # notebook 09 §3
    seed: int = 0,
    warmup: int = 10,
    progress: bool = True,
    desc: str = "fine-tuning",
    step_times: list | None = None,
    *,
    accumulation_steps: int = 1,
    max_grad_norm: float | None = None,
    schedule: str = "constant",
    min_lr_ratio: float = 0.0,
    optimizer: str = "adamw",
    group_by_length: bool = False,
    record: dict | None = None,
) -> list[float]:
    """AdamW on the trainable parameters over shuffled batches of ``examples``; the losses (nats).

    Linear warm-up for ``warmup`` steps, then a constant rate (QLoRA's schedule). Deterministic
    for a given ``seed``. A plain (not paged) AdamW, so ``memory.track_peak`` sees its states.
    ``step_times``, if given, gets each step's seconds appended (forward, backward, update; CUDA
    synchronised): how notebook 09 §6 compares methods.

    Options for a real fine-tune (notebook 09 §10, ``lorakit.recipe``); the defaults are the above:

    - ``accumulation_steps=k``: each step sums the gradients of ``k`` micro-batches of
      ``batch_size`` before one update, each token weighted ``1 / (labelled tokens in all k)``:
      the same update as one batch of ``k · batch_size`` (up to float rounding), in the memory of one;
    - ``max_grad_norm``: clip the global gradient norm to this before each update (the norm before
      clipping is recorded); ``None``: no clipping;
    - ``schedule``: ``"constant"`` or ``"cosine"`` after the warm-up, down to ``min_lr_ratio · lr``
      (``recipe.learning_rate``);
    - ``optimizer``: ``"adamw"``, ``"adamw_8bit"`` or ``"paged_adamw_8bit"`` (bitsandbytes, CUDA
      only; elsewhere torch's AdamW runs and ``record["optimizer_why"]`` says why:
      ``recipe.choose_optimizer``);
    - ``group_by_length``: batches of similar length, less padding (``recipe.length_grouped_order``);
    - ``record``: a dict filled with ``optimizer``, ``optimizer_why``, ``lr``, ``grad_norm`` (per
      step) and ``padding_share`` (of the batches trained on).
    """
    positive_int(steps, "steps")
    positive_int(batch_size, "batch_size")
    positive_int(accumulation_steps, "accumulation_steps")
    if max_grad_norm is not None and not (
        isinstance(max_grad_norm, (int, float)) and max_grad_norm > 0
    ):
        raise ValueError(f"max_grad_norm must be a positive number or None, got {max_grad_norm!r}")
    if not examples:
        raise ValueError("examples is empty: nothing to train on")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (did you freeze everything?)")
    learning_rate(
        0, steps, lr, warmup, schedule, min_lr_ratio
    )  # checks schedule and min_lr_ratio now
    set_seed(seed)
    opt, chosen, why = make_optimizer(params, optimizer, lr, params[0].device)
    if group_by_length:
        order = length_grouped_order([len(ids) for ids, _ in examples], batch_size, seed)
    else:
        order = torch.randperm(
            len(examples), generator=torch.Generator().manual_seed(seed)
        ).tolist()
    log = dict(
        optimizer=chosen, optimizer_why=why, lr=[], grad_norm=[], real_tokens=0, padded_tokens=0
    )
    losses, cursor = [], 0
    model.train()
    for step in tqdm(range(steps), desc=desc, disable=not progress):
        micro = []
        for _ in range(accumulation_steps):
            micro.append(
                collate(
                    [examples[order[(cursor + j) % len(order)]] for j in range(batch_size)], pad_id
                )
            )
            cursor += batch_size
        log["real_tokens"] += sum(int(b["attention_mask"].sum()) for b in micro)
        log["padded_tokens"] += sum(b["attention_mask"].numel() for b in micro)
        rate = learning_rate(step, steps, lr, warmup, schedule, min_lr_ratio)
        for group in opt.param_groups:
            group["lr"] = rate
        start = time.perf_counter()
        labelled = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in micro)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for batch in micro:  # gradients add up over the micro-batches; one update below
            loss = response_loss(model, batch, reduction="sum") / max(labelled, 1)
            loss.backward()
            total += loss.item()
        if max_grad_norm is not None:
            log["grad_norm"].append(float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm)))
        opt.step()
        if step_times is not None:
            if loss.device.type == "cuda":
                torch.cuda.synchronize(loss.device)
            step_times.append(time.perf_counter() - start)
        log["lr"].append(rate)
        losses.append(total)
    model.eval()
    if record is not None:
        log["padding_share"] = 1 - log.pop("real_tokens") / max(log.pop("padded_tokens"), 1)
        record.update(log)
    return losses


@torch.no_grad()  # notebook 09 §3
def generate_bytes(model: nn.Module, prompt: str, max_new_tokens: int = 80) -> str:
    """Greedy continuation of ``prompt`` by the course GPT, stopping at ``EOS`` (not included)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids = encode(prompt).long().unsqueeze(0).to(device)
    out: list[int] = []
    for _ in range(max_new_tokens):
        logits, _ = model(ids[:, -model.cfg.context :])
        nxt = int(logits[0, -1].argmax())
        if nxt == ord(EOS):
            break
        out.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]], device=device)], dim=1)
    model.train(was_training)
    return decode(out)
