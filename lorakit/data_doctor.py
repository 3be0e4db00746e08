"""The data doctor: check supervised fine-tuning data before training on it (notebook 09 §9).

A sibling of the adapter doctor (``lorakit.doctor``): that one checks the model, this one the
examples. The faults it looks for are the ones the PEFT, TRL and transformers trackers are full
of, most of them ending in a model that **never stops**:

- the pad token is the EOS token and a collator masks every pad, so the EOS label is masked too;
- responses that do not end with EOS, or whose EOS carries no label;
- a template mismatch: the tokens before the answer are not the chat template's assistant
  marker, while generation prompts (``apply_chat_template(add_generation_prompt=True)``) end
  with it — training and generation see different formats;
- responses cut by ``max_len`` (the answer or its EOS lost to truncation);
- a response mask that misses part of the assistant turn, or covers the prompt;
- a generation batch padded on the right (a decoder-only model continues after pad tokens);
- the share of labelled tokens.

``diagnose(data, tokenizer)`` takes a collated batch (a dict of ``input_ids``, ``labels``,
``attention_mask``; a batch without ``labels`` is a generation batch) or a list of examples
(``(input_ids, labels)`` pairs or dicts). ``tokenizer=None`` means the course GPT's bytes
(``lorakit.sft``'s ``TEMPLATE`` and ``EOS``). Each finding names its fix. Labels follow the
Hugging Face convention: aligned with ``input_ids``, ``-100`` = not learned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .data import encode
from .doctor import Finding
from .sft import EOS, IGNORE, TEMPLATE, _record_parts


@dataclass  # notebook 09 §9
class DataReport:
    """What ``check`` found: how many examples, the share of labelled tokens, the findings."""

    examples: int = 0
    generation: bool = False  # a batch of prompts (no labels): only its padding is checked
    labelled_share: float = 0.0
    findings: list[Finding] = field(default_factory=list)

    @property
    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    @property
    def problems(self) -> list[Finding]:
        """The errors and warnings (info lines are not problems)."""
        return [f for f in self.findings if f.level != "info"]

    @property
    def ok(self) -> bool:
        """No errors (warnings and info may remain)."""
        return not any(f.level == "error" for f in self.findings)

    def __str__(self) -> str:
        head = (
            f"a generation batch of {self.examples} prompts"
            if self.generation
            else f"{self.examples} examples; labelled tokens: {100 * self.labelled_share:.1f} %"
        )
        if not self.problems:
            head += " — no data problems found"
        return "\n".join([head] + [f"  {f}" for f in self.findings])


def _as_list(x) -> list[int]:
    return x.tolist() if isinstance(x, torch.Tensor) else list(x)


def _ids_of(encoded) -> list[int]:
    return list(
        encoded if isinstance(encoded, list) else encoded["input_ids"]
    )  # transformers 5: an encoding


def assistant_marker(tokenizer) -> list[int]:  # notebook 09 §9
    """The tokens the chat template puts right before an answer at generation time.

    Rendered twice — with and without ``add_generation_prompt`` — and taken as the difference:
    for ChatML that is ``<|im_start|>assistant\\n``. Empty for a template without one.
    """
    if tokenizer is None:
        return encode(TEMPLATE[TEMPLATE.index("{code}") + len("{code}") :]).tolist()
    messages = [{"role": "user", "content": "x"}]
    with_marker = _ids_of(
        tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    )
    without = _ids_of(
        tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=True)
    )
    common = 0
    while common < min(len(with_marker), len(without)) and with_marker[common] == without[common]:
        common += 1
    return with_marker[common:]


def _rows(
    data, pad_id: int | None, eos_id: int
) -> tuple[list[tuple[list[int], list[int] | None]], bool]:
    """``([(ids, labels or None), ...] of the real tokens only, is a generation batch right-padded)``."""
    if isinstance(data, dict):
        ids = _as_list(data["input_ids"])
        labels = _as_list(data["labels"]) if "labels" in data else [None] * len(ids)
        mask = _as_list(data["attention_mask"]) if "attention_mask" in data else None
        rows, right_padded = [], []
        for i, row in enumerate(ids):
            if mask is not None:
                keep = [t for t, m in enumerate(mask[i]) if m]
                right_padded.append(bool(keep) and keep[-1] < len(row) - 1)
            else:  # no attention mask: trailing pad tokens are padding (one kept when pad == EOS)
                end = len(row)
                while end > 0 and row[end - 1] == pad_id:
                    end -= 1
                if pad_id == eos_id and end < len(row):
                    end += 1
                keep = list(range(end))
                right_padded.append(end < len(row))
            rows.append(
                (
                    [row[t] for t in keep],
                    None if labels[i] is None else [labels[i][t] for t in keep],
                )
            )
        return rows, "labels" not in data and any(right_padded)
    rows = []
    for ex in data:
        if isinstance(ex, dict):
            rows.append(
                (_as_list(ex["input_ids"]), _as_list(ex["labels"]) if "labels" in ex else None)
            )
        else:
            rows.append((_as_list(ex[0]), _as_list(ex[1])))
    return rows, False


def _after_last(ids: list[int], marker: list[int]) -> int | None:
    """The position right after the last occurrence of ``marker`` in ``ids``, or None."""
    k = len(marker)
    for start in range(len(ids) - k, -1, -1):
        if ids[start : start + k] == marker:
            return start + k
    return None


def _decode(tokenizer, ids: list[int]) -> str:
    if tokenizer is None:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")
    return tokenizer.decode(ids, skip_special_tokens=True)


def diagnose(
    data,
    tokenizer=None,
    *,
    records=None,
    max_len: int | None = None,  # notebook 09 §9
    pad_id: int | None = None,
) -> DataReport:
    """Look for the data faults that waste a fine-tune; each finding says how to fix it.

    ``data``: a collated batch (dict) or a list of examples. ``tokenizer``: the model's (``None``
    for the course GPT's bytes). ``records`` (the source records, in order) lets the doctor
    compare every labelled answer with the answer it should be; ``max_len`` tells a truncated
    answer from one that never had an EOS. ``pad_id`` defaults to the tokenizer's.
    """
    eos_id = ord(EOS) if tokenizer is None else tokenizer.eos_token_id
    pad_id = (0 if tokenizer is None else tokenizer.pad_token_id) if pad_id is None else pad_id
    if eos_id is None:
        raise ValueError(
            "the tokenizer has no eos_token_id: a model cannot learn to stop without one"
        )
    rows, right_padded = _rows(data, pad_id, eos_id)
    if records is not None and len(records) != len(rows):
        raise ValueError(
            f"records must match the examples one to one: {len(records)} records, {len(rows)} examples"
        )
    report = DataReport(examples=len(rows))

    def add(level, code, message, value=None):
        report.findings.append(Finding(level, code, message, value))

    generation = [r for r in rows if r[1] is None]
    if generation and right_padded:
        add(
            "error",
            "right_padding_generation",
            "this generation batch is padded on the right: a decoder-only model then generates after "
            "its pad tokens. Fix: tokenizer.padding_side = 'left' before tokenizing prompts for "
            "model.generate (lorakit.sft.answer_records pads on the left)",
        )
    training = [(i, ids, labels) for i, (ids, labels) in enumerate(rows) if labels is not None]
    if not training:
        report.generation = True
        return report
    n = len(training)
    marker = assistant_marker(tokenizer)
    count = dict(
        pad_eos_masked=0,
        eos_unlabelled=0,
        no_eos=0,
        no_eos_full=0,
        truncated=0,
        template_mismatch=0,
        mask_covers_prompt=0,
        mask_misses_response=0,
        no_labels=0,
    )
    labelled = total = 0
    for i, ids, labels in training:
        L = len(ids)
        learned = [t for t in range(L) if labels[t] != IGNORE]
        labelled, total = labelled + len(learned), total + L
        hit_max = (
            max_len is not None and L >= max_len
        )  # without records: full length and no EOS = cut
        if (
            records is not None
        ):  # with them: cut = the labelled answer is a strict head of the record's
            want = _record_parts(records[i], f"record {i}")[2].strip()
            got = _decode(tokenizer, [ids[t] for t in learned if ids[t] != eos_id]).strip()
            hit_max = got != want and want.startswith(got)
            count["truncated"] += (
                hit_max  # counted once: as a truncation, not also as a missing EOS
            )
        if not learned:
            count["no_labels"] += 1
            count["truncated"] += hit_max and records is None
            continue
        if ids[-1] == eos_id:
            if labels[-1] == IGNORE:
                count["pad_eos_masked" if pad_id == eos_id else "eos_unlabelled"] += 1
        elif not hit_max:
            count["no_eos"] += 1
            count["no_eos_full"] += max_len is not None and L >= max_len
        elif records is None:
            count["truncated"] += 1
        start = _after_last(ids, marker) if marker else None
        if marker and start is None:
            count["template_mismatch"] += 1
            continue
        if start is None:
            continue
        if learned[0] < start:
            count["mask_covers_prompt"] += 1
        if any(
            labels[t] == IGNORE for t in range(start, L - 1)
        ):  # the EOS (position L-1) is judged above
            count["mask_misses_response"] += 1

    report.labelled_share = labelled / max(total, 1)
    of = f"of {n}"
    eos_text = repr(EOS) if tokenizer is None else repr(tokenizer.eos_token)
    if count["pad_eos_masked"]:
        add(
            "error",
            "pad_eos_masked",
            f"the pad token is the EOS token {eos_text} and the EOS label is masked in {count['pad_eos_masked']} "
            f"{of} examples: a collator that masks every pad masks the EOS too, and the model never learns to stop. "
            "Fix: a pad token that is not EOS (tokenizer.pad_token = '<|endoftext|>' or add one), or mask "
            "padding by position, not by id (lorakit.sft.collate)",
        )
    if count["eos_unlabelled"]:
        add(
            "error",
            "eos_unlabelled",
            f"the EOS ending {count['eos_unlabelled']} {of} responses has label -100: the model never learns "
            "to stop. Fix: label the whole answer, EOS included",
        )
    if count["no_eos"]:
        full = (
            (
                f" ({count['no_eos_full']} of them fill max_len: if their EOS was cut, shorten the prompt "
                "instead)"
            )
            if count["no_eos_full"]
            else ""
        )
        add(
            "error",
            "no_eos",
            f"{count['no_eos']} {of} responses do not end with EOS {eos_text}: the model never learns to stop. "
            f"Fix: append the EOS token to every response (lorakit.sft.record_example(eos=True)){full}",
        )
    if count["truncated"]:
        add(
            "error",
            "response_truncated",
            f"{count['truncated']} {of} answers were cut by truncation{f' at max_len={max_len}' if max_len else ''} "
            "(part of the answer or its EOS lost). Fix: shorten the prompt's content, never the answer "
            "(lorakit.sft.record_example), or raise max_len",
        )
    if count["template_mismatch"]:
        shown = (
            repr(_decode(tokenizer, marker))
            if tokenizer is None
            else repr(tokenizer.decode(marker))
        )
        add(
            "error",
            "template_mismatch",
            f"{count['template_mismatch']} {of} examples lack the template's assistant marker {shown} before the "
            "answer, while generation prompts (apply_chat_template(add_generation_prompt=True)) end with it: "
            "training and generation see different formats. Fix: build prompts with the model's chat template "
            "and add_generation_prompt=True, and never cut the prompt's end (lorakit.sft.record_example)",
        )
    if count["no_labels"]:
        add(
            "error",
            "no_labels",
            f"{count['no_labels']} {of} examples have no labelled token: they teach nothing (and a batch of "
            "them has a NaN loss). Fix: label the answer (a response-only mask that found no marker does this)",
        )
    if count["mask_misses_response"]:
        add(
            "error",
            "mask_misses_response",
            f"the labels miss part of the assistant's answer in {count['mask_misses_response']} {of} examples: "
            "those tokens are never learned. Fix: label every token after the assistant marker",
        )
    if count["mask_covers_prompt"]:
        add(
            "warning",
            "mask_covers_prompt",
            f"the labels cover prompt tokens in {count['mask_covers_prompt']} {of} examples: the model is also "
            "trained to write prompts, and the loss no longer measures the answer. Fix: label -100 up to and "
            "including the assistant marker (lorakit.sft.record_example(mask=True)); ignore this if intended",
        )
    add(
        "info",
        "labelled_share",
        f"{100 * report.labelled_share:.1f} % of tokens carry a label (the answers and their EOS)",
        report.labelled_share,
    )
    return report


# old name (deprecated, issue 25: ``lorakit.check`` is the environment check; ``data_doctor.diagnose``
# examines data). A plain alias, no warning: a notebook cell that writes to stderr fails.
check = diagnose  # deprecated: use diagnose
