"""Worked solutions for notebook 09 (QLoRA on a real LLM)."""

import torch

from lorakit.sft import IGNORE


def solve_ex_9_1(examples) -> float:
    """Labelled tokens are the response and its EOS; the prompt's labels are IGNORE (-100)."""
    labelled = sum(int((labels != IGNORE).sum()) for _, labels in examples)
    return labelled / sum(len(ids) for ids, _ in examples)


def make_labels(prompt_ids, response_ids):
    """-100 for each prompt token (the loss skips it), the token itself for each response token.

    Labels line up with the inputs; the loss compares position t's prediction with label t+1.
    """
    return [IGNORE] * len(prompt_ids) + list(response_ids)


def solve_ex_9_3(layer):
    """The model that was trained: the dequantized base plus the scaled update, out×in."""
    W_hat = layer.base.dequantized_weight(torch.float32)  # out×in
    return layer, W_hat + layer.scaling * (layer.A @ layer.B).t().float()  # A B is in×out
