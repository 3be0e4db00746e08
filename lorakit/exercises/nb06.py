"""Checkers for notebook 06 (NF4 by hand). Each returns True/False and never raises."""

from __future__ import annotations

import torch

from ..quant import NF4, constants_bits, dequantize_4bit, nearest_codes, pack_nibbles, quantize_4bit
from . import as_integer, as_number, as_numbers, close, report


def _as_list(answer) -> list | None:
    """A sequence of whole numbers (list, tuple, tensor, array, bytes) as a list of ints, else None."""
    if isinstance(answer, (bytes, bytearray)):
        return list(answer)
    values = as_numbers(answer)
    if values is None or not all(v.is_integer() for v in values):
        return None
    return [int(v) for v in values]


def check_ex_6_1(answer) -> bool:
    """The NF4 code of the scaled value 0.3 (11). Any whole number (11.0 too); exact."""
    right = int(nearest_codes(torch.tensor([0.3]), NF4))
    value = as_integer(answer)
    if value is None:
        return report(False, "", f"expected a whole number, a code 0-15, got {answer!r}")
    if value == right:
        return report(
            True,
            f"0.3 lies above the midpoint {(NF4[10] + NF4[11]).item() / 2:.4f} of codes 10 and 11, "
            f"so it gets code {right} (value {NF4[right].item():.4f}).",
            "",
        )
    if value == right - 1:
        return report(
            False,
            "",
            "code 10 is the table value just below 0.3, but NF4 rounds to the NEAREST "
            "value: compare 0.3 with the midpoint of codes 10 and 11.",
        )
    return report(
        False,
        "",
        f"code {value} stands for {NF4[value].item() if 0 <= value < 16 else 'nothing'}; "
        "look for the table values on either side of 0.3.",
    )


def check_ex_6_2(answer) -> bool:
    """Packing NF4 codes [3, 12, 7] (padded with 7, the code of 0.0): [0x3C, 0x77]. Any sequence of
    whole numbers (list, tuple, tensor, bytes); exact."""
    right = pack_nibbles(torch.tensor([3, 12, 7, 7], dtype=torch.uint8)).tolist()
    got = _as_list(answer)
    if got is None:
        return report(False, "", f"expected a list of ints (one per byte), got {answer!r}")
    if got == right:
        return report(
            True,
            f"{[hex(b) for b in right]}: 3 and 12 share a byte (3 high), 7 is padded with 7.",
            "",
        )
    if got == [0xC3, 0x77]:
        return report(
            False,
            "",
            "that puts the first code in the LOW nibble; bitsandbytes puts it in the high one.",
        )
    if got[:1] == right[:1] and len(got) == 2:
        return report(
            False,
            "",
            "the first byte is right; the odd count is padded with the code of the value 0.0 "
            "(7 in NF4), not with 0.",
        )
    return report(
        False, "", f"expected {len(right)} bytes: byte = first_code << 4 | second_code; got {got}."
    )


def check_ex_6_3(answer) -> bool:
    """Bits per parameter for NF4 at blocksize 128 without double quantization: 4.25. Any number
    type; accepted within 1e-4."""
    right = 4 + constants_bits(128)
    value = as_number(answer)
    if value is None:
        return report(False, "", f"expected a number, got {answer!r}")
    if abs(value - right) < 1e-4:
        return report(True, f"4 bits + 32/128 = {right} bits per parameter.", "")
    if abs(value - 4.5) < 1e-4:
        return report(
            False,
            "",
            "4.5 is the cost at blocks of 64; with 128 the float32 absmax is shared by twice as many values.",
        )
    return report(
        False,
        "",
        "each value has a 4-bit code, and each block of 128 values shares one 32-bit absmax.",
    )


def _relative_errors(w: torch.Tensor) -> dict:
    return {
        name: float(
            torch.linalg.norm(dequantize_4bit(quantize_4bit(w, name)) - w) / torch.linalg.norm(w)
        )
        for name in ("int4", "fp4", "nf4")
    }


def check_ex_6_4(answer) -> bool:
    """Relative errors ‖w − ŵ‖_F/‖w‖_F of INT4, FP4 and NF4 (blocks of 64) on a 1024×1024 Laplace
    sample: a dict {"int4", "fp4", "nf4"} of numbers, each within 2 % of the checker's measurement
    (seed 0; other seeds differ by about 0.1 %)."""
    if not isinstance(answer, dict) or set(answer) != {"int4", "fp4", "nf4"}:
        return report(False, "", f'expected a dict with keys "int4", "fp4", "nf4", got {answer!r}')
    values = {k: as_number(v) for k, v in answer.items()}
    if any(v is None for v in values.values()):
        return report(False, "", "each value must be one number (a relative error)")
    gen = torch.Generator().manual_seed(0)
    laplace = -torch.sign(u := torch.rand(1024, 1024, generator=gen) - 0.5) * torch.log1p(
        -2 * u.abs()
    )
    want = _relative_errors(laplace)
    normal = _relative_errors(torch.randn(1024, 1024, generator=gen))
    if all(close(values[k], normal[k], rel=0.02) for k in want):
        return report(
            False,
            "",
            "these are the errors on normal data: sample from torch.distributions.Laplace",
        )
    wrong = [k for k in want if not close(values[k], want[k], rel=0.02)]
    if wrong:
        k = wrong[0]
        return report(
            False,
            "",
            f"{k}: {values[k]:.4f}, expected about {want[k]:.4f} (within 2 %). Relative error "
            "here is torch.linalg.norm(w_hat - w) / torch.linalg.norm(w), blocks of 64.",
        )
    gap_laplace, gap_normal = want["int4"] / want["nf4"], normal["int4"] / normal["nf4"]
    return report(
        True,
        f"on Laplace data NF4 {want['nf4']:.3f} < INT4 {want['int4']:.3f} < FP4 {want['fp4']:.3f}; "
        f"INT4's error is {gap_laplace:.2f}× NF4's, against {gap_normal:.2f}× on normal data. "
        "Heavier tails put a larger absmax over the same bulk of small values, which crowd "
        "into INT4's few central levels; NF4 keeps more levels near zero.",
        "",
    )


# ----------------------------------------------------------------- section 9 (MXFP4 and NVFP4)


def _ex_6_5_weight() -> torch.Tensor:
    return torch.randn(64, 256, generator=torch.Generator().manual_seed(65))


def _rel(W: torch.Tensor, W_hat: torch.Tensor) -> float:
    return (torch.linalg.norm(W - W_hat) / torch.linalg.norm(W)).item()


def _e2m1_real_scale(W: torch.Tensor, top: float = 6.0) -> torch.Tensor:
    """E2M1 in blocks of 32 with the real-valued scale absmax/top (no power of two)."""
    from ..mxfp import E2M1, e2m1_codes

    blocks = W.reshape(-1, 32)
    scale = blocks.abs().amax(dim=1, keepdim=True) / top
    return (E2M1[e2m1_codes(blocks / scale).long()] * scale).view(W.shape)


def check_ex_6_5(answer) -> bool:
    """(MXFP4's relative error, the error of E2M1 blocks of 32 with the real scale absmax/6) on
    ``randn(64, 256)`` from seed 65. A pair of numbers of any numeric/sequence type; each within 1e-4."""
    from ..mxfp import roundtrip

    W = _ex_6_5_weight()
    mx, real = _rel(W, roundtrip(W, "mxfp4")), _rel(W, _e2m1_real_scale(W))
    got = as_numbers(answer, length=2)
    if got is None:
        return report(
            False, "", f"expected a pair of numbers (error_mxfp4, error_real_scale), got {answer!r}"
        )
    if abs(got[0] - mx) < 1e-4 and abs(got[1] - real) < 1e-4:
        return report(
            True,
            f"MXFP4 {mx:.4f} against {real:.4f} with a real-valued scale: the power-of-two "
            f"scale costs {100 * (1 - real / mx):.0f} % of MXFP4's error here. NVFP4 keeps most "
            "of that back with an 8-bit E4M3 scale per 16 values.",
            "",
        )
    if abs(got[0] - real) < 1e-4 and abs(got[1] - mx) < 1e-4:
        return report(False, "", "the two numbers are swapped: MXFP4's error first")
    if abs(got[1] - _rel(W, _e2m1_real_scale(W, top=4.0))) < 1e-4:
        return report(
            False,
            "",
            "the real scale maps the block's absmax onto 6, E2M1's top value: absmax / 6, not / 4",
        )
    if abs(got[0] - mx) >= 1e-4:
        return report(
            False,
            "",
            "the first number is MXFP4's error: mxfp.roundtrip(W, 'mxfp4'), then ‖W − Ŵ‖/‖W‖",
        )
    return report(
        False,
        "",
        "the second: per block of 32, scale = absmax / 6, codes = mxfp.e2m1_codes(block / scale), "
        "values = mxfp.E2M1[codes] · scale",
    )
