"""Checkers for the exercises of notebook 05 (LoRA and its siblings).

Each ``check_ex_5_M(answer)`` prints right/wrong and why, returns a bool, and never raises.
"""

from __future__ import annotations

import math

import torch

from . import as_integer, report


def check_ex_5_1(answer) -> bool:
    """P-tuning v2 with P = 20 on a Llama-7B shape (32 layers, d = 4096, as many key/value heads as
    query heads): P · L · 2d = 5,242,880.
    Exact integer (or an integral float)."""
    right = 20 * 32 * 2 * 4096
    n = as_integer(answer)
    if n is None:
        return report(False, "", f"expected an int (a parameter count), got {answer!r}")
    if n == right:
        return report(
            True,
            f"{n:,} = P·L·2d: a key and a value of size d per virtual token per layer — "
            "about LoRA r=8 on q_proj, v_proj (4,194,304).",
            "",
        )
    if n == right // 2:
        return report(False, "", f"{n:,} counts keys only (or values only): every layer gets both.")
    if n == 20 * 4096:
        return report(
            False,
            "",
            f"{n:,} is prompt tuning (P × d, input only); P-tuning v2 adds to every layer.",
        )
    if n == right // 32:
        return report(False, "", f"{n:,} is one layer; there are 32.")
    return report(
        False, "", f"{n:,} is not it. Count P virtual tokens × L layers × (key + value) × d."
    )


def _reference_prefix_attention(q, k, v, pk, pv):
    T, P = q.shape[-2], pk.shape[-2]
    K, V = torch.cat([pk, k], -2), torch.cat([pv, v], -2)
    scores = q @ K.transpose(-1, -2) / math.sqrt(q.shape[-1])
    allowed = torch.cat(
        [torch.ones(T, P, dtype=torch.bool), torch.ones(T, T, dtype=torch.bool).tril()], 1
    )
    return scores.masked_fill(~allowed, -float("inf")).softmax(-1) @ V


def check_ex_5_2(answer) -> bool:
    """A function ``attention_with_prefix(q, k, v, pk, pv)``: every query sees all P prefix
    positions and, causally, the real ones. Tolerance: max abs difference 1e-4 on random inputs."""
    if not callable(answer):
        return report(
            False, "", f"expected a function attention_with_prefix(q, k, v, pk, pv), got {answer!r}"
        )
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 3, 6, 8, generator=g) for _ in range(3))
    pk, pv = (torch.randn(2, 3, 4, 8, generator=g) for _ in range(2))
    want = _reference_prefix_attention(q, k, v, pk, pv)
    try:
        got = answer(q.clone(), k.clone(), v.clone(), pk.clone(), pv.clone())
    except Exception as e:  # a learner's function may fail in any way: explain, don't raise
        return report(False, "", f"your function raised {type(e).__name__}: {e}")
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(want.shape):
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        return report(
            False, "", f"expected a tensor of shape {tuple(want.shape)} (B×H×T×hd), got {shape}"
        )
    if torch.allclose(got, want, atol=1e-4):
        return report(
            True,
            "each query sees the whole prefix and its causal past (max diff "
            f"{(got - want).abs().max():.1e} ≤ 1e-4).",
            "",
        )
    K, V = torch.cat([pk, k], -2), torch.cat([pv, v], -2)
    s = q @ K.transpose(-1, -2) / math.sqrt(8)
    if torch.allclose(got, s.softmax(-1) @ V, atol=1e-4):
        return report(False, "", "no causal mask: query t must not see real keys after t.")
    tril = torch.ones(6, 10, dtype=torch.bool).tril()
    if torch.allclose(got, s.masked_fill(~tril, -float("inf")).softmax(-1) @ V, atol=1e-4):
        return report(
            False,
            "",
            "your mask is causal over prefix and text together; every query sees ALL of the prefix.",
        )
    unscaled = (q @ K.transpose(-1, -2)).masked_fill(
        ~torch.cat(
            [torch.ones(6, 4, dtype=torch.bool), torch.ones(6, 6, dtype=torch.bool).tril()], 1
        ),
        -float("inf"),
    )
    if torch.allclose(got, unscaled.softmax(-1) @ V, atol=1e-4):
        return report(False, "", "the scores need the 1/sqrt(head dim) scale.")
    return report(
        False,
        "",
        "the values are wrong: concatenate [prefix; real] keys and values, mask, softmax.",
    )


def notebook_settings(fast: bool) -> dict:
    """Notebook 05's run settings in each mode: steps, batch size, eval batches, longest prompt."""
    if fast:
        return dict(steps=12, batch_size=8, eval_batches=2, p_max=8)
    return dict(steps=80, batch_size=16, eval_batches=8, p_max=32)


def prompt_tuning_losses(steps: int, batch_size: int, eval_batches: int, p_max: int) -> dict:
    """The experiment of Exercise 5.3, run by the checker: docs bits/byte after a soft prompt of
    P = 8 is trained at lr 1e-4 and at lr 1e-1 (seed 0, same batches, same validation windows)."""
    import copy

    from ..data import load_splits
    from ..siblings import add_prompt_tuning
    from ..train import base_model, evaluate, fast_mode, set_seed, train

    base, _ = base_model(progress=False)
    docs_train, docs_val = load_splits("docs", 400_000 if fast_mode() else None)
    out = {}
    for lr in (1e-4, 1e-1):
        set_seed(0)
        model = add_prompt_tuning(copy.deepcopy(base), 8)
        train(model, docs_train, steps=steps, batch_size=batch_size, lr=lr, seed=0, progress=False)
        out[lr] = evaluate(
            model, docs_val, batch_size, eval_batches, context=base.cfg.context - p_max
        )
    return out


TOL_5_3 = 0.05  # bits/byte at most; narrowed to a third of the two rates' gap when that is smaller


def check_ex_5_3(answer, steps: int | None = None, batch_size: int | None = None) -> bool:
    """A dict ``{1e-4: docs_bpb, 1e-1: docs_bpb}`` from two prompt-tuning runs of ``steps`` steps at
    ``batch_size`` (the notebook passes its ``STEPS`` and ``BATCH``; left out, the current mode's).

    The checker re-runs the experiment (two short runs, seeded as the hint says) and accepts each
    value within ±0.05 bits/byte of its own, or within a third of the gap between the two rates'
    losses when that is smaller (test mode's short runs), so swapped values are always refused."""
    from ..train import fast_mode

    if not isinstance(answer, dict):
        return report(
            False,
            "",
            f"expected a dict {{1e-4: bits/byte, 1e-1: bits/byte}}, got {type(answer).__name__}",
        )
    values = {}
    for lr in (1e-4, 1e-1):
        key = next(
            (
                k
                for k in answer
                if not isinstance(k, bool)
                and isinstance(k, (int, float))
                and math.isclose(k, lr, rel_tol=1e-6)
            ),
            None,
        )
        if key is None:
            return report(
                False,
                "",
                f"the dict needs the learning rate {lr:g} as a key; keys seen: {list(answer)}",
            )
        try:
            values[lr] = float(answer[key])
        except (TypeError, ValueError):
            return report(
                False, "", f"the value for lr {lr:g} must be a number, got {answer[key]!r}"
            )
        if not (math.isfinite(values[lr]) and 0 < values[lr] < 9):
            return report(
                False,
                "",
                f"{values[lr]} bits/byte at lr {lr:g} is not a plausible validation loss "
                "(expected a finite number between 0 and 9): did the run diverge or is it in nats?",
            )
    if values[1e-4] == values[1e-1]:
        return report(
            False,
            "",
            "both runs gave the same loss: did you train two separate copies of the base?",
        )
    settings = notebook_settings(fast_mode())
    settings.update(
        {k: v for k, v in (("steps", steps), ("batch_size", batch_size)) if v is not None}
    )
    want = prompt_tuning_losses(**settings)
    tol = min(TOL_5_3, abs(want[1e-4] - want[1e-1]) / 3)
    if all(abs(values[lr] - want[lr]) <= tol for lr in want):
        winner = min(values, key=values.get)
        return report(
            True,
            f"lr 1e-4 → {values[1e-4]:.3f}, lr 1e-1 → {values[1e-1]:.3f} bits/byte (the checker's "
            f"own runs: {want[1e-4]:.3f}, {want[1e-1]:.3f}; tolerance ±{tol:.2g}): lr {winner:g} won. "
            "A soft prompt is a handful of vectors: at small rates it barely moves in a short run.",
            "",
        )
    if all(abs(values[a] - want[b]) <= tol for a, b in ((1e-4, 1e-1), (1e-1, 1e-4))):
        return report(
            False, "", "the two values are swapped: the key is the learning rate of the run."
        )
    return report(
        False,
        "",
        f"the checker's own runs ({settings['steps']} steps, batch {settings['batch_size']}, "
        f"seed 0) give lr 1e-4 → {want[1e-4]:.3f} and lr 1e-1 → {want[1e-1]:.3f} bits/byte; yours "
        f"{values[1e-4]:.3f} and {values[1e-1]:.3f} (tolerance ±{tol:.2g}). Train a fresh copy of the "
        "base per rate, evaluate with bpb(model, docs_val).",
    )
