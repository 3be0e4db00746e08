"""Checkers for notebook 09 (QLoRA on a real LLM). Each prints right/wrong and why, returns a bool,
and never raises. Solutions: notebooks/solutions/nb09.py."""

from __future__ import annotations

import random

import torch

from ..lora import LoRALinear
from ..qlora import Linear4bit
from ..sft import IGNORE
from . import report


def max_summary(fast: bool) -> int:
    """Notebook 09 §1's longest summary: 28 bytes in test mode (a 64-byte context), else 60."""
    return 28 if fast else 60


def notebook_examples(fast: bool | None = None) -> list:
    """Notebook 09 §3's ``train_ex``, rebuilt with the settings of the mode the notebook ran in."""
    from ..sft import byte_examples, docstring_pairs
    from ..train import base_settings, fast_mode

    fast = fast_mode() if fast is None else fast
    context = 64 if fast else 128  # base_settings()'s context in each mode (notebook 00 §4)
    if fast == fast_mode():
        context = base_settings()["config"].context
    return byte_examples(docstring_pairs("train", max_summary(fast)), context)


def check_ex_9_1(answer, examples=None) -> bool:
    """The share of labelled (response + EOS) tokens among all tokens, within ±0.01.

    ``examples`` is the notebook's ``train_ex`` (the notebook passes it); left out, the checker
    rebuilds it with the settings of the current mode (test mode or learner size).
    """
    if examples is None:
        examples = notebook_examples()
    labelled = sum(int((labels != IGNORE).sum()) for _, labels in examples)
    total = sum(len(ids) for ids, _ in examples)
    right = labelled / total
    if isinstance(answer, bool) or answer is None:
        return report(False, "", f"expected a float between 0 and 1, got {answer!r}")
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return report(False, "", f"expected a float between 0 and 1, got {answer!r}")
    if abs(value - right) <= 0.01:
        return report(
            True,
            f"{right:.3f}: only about {100 * right:.0f} % of the tokens are answer; without "
            "the mask the rest of the gradient would teach the model to write code.",
            "",
        )
    if abs(value - (1 - right)) <= 0.01:
        return report(
            False,
            "",
            "that is the share of PROMPT tokens (the masked ones); count the labelled ones.",
        )
    if abs(value - 100 * right) <= 1:
        return report(False, "", "that looks like a percentage; give a fraction between 0 and 1.")
    return report(
        False,
        "",
        f"{value:.3f} is not it (tolerance ±0.01): sum (labels != -100) over all "
        "examples, divided by the total number of tokens.",
    )


def check_ex_9_2(make_labels) -> bool:
    """``make_labels(prompt_ids, response_ids)`` masks exactly the prompt."""
    if not callable(make_labels):
        return report(
            False,
            "",
            f"expected a function make_labels(prompt_ids, response_ids), got {make_labels!r}",
        )
    rng = random.Random(0)
    cases = [([], [5, 6]), ([1, 2, 3], [4]), ([7] * 5, [8, 9, 3])]
    cases += [
        (
            [rng.randrange(256) for _ in range(rng.randrange(0, 9))],
            [rng.randrange(256) for _ in range(rng.randrange(1, 6))],
        )
        for _ in range(20)
    ]
    for prompt, response in cases:
        try:
            got = make_labels(list(prompt), list(response))
            got = got.tolist() if isinstance(got, torch.Tensor) else list(got)
        except Exception as e:  # noqa: BLE001 - a learner's bug is reported, not raised
            return report(
                False, "", f"make_labels({prompt}, {response}) raised {type(e).__name__}: {e}"
            )
        right = [IGNORE] * len(prompt) + list(response)
        if got == right:
            continue
        if got == list(prompt) + list(response):
            return report(False, "", "nothing is masked: prompt tokens must get the label -100.")
        if got == [IGNORE] * (len(prompt) + len(response)):
            return report(False, "", "everything is masked: then there is nothing left to learn.")
        if len(got) != len(right):
            return report(
                False,
                "",
                f"the labels must be as long as prompt + response ({len(right)}), got {len(got)}.",
            )
        return report(
            False, "", f"for prompt {prompt} and response {response} expected {right}, got {got}."
        )
    return report(
        True,
        f"all {len(cases)} cases right: -100 on the prompt, the tokens themselves on the response. "
        "The shift by one happens in the loss, not in the labels.",
        "",
    )


def check_ex_9_3(answer) -> bool:
    """``(layer, W_merged)``: W_merged (out×in) = Ŵ + scaling·(A B)ᵀ reproduces the layer."""
    try:
        layer, W = answer
    except (TypeError, ValueError):
        return report(False, "", f"expected a pair (layer, W_merged), got {type(answer).__name__}")
    if not isinstance(layer, LoRALinear) or not isinstance(layer.base, Linear4bit):
        return report(
            False, "", "the layer must be a LoRA layer on a 4-bit base (from qlora_model)."
        )
    if not isinstance(W, torch.Tensor):
        return report(False, "", f"W_merged must be a tensor, got {type(W).__name__}")
    out_in = (layer.out_features, layer.in_features)
    if tuple(W.shape) == out_in[::-1] and out_in[0] != out_in[1]:
        return report(
            False,
            "",
            f"W_merged has shape {tuple(W.shape)} = in×out: nn.Linear stores out×in; "
            "transpose A @ B.",
        )
    if tuple(W.shape) != out_in:
        return report(
            False, "", f"W_merged must have shape out×in = {out_in}, got {tuple(W.shape)}"
        )
    with torch.no_grad():
        x = torch.randn(4, layer.in_features, generator=torch.Generator().manual_seed(0)).to(
            layer.A.device
        )
        want = layer(x.to(layer.base.compute_dtype)).float()
        bias = 0 if layer.base.bias is None else layer.base.bias.float()
        got = x.float() @ W.detach().float().to(x.device).t() + bias
        err = (got - want).abs().max().item()
        W_hat = layer.base.dequantized_weight(torch.float32)
        no_update = (x.float() @ W_hat.t() + bias - want).abs().max().item()
    if err <= 1e-4 * max(1.0, want.abs().max().item()):
        return report(
            True, f"max |Δy| = {err:.1e}: Ŵ + scaling·(AB)ᵀ is the layer that was trained.", ""
        )
    if (W.detach().float().to(W_hat.device) - W_hat).abs().max().item() < 1e-7 and no_update > 0:
        return report(False, "", "that is Ŵ alone: add scaling · (A @ B).T.")
    return report(
        False,
        "",
        f"max |Δy| = {err:.2e} (tolerance 1e-4): merge into the DEQUANTIZED weight "
        "layer.base.dequantized_weight(torch.float32), with the scaling, transposed to out×in.",
    )
