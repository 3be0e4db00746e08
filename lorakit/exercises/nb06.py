"""Checkers for notebook 06 (NF4 by hand). Each returns True/False and never raises."""

from __future__ import annotations

import torch

from ..quant import NF4, constants_bits, nearest_codes, pack_nibbles
from . import report


def _as_list(answer) -> list | None:
    try:
        if isinstance(answer, torch.Tensor):
            return [int(v) for v in answer.reshape(-1).tolist()]
        return [int(v) for v in answer]
    except (TypeError, ValueError):
        return None


def check_ex_6_1(answer) -> bool:
    """The NF4 code of the scaled value 0.3."""
    right = int(nearest_codes(torch.tensor([0.3]), NF4))
    try:
        value = int(answer)
    except (TypeError, ValueError):
        return report(False, "", f"expected an int code 0-15, got {answer!r}")
    if value == right:
        return report(True, f"0.3 lies above the midpoint {(NF4[10] + NF4[11]).item() / 2:.4f} of codes 10 and 11, "
                      f"so it gets code {right} (value {NF4[right].item():.4f}).", "")
    if value == right - 1:
        return report(False, "", "code 10 is the table value just below 0.3, but NF4 rounds to the NEAREST "
                      "value: compare 0.3 with the midpoint of codes 10 and 11.")
    return report(False, "", f"code {value} stands for {NF4[value].item() if 0 <= value < 16 else 'nothing'}; "
                  "look for the table values on either side of 0.3.")


def check_ex_6_2(answer) -> bool:
    """Packing NF4 codes [3, 12, 7] (padded with 7, the code of 0.0)."""
    right = pack_nibbles(torch.tensor([3, 12, 7, 7], dtype=torch.uint8)).tolist()
    got = _as_list(answer)
    if got is None:
        return report(False, "", f"expected a list of ints (one per byte), got {answer!r}")
    if got == right:
        return report(True, f"{[hex(b) for b in right]}: 3 and 12 share a byte (3 high), 7 is padded with 7.", "")
    if got == [0xC3, 0x77]:
        return report(False, "", "that puts the first code in the LOW nibble; bitsandbytes puts it in the high one.")
    if got[:1] == right[:1] and len(got) == 2:
        return report(False, "", "the first byte is right; the odd count is padded with the code of the value 0.0 "
                      "(7 in NF4), not with 0.")
    return report(False, "", f"expected {len(right)} bytes: byte = first_code << 4 | second_code; got {got}.")


def check_ex_6_3(answer) -> bool:
    """Bits per parameter for NF4 at blocksize 128 without double quantization."""
    right = 4 + constants_bits(128)
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return report(False, "", f"expected a float, got {answer!r}")
    if abs(value - right) < 1e-6:
        return report(True, f"4 bits + 32/128 = {right} bits per parameter.", "")
    if abs(value - 4.5) < 1e-6:
        return report(False, "", "4.5 is the cost at blocks of 64; with 128 the float32 absmax is shared by twice as many values.")
    return report(False, "", "each value has a 4-bit code, and each block of 128 values shares one 32-bit absmax.")
