"""Worked solutions for the exercises of notebook 05 (LoRA and its siblings)."""

import copy
import math

import torch


def solve_ex_5_1() -> int:
    """P virtual tokens × L layers × (key + value) × d."""
    P, L, d = 20, 32, 4096
    return P * L * 2 * d


def solve_ex_5_2():
    """Keys/values = [prefix; real]; query t may see all P prefix columns and real columns 0..t."""

    def attention_with_prefix(q, k, v, pk, pv):
        T, P = q.shape[-2], pk.shape[-2]
        K, V = torch.cat([pk, k], dim=-2), torch.cat([pv, v], dim=-2)
        scores = q @ K.transpose(-1, -2) / math.sqrt(q.shape[-1])
        allowed = torch.cat(
            [torch.ones(T, P, dtype=torch.bool), torch.ones(T, T, dtype=torch.bool).tril()], dim=1
        )
        return scores.masked_fill(~allowed, -float("inf")).softmax(dim=-1) @ V

    return attention_with_prefix


def solve_ex_5_3(steps: int | None = None, batch: int | None = None) -> dict:
    """Two prompt-tuning runs from the same base, same batches, only the learning rate differs.

    ``steps`` and ``batch`` are the notebook's ``STEPS`` and ``BATCH`` (left out: the current mode's).
    """
    from lorakit.data import load_splits
    from lorakit.siblings import add_prompt_tuning
    from lorakit.train import base_model, evaluate, fast_mode, set_seed, train

    fast = fast_mode()
    steps = steps or (12 if fast else 80)  # notebook 05's STEPS
    batch = batch or (8 if fast else 16)  # BATCH
    eval_batches, P_max = (2, 8) if fast else (8, 32)  # EVAL_BATCHES, P_MAX: bpb(model, docs_val)
    base, _ = base_model(progress=False)
    docs_train, docs_val = load_splits("docs", 400_000 if fast else None)
    out = {}
    for lr in (1e-4, 1e-1):
        set_seed(0)
        model = add_prompt_tuning(copy.deepcopy(base), 8)
        train(model, docs_train, steps=steps, batch_size=batch, lr=lr, seed=0, progress=False)
        out[lr] = evaluate(model, docs_val, batch, eval_batches, context=base.cfg.context - P_max)
    return out
