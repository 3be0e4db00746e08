"""Merging several LoRA adapters into one: linear, cat, TIES, DARE (notebook 12 §2).

The semantics are PEFT's ``add_weighted_adapter`` (0.21), rebuilt from scratch so that a test
can compare factor by factor:

- ``"cat"``: ``A = [w_1 s_1 A_1, w_2 s_2 A_2, ...]`` (columns), ``B = [B_1; B_2; ...]`` (rows):
  rank ``Σ r_i`` and ``A B = Σ w_i ΔW_i`` exactly.
- ``"linear"``: A and B are averaged *separately*, each with ``√|w_i s_i|`` (the sign goes on A):
  ``(Σ √w_i A_i)(Σ √w_i B_i) = Σ w_i ΔW_i + cross terms √(w_i w_j) A_i B_j`` — not the weighted
  sum of the updates. Same rank required.
- ``"ties"`` (Yadav et al. 2023): per factor, keep the ``density`` share of largest magnitudes
  (trim), elect each entry's sign by the sum of the trimmed factors (``"total"``) or by a vote
  (``"frequency"``), average the weighted entries that agree with it (disjoint merge).
- ``"dare_linear"`` / ``"dare_ties"`` (Yu et al. 2023): drop each entry with probability
  ``1 − density`` and rescale the rest by ``1/density``, then the linear / TIES merge. The masks
  are drawn as PEFT draws them (``torch.bernoulli`` on PEFT's r×in ``lora_A`` and out×r
  ``lora_B``, layer by layer in module order, A's of every adapter first): the same seed gives
  the same merged adapter.

The merged adapter has ``scaling = 1`` (PEFT sets ``lora_alpha = r``). Factors are
``{path: (A in×r, B r×out, scaling)}`` (``lorakit.serving``).
"""

from __future__ import annotations

import math

import torch

from .serving import Factors

COMBINATIONS = ("linear", "cat", "ties", "dare_linear", "dare_ties")
SIGN_METHODS = ("total", "frequency")


def check_mergeable(
    adapters: list[Factors],
    weights,
    combination: str,
    density: float | None = None,
    majority_sign_method: str = "total",
) -> None:  # notebook 12 §2
    """Raise ValueError naming what is wrong, before any merging happens."""
    if combination not in COMBINATIONS:
        raise ValueError(f"combination must be one of {COMBINATIONS}, got {combination!r}")
    if majority_sign_method not in SIGN_METHODS:
        raise ValueError(
            f"majority_sign_method must be one of {SIGN_METHODS}, got {majority_sign_method!r}"
        )
    if not isinstance(adapters, (list, tuple)) or len(adapters) < 2:
        raise ValueError(
            f"adapters must be a list of at least 2 adapters' factors, got {type(adapters).__name__}"
        )
    if len(weights) != len(adapters):
        raise ValueError(
            f"one weight per adapter: {len(adapters)} adapters, {len(weights)} weights"
        )
    if combination != "linear" and combination != "cat" and density is None:
        raise ValueError(
            f"combination {combination!r} needs density (the share of entries kept, 0 < density <= 1)"
        )
    if density is not None and not (0 < float(density) <= 1):
        raise ValueError(f"density must be in (0, 1], got {density}")
    paths = list(adapters[0])
    for i, f in enumerate(adapters[1:], start=1):
        if set(f) != set(paths):
            raise ValueError(
                f"adapter 0 and adapter {i} target different layers: only in 0 "
                f"{sorted(set(paths) - set(f))}, only in {i} {sorted(set(f) - set(paths))}"
            )
    for path in paths:
        shapes = [(f[path][0].shape[0], f[path][1].shape[1]) for f in adapters]
        if len(set(shapes)) != 1:
            raise ValueError(
                f"layer {path!r}: the adapters are for different layer shapes {shapes} "
                "(in×out): they were trained on different bases"
            )
        ranks = [f[path][0].shape[1] for f in adapters]
        if combination != "cat" and len(set(ranks)) != 1:
            raise ValueError(
                f"layer {path!r}: ranks {ranks} differ; {combination!r} averages A and B entry by "
                "entry and needs one rank (use 'cat', which stacks them)"
            )


def _magnitude_prune(t: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``int(density·numel)`` largest magnitudes (TIES' trim)."""
    if density >= 1:
        return t
    mask = torch.zeros(t.numel(), dtype=t.dtype)
    mask[torch.topk(t.abs().reshape(-1), k=int(density * t.numel())).indices] = 1
    return t * mask.reshape(t.shape)


def _random_prune(t_peft: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """DARE: drop with probability 1 − density, rescale by 1/density (the mask in PEFT's layout)."""
    if density >= 1:
        return t_peft
    mask = torch.bernoulli(torch.full_like(t_peft, density), generator=generator)
    return t_peft * mask / density


def _combine(
    tensors: list[torch.Tensor],
    w: torch.Tensor,
    combination: str,
    density,
    method: str,
    generator: torch.Generator,
) -> torch.Tensor:
    """Merge one factor (A or B) of every adapter, in PEFT's layout."""
    if combination in ("ties", "dare_ties", "dare_linear"):
        if combination == "ties":
            tensors = [_magnitude_prune(t, density) for t in tensors]
        else:
            tensors = [_random_prune(t, density, generator) for t in tensors]
    stacked = torch.stack(tensors)
    weighted = stacked * w.reshape(-1, 1, 1)
    if combination in ("linear", "dare_linear"):
        return weighted.sum(0)
    sign = stacked.sign()  # elect the sign on the (trimmed) factors before weighting, as PEFT does
    magnitude = stacked.sum(0) if method == "total" else sign.sum(0)
    agree = sign == torch.where(magnitude >= 0, 1.0, -1.0)
    return (weighted * agree).sum(0) / agree.sum(0).clamp(min=1)


def merge_adapters(
    adapters: list[Factors],
    weights,
    combination: str = "cat",
    density: float | None = None,
    majority_sign_method: str = "total",
    seed: int | None = None,
) -> Factors:  # notebook 12 §2
    """One adapter from several, PEFT's ``add_weighted_adapter`` semantics; ``scaling`` of the result is 1.

    ``seed`` seeds DARE's masks (a ``torch.Generator``; the global RNG is left alone). PEFT uses
    the global RNG: ``torch.manual_seed(seed)`` before its call gives the same masks.
    """
    check_mergeable(adapters, weights, combination, density, majority_sign_method)
    generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
    merged: Factors = {}
    for path in adapters[0]:
        As = [f[path][0] for f in adapters]
        Bs = [f[path][1] for f in adapters]
        ws = [float(w) * f[path][2] for w, f in zip(weights, adapters)]
        if combination == "cat":
            A = torch.cat([w * A for w, A in zip(ws, As)], dim=1)
            merged[path] = (A, torch.cat(Bs, dim=0), 1.0)
            continue
        wA = torch.tensor([math.copysign(math.sqrt(abs(w)), w) for w in ws], dtype=As[0].dtype)
        wB = torch.tensor([math.sqrt(abs(w)) for w in ws], dtype=As[0].dtype)
        # PEFT's layout (lora_A = Aᵀ r×in, lora_B = Bᵀ out×r), so that DARE draws the same masks
        A_t = _combine(
            [A.t() for A in As], wA, combination, density, majority_sign_method, generator
        )
        B_t = _combine(
            [B.t() for B in Bs], wB, combination, density, majority_sign_method, generator
        )
        merged[path] = (A_t.t().contiguous(), B_t.t().contiguous(), 1.0)
    return merged


def weighted_delta(adapters: list[Factors], weights) -> dict[str, torch.Tensor]:  # notebook 12 §2
    """``Σ w_i · scaling_i · A_i B_i`` per layer (in×out): the update a merge means to make."""
    check_mergeable(adapters, weights, "cat")
    return {
        path: sum(
            float(w) * f[path][2] * (f[path][0] @ f[path][1]) for w, f in zip(weights, adapters)
        )
        for path in adapters[0]
    }


def delta_of(factors: Factors) -> dict[str, torch.Tensor]:  # notebook 12 §2
    """``scaling · A B`` per layer (in×out)."""
    return {path: s * (A @ B) for path, (A, B, s) in factors.items()}
