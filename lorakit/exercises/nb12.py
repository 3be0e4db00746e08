"""Self-checks for notebook 12 (shipping adapters). Each ``check_ex_12_M(answer)`` prints
right/wrong and why, returns a bool, and never raises. Tolerances are stated in each docstring."""

from __future__ import annotations

import torch

from . import as_numbers, close, report

# ---------------------------------------------------------------- 12.1

LAYERS, IN, OUT_Q, OUT_V = 32, 4096, 4096, 1024
RANKS = [64, 64, 8, 8, 8, 8, 8, 8]


def _mb(rank_units: int, bytes_per_number: int = 2, factors: str = "AB") -> float:
    per_rank = (IN if "A" in factors else 0) * 2 + ((OUT_Q + OUT_V) if "B" in factors else 0)
    return rank_units * LAYERS * per_rank * bytes_per_number / 1e6


def check_ex_12_1(answer) -> bool:
    """``(padded_MB, own_MB)`` for 8 adapters (2 at r = 64, 6 at r = 8) on q_proj 4096×4096 and
    v_proj 4096×1024 of 32 layers, fp16. Tolerance: 0.5 % each (any pair of numbers)."""
    values = as_numbers(answer, 2)
    if values is None:
        return report(
            False, "", f"expected a pair (padded_MB, own_MB) of numbers, got {answer!r:.60}"
        )
    padded, own = _mb(len(RANKS) * max(RANKS)), _mb(sum(RANKS))
    if close(values[0], padded, rel=0.005) and close(values[1], own, rel=0.005):
        return report(
            True,
            f"{padded:.1f} MB padded vs {own:.1f} MB at their own ranks: the server pays "
            f"{padded / own:.2f}× for one cap that fits the largest adapter.",
            "",
        )
    if close(values[0], 2 * padded, rel=0.005) or close(values[1], 2 * own, rel=0.005):
        return report(
            False,
            "",
            "that is 4 bytes per number (float32); the adapters are held in fp16 (2 bytes).",
        )
    if close(values[0], _mb(len(RANKS) * max(RANKS), factors="A"), rel=0.005):
        return report(False, "", "that counts A only: B (r×out) is stacked and padded too.")
    if close(values[0], own, rel=0.005) and close(values[1], padded, rel=0.005):
        return report(False, "", "the two numbers are swapped: (padded_MB, own_MB).")
    if close(values[0], padded / LAYERS, rel=0.005):
        return report(False, "", "that is one layer; the adapters target all 32.")
    return report(
        False,
        "",
        f"got {values[0]:.4g} and {values[1]:.4g} MB. One unit of rank on q_proj costs "
        "4096 + 4096 numbers, on v_proj 4096 + 1024, in every layer.",
    )


# ---------------------------------------------------------------- 12.2


def _q8_case() -> torch.Tensor:
    g = torch.Generator().manual_seed(122)
    x = torch.randn(6, 96, generator=g) * 0.05
    x[0, :32] = 0.0  # an all-zero block
    x[1, :32] = (
        torch.arange(-16, 16) + 0.5
    ) / 1024  # d = 2⁻¹⁰ exactly, so x/d lands on exact halves
    x[1, 0] = -127 / 1024  # the block's absmax: d = absmax / 127 = 2⁻¹⁰
    x[2, 40] = 3.0  # an outlier
    return x


def check_ex_12_2(answer) -> bool:
    """``q8_0(x)`` → Q8_0 bytes byte-equal to gguf (``lorakit.export.quantize_q8_0``, tested equal
    to ``gguf.quants.quantize``) on values with an all-zero block, exact halves and an outlier."""
    from ..export import quantize_q8_0

    if not callable(answer):
        return report(False, "", f"expected a function q8_0(x), got {type(answer).__name__}")
    x = _q8_case()
    want = quantize_q8_0(x)
    try:
        got = answer(x.clone())
    except Exception as error:  # noqa: BLE001 - the learner's code may fail in any way
        return report(False, "", f"q8_0 raised {type(error).__name__}: {error}")
    if not isinstance(got, torch.Tensor) or got.dtype != torch.uint8:
        return report(
            False,
            "",
            f"return a torch.uint8 tensor of bytes, got {getattr(got, 'dtype', type(got).__name__)}",
        )
    if tuple(got.shape) != tuple(want.shape):
        return report(
            False,
            "",
            f"shape {tuple(got.shape)}, expected {tuple(want.shape)}: per row, 34 bytes per "
            "block of 32 (2 for the fp16 scale, then 32 int8)",
        )
    if torch.equal(got, want):
        return report(
            True, "byte-equal to llama.cpp's Q8_0 (fp16 scale, then 32 int8 per block).", ""
        )
    blocks, ref = got.reshape(-1, 34), want.reshape(-1, 34)
    if torch.equal(blocks[:, :2], ref[:, :2]):
        return report(
            False,
            "",
            "the scales are right but some codes differ: round halves away from zero "
            "(C's roundf), not to even as torch.round does.",
        )
    return report(
        False,
        "",
        "the scale bytes differ: d = absmax / 127 per block of 32, stored as float16 "
        "(2 bytes, little-endian) before the codes.",
    )


# ---------------------------------------------------------------- 12.3


def check_ex_12_3(answer) -> bool:
    """``merge_exact(a1, a2, w1, w2)`` → ``(A, B)`` with ``A @ B`` equal to the weighted sum of the
    scaled updates within 1e-5 (any factorization; ranks 3 and 5; inputs left unchanged)."""
    if not callable(answer):
        return report(
            False,
            "",
            f"expected a function merge_exact(a1, a2, w1, w2), got {type(answer).__name__}",
        )
    g = torch.Generator().manual_seed(123)
    a1 = (torch.randn(24, 3, generator=g), torch.randn(3, 16, generator=g), 2.0)
    a2 = (torch.randn(24, 5, generator=g), torch.randn(5, 16, generator=g), 0.5)
    w1, w2 = 0.7, -0.3
    copies = [t.clone() for t in (*a1[:2], *a2[:2])]
    want = w1 * a1[2] * a1[0] @ a1[1] + w2 * a2[2] * a2[0] @ a2[1]
    try:
        result = answer(a1, a2, w1, w2)
        A, B = result
        got = A @ B
    except Exception as error:  # noqa: BLE001
        return report(
            False,
            "",
            f"merge_exact must return (A, B) with A @ B defined; it raised "
            f"{type(error).__name__}: {error}",
        )
    if any(not torch.equal(c, t) for c, t in zip(copies, (*a1[:2], *a2[:2]))):
        return report(
            False, "", "merge_exact changed the adapters it was given; build new tensors."
        )
    if tuple(got.shape) != tuple(want.shape):
        return report(
            False, "", f"A @ B is {tuple(got.shape)}, the update is {tuple(want.shape)} (in×out)"
        )
    if torch.allclose(got, want, rtol=0, atol=1e-5):
        return report(
            True, f"A @ B is the exact weighted sum (rank {A.shape[1]}): that is PEFT's 'cat'.", ""
        )
    unscaled = w1 * a1[0] @ a1[1] + w2 * a2[0] @ a2[1]
    if torch.allclose(got, unscaled, rtol=0, atol=1e-5):
        return report(False, "", "the scalings are missing: each update is scaling_i · A_i B_i.")
    return report(
        False,
        "",
        "A @ B differs from w1·s1·A1B1 + w2·s2·A2B2. Stack the A's side by side (each "
        "times its w·s) and the B's on top of each other.",
    )


# ---------------------------------------------------------------- 12.4


def _ex_12_4() -> tuple[float, float, float]:
    from ..export import roundtrip

    g = torch.Generator().manual_seed(12)
    W = 0.02 * torch.randn(256, 256, generator=g)
    dW = 1e-4 * torch.randn(256, 256, generator=g)
    W_q = roundtrip(W, "Q4_0")
    scratch = roundtrip(W + dW, "Q4_0") - W_q
    into = roundtrip(W_q + dW, "Q4_0") - W_q
    dot = lambda real: ((real * dW).sum() / dW.pow(2).sum()).item()  # noqa: E731
    return dot(scratch), ((scratch - dW).norm() / dW.norm()).item(), dot(into)


def check_ex_12_4(answer) -> bool:
    """``(projection_scratch, noise_scratch, projection_into_quantized)`` for Q4_0 and a 1e-4 update on
    0.02-scale weights. Tolerance: 0.001 each (any sequence of three numbers)."""
    values = as_numbers(answer, 3)
    if values is None:
        return report(
            False,
            "",
            "expected three numbers (projection_scratch, noise_scratch, "
            f"projection_into_quantized), got {answer!r:.60}",
        )
    want = _ex_12_4()
    if all(close(v, w, abs=1e-3) for v, w in zip(values, want)):
        return report(
            True,
            f"from scratch the update survives on average (projection {want[0]:.2f}) under "
            f"noise {want[1]:.1f}× its size; added to the quantized base it is rounded away "
            f"(projection {want[2]:.2f}).",
            "",
        )
    if close(values[0], want[2], abs=1e-3) and close(values[2], want[0], abs=1e-3):
        return report(
            False,
            "",
            "the two projections are swapped: from scratch first, into the quantized base last.",
        )
    return report(
        False,
        "",
        f"got {[round(v, 3) for v in values]}. Draw W before dW from one generator; measure "
        "both changes from W_q = roundtrip(W, 'Q4_0'), project on dW, and divide the "
        "noise norm by ‖dW‖.",
    )
