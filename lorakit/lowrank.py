"""Low-rank matrices: truncated SVD, Eckart–Young, parameter counts, subspace similarity.

Notebook 01 derives everything here (why a weight update can be written ``dW = A @ B``, and
what it costs in parameters); notebook 03 uses it to compare ranks and to measure how much two
trained adapters share (the subspace similarity φ of the LoRA paper, §7).

Notation (row-vector convention, as everywhere in lorakit): ``y = x @ W`` with
``W ∈ R^{m×n}`` (m = in, n = out), ``dW = A @ B`` with ``A ∈ R^{m×r}`` and ``B ∈ R^{r×n}``.
``torch.nn.Linear`` stores the transpose (``weight`` is out×in), so ``W = linear.weight.T``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .validate import integer, matrix, positive_int, rank, singular_value_list

# ---------------------------------------------------------------- SVD and the best rank-r matrix


def singular_values(W: torch.Tensor) -> torch.Tensor:  # notebook 01 §3
    """σ1 ≥ σ2 ≥ … ≥ σ_min(m,n) ≥ 0 of ``W`` (float64): the spectrum we plot and truncate."""
    return torch.linalg.svdvals(matrix(W))


def truncate(W: torch.Tensor, r: int) -> torch.Tensor:  # notebook 01 §4
    """The best rank-r approximation of ``W``: keep the top r singular triplets.

    ``W_r = U[:, :r] diag(σ[:r]) V[:, :r]ᵀ``. By Eckart–Young no other rank-r matrix is closer
    to ``W`` in Frobenius or spectral norm. Returned in ``W``'s dtype.
    """
    W64 = matrix(W)
    rank(r, *W64.shape)
    U, s, Vh = torch.linalg.svd(W64, full_matrices=False)
    W_r = (U[:, :r] * s[:r]) @ Vh[:r]
    return W_r.to(W.dtype if W.is_floating_point() else torch.float64)


def low_rank_factors(
    W: torch.Tensor, r: int
) -> tuple[torch.Tensor, torch.Tensor]:  # notebook 01 §4
    """``A`` (m×r) and ``B`` (r×n) with ``A @ B = truncate(W, r)``: the rank-r matrix written
    in LoRA's form, r(m+n) numbers instead of m·n. The singular values are split evenly
    (``A = U√σ``, ``B = √σ Vᵀ``) so neither factor carries all the scale."""
    W64 = matrix(W)
    rank(r, *W64.shape)
    U, s, Vh = torch.linalg.svd(W64, full_matrices=False)
    root = s[:r].sqrt()
    dtype = W.dtype if W.is_floating_point() else torch.float64
    return (U[:, :r] * root).to(dtype), (root[:, None] * Vh[:r]).to(dtype)


def tail_error(s: torch.Tensor, r: int, norm: str = "fro") -> float:  # notebook 01 §4
    """Eckart–Young: the error of the best rank-r approximation, read off the singular values.

    ``norm="fro"``: ``sqrt(σ_{r+1}² + … + σ_k²)``; ``norm="spectral"``: ``σ_{r+1}`` (0 when
    r = k). No SVD of the residual needed — that is the point of the theorem.
    """
    s = singular_value_list(s)
    integer(r, f"r (at most the number of singular values, {s.numel()})", 1, s.numel())
    if norm == "fro":
        return float(s[r:].square().sum().sqrt())
    if norm == "spectral":
        return float(s[r]) if r < s.numel() else 0.0
    raise ValueError(f"norm must be 'fro' or 'spectral', got {norm!r}")


def truncation_error(W: torch.Tensor, r: int, norm: str = "fro") -> float:  # notebook 01 §4
    """``‖W − W_r‖`` measured directly on the residual matrix (Frobenius or spectral).

    Compare it with ``tail_error(singular_values(W), r)`` to check Eckart–Young numerically.
    """
    W64 = matrix(W)
    if norm not in ("fro", "spectral"):
        raise ValueError(f"norm must be 'fro' or 'spectral', got {norm!r}")
    residual = W64 - truncate(W64, r)
    if norm == "fro":
        return float(torch.linalg.matrix_norm(residual, "fro"))
    return float(torch.linalg.matrix_norm(residual, 2))


def relative_errors(W: torch.Tensor) -> torch.Tensor:  # notebook 03 §1
    """``‖W − W_r‖_F / ‖W‖_F`` for r = 1 … min(m, n) (entry r−1), from the singular values.

    A curve that drops fast means a few directions carry most of the matrix.
    """
    s2 = singular_values(W).square()
    tail = s2.flip(0).cumsum(0).flip(0)  # tail[i] = σ_i² + … + σ_k² (0-based)
    total = s2.sum()
    errs = torch.cat([tail[1:], tail.new_zeros(1)])
    return (errs / total).clamp_min(0).sqrt() if total > 0 else torch.zeros_like(s2)


def energy(W_or_s: torch.Tensor, r: int) -> float:  # notebook 01 §4
    """Fraction of ``‖W‖_F²`` captured by the top r directions: ``Σ_{i≤r} σ_i² / Σ σ_i²``.

    Accepts a matrix or its (sorted) singular values. 1 − energy = relative error².
    """
    is_matrix = isinstance(W_or_s, torch.Tensor) and W_or_s.dim() == 2
    s = singular_values(W_or_s) if is_matrix else singular_value_list(W_or_s)
    integer(r, f"r (at most the number of singular values, {s.numel()})", 1, s.numel())
    s2 = s.square()
    total = s2.sum()
    if total == 0:
        raise ValueError("energy is undefined for the zero matrix (all singular values are 0)")
    return float(s2[:r].sum() / total)


def random_like(W: torch.Tensor, seed: int = 0) -> torch.Tensor:  # notebook 03 §1
    """A Gaussian matrix with ``W``'s shape and Frobenius norm: the "no structure" baseline.

    Its energy spreads over all directions (Marchenko–Pastur), so if ``W``'s top-r energy is
    far above this matrix's, ``W`` really is (approximately) low-rank.
    """
    W64 = matrix(W)
    gen = torch.Generator().manual_seed(seed)
    R = torch.randn(W64.shape, generator=gen, dtype=torch.float64)
    return (R * (torch.linalg.matrix_norm(W64) / torch.linalg.matrix_norm(R))).to(
        W.dtype if W.is_floating_point() else torch.float64
    )


# ---------------------------------------------------------------- parameter counts


def full_params(m: int, n: int) -> int:  # notebook 01 §5
    """Numbers in a dense m×n update: ``m·n`` (notebook 01 §5)."""
    return positive_int(m, "m") * positive_int(n, "n")


def lora_params(m: int, n: int, r: int) -> int:  # notebook 01 §5
    """Numbers in ``A`` (m×r) plus ``B`` (r×n): ``r(m + n)``, linear in the width, not quadratic.

    The one LoRA parameter-count formula (notebook 01 §5); ``memory.lora_parameter_count`` sums it
    over a real model's layers."""
    rank(r, positive_int(m, "m"), positive_int(n, "n"))
    return r * (m + n)


def lora_savings(  # notebook 01 §5
    total_params: float,
    shapes: list[tuple[int, int]],
    r: int,
    bytes_per_param: int = 2,
) -> dict:
    """Trainable parameters and checkpoint sizes: full fine-tuning vs LoRA on ``shapes``.

    ``total_params`` is the model's size (what full fine-tuning trains and saves);
    ``shapes`` lists the (m, n) of every adapted matrix; checkpoints are counted at
    ``bytes_per_param`` (2 for fp16/bf16). Returns counts, the ratio and sizes in bytes.
    """
    if total_params <= 0:
        raise ValueError(f"total_params must be > 0, got {total_params}")
    if not shapes:
        raise ValueError("shapes must list at least one (m, n) matrix to adapt, got none")
    if bytes_per_param <= 0:
        raise ValueError(f"bytes_per_param must be > 0, got {bytes_per_param}")
    trainable = sum(lora_params(m, n, r) for m, n in shapes)
    return dict(
        full_trainable=total_params,
        lora_trainable=trainable,
        ratio=total_params / trainable,
        full_checkpoint_bytes=total_params * bytes_per_param,
        lora_checkpoint_bytes=trainable * bytes_per_param,
    )


def gpt3_lora_savings(r: int = 4) -> dict:  # notebook 01 §5
    """The LoRA paper's GPT-3 175B arithmetic: rank r on Wq and Wv in all 96 layers (d=12288).

    With r=4: 96·2·4·(12288+12288) = 18.9 M trainable parameters, ≈ 9,300× fewer than 175 B
    (the paper rounds to "10,000×"), and an fp16 checkpoint of 37.7 MB (36 MiB) instead of
    350 GB (the paper's "35 MB").
    """
    d, layers = 12288, 96
    return lora_savings(175e9, [(d, d)] * (2 * layers), r, bytes_per_param=2)


# ---------------------------------------------------------------- measuring a fine-tuning update


def delta_weights(
    base_model: nn.Module, finetuned_model: nn.Module
) -> dict[str, torch.Tensor]:  # notebook 01 §6
    """``{name: dW}`` for every ``nn.Linear`` of ``base_model``, with ``dW = W_ft − W0`` (in×out).

    Both models must have the same Linear layers (names and shapes): a full fine-tuning of
    the base does. Bias terms are not part of ``dW``. Tensors are float32 copies on the CPU.
    """
    for name, model in (("base_model", base_model), ("finetuned_model", finetuned_model)):
        if not isinstance(model, nn.Module):
            raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    base = {k: m for k, m in base_model.named_modules() if isinstance(m, nn.Linear)}
    if not base:
        raise ValueError("base_model has no nn.Linear layers, so there is no dW to measure")
    tuned = dict(finetuned_model.named_modules())
    missing = [k for k in base if k not in tuned]
    not_linear = [k for k in base if k in tuned and not isinstance(tuned[k], nn.Linear)]
    wrong = [
        k
        for k in base
        if k in tuned
        and isinstance(tuned[k], nn.Linear)
        and tuned[k].weight.shape != base[k].weight.shape
    ]
    if missing or not_linear or wrong:
        raise ValueError(
            f"finetuned_model does not match base_model: missing {missing[:5]}, "
            f"not nn.Linear {not_linear[:5]} (merge a LoRA model first, or use A @ B), "
            f"wrong shapes {wrong[:5]}"
        )
    return {
        k: (
            tuned[k].weight.detach().float().cpu() - base[k].weight.detach().float().cpu()
        ).T.contiguous()
        for k in base
    }


# ---------------------------------------------------------------- subspace similarity (LoRA §7)


def _input_directions(A: torch.Tensor, name: str) -> torch.Tensor:
    """Left-singular vectors of our in×r ``A``: the input-space directions the adapter reads."""
    A64 = matrix(A, name)
    U, _, _ = torch.linalg.svd(A64, full_matrices=False)
    return U


def _check_pair(A1: torch.Tensor, A2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    U1, U2 = _input_directions(A1, "A1"), _input_directions(A2, "A2")
    if U1.shape[0] != U2.shape[0]:
        raise ValueError(
            f"A1 and A2 must have the same input size (rows), got {tuple(A1.shape)} and {tuple(A2.shape)}"
        )
    return U1, U2


def subspace_similarity(
    A1: torch.Tensor, A2: torch.Tensor, i: int, j: int
) -> float:  # notebook 03 §5
    """φ(A1, A2, i, j) = ‖U1[:, :i]ᵀ U2[:, :j]‖²_F / min(i, j), in [0, 1].

    U1, U2 are the left-singular vectors of the in×r matrices A1, A2. φ = 1 when the top-i
    directions of one adapter contain (or are contained in) the top-j of the other; two random
    subspaces of a d-dim space give about max(i, j)/d.
    """
    U1, U2 = _check_pair(A1, A2)
    integer(i, f"i (at most the rank of A1, {U1.shape[1]})", 1, U1.shape[1])
    integer(j, f"j (at most the rank of A2, {U2.shape[1]})", 1, U2.shape[1])
    overlap = U1[:, :i].T @ U2[:, :j]
    return float(overlap.square().sum() / min(i, j))


def subspace_similarity_grid(  # notebook 03 §5
    A1: torch.Tensor, A2: torch.Tensor, max_i: int | None = None, max_j: int | None = None
) -> torch.Tensor:
    """The φ heat map: entry ``[i-1, j-1] = subspace_similarity(A1, A2, i, j)``.

    One SVD per matrix and cumulative sums of the squared overlaps, so a 64×64 grid is cheap.
    """
    U1, U2 = _check_pair(A1, A2)
    k1, k2 = U1.shape[1], U2.shape[1]
    max_i = integer(k1 if max_i is None else max_i, f"max_i (at most the rank of A1, {k1})", 1, k1)
    max_j = integer(k2 if max_j is None else max_j, f"max_j (at most the rank of A2, {k2})", 1, k2)
    sq = (U1[:, :max_i].T @ U2[:, :max_j]).square()
    cum = sq.cumsum(0).cumsum(1)
    i = torch.arange(1, max_i + 1, dtype=torch.float64)[:, None]
    j = torch.arange(1, max_j + 1, dtype=torch.float64)[None, :]
    return cum / torch.minimum(i, j)


def random_subspace_similarity(d: int, i: int, j: int) -> float:  # notebook 03 §5
    """Expected φ of two independent random subspaces of R^d (dims i and j): ``max(i, j)/d``.

    E‖U1ᵀU2‖²_F = i·j/d, divided by min(i, j). The baseline a trained pair must beat.
    """
    for name, v in (("d", d), ("i", i), ("j", j)):
        positive_int(v, name)
    if max(i, j) > d:
        raise ValueError(f"i and j must be at most d = {d}, got i={i}, j={j}")
    return max(i, j) / d


__all__ = [
    "singular_values",
    "truncate",
    "low_rank_factors",
    "tail_error",
    "truncation_error",
    "relative_errors",
    "energy",
    "random_like",
    "full_params",
    "lora_params",
    "lora_savings",
    "gpt3_lora_savings",
    "delta_weights",
    "subspace_similarity",
    "subspace_similarity_grid",
    "random_subspace_similarity",
]
