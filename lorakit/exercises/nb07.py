"""Checkers for notebook 07 (double quantization). Each returns True/False and never raises."""

from __future__ import annotations

from ..quant import constants_bits, dynamic_map
from . import report


def _float(answer) -> float | None:
    try:
        return float(answer)
    except (TypeError, ValueError):
        return None


def check_ex_7_1(answer) -> bool:
    """Bits per parameter for NF4, blocksize 128, double-quantized (blocks of 256)."""
    right = 4 + constants_bits(128, double_quant=True)
    value = _float(answer)
    if value is None:
        return report(False, "", f"expected a float, got {answer!r}")
    if abs(value - right) < 1e-4:
        return report(True, f"4 + 8/128 + 32/(128·256) = {right:.5f} bits per parameter.", "")
    if abs(value - (4 + constants_bits(128))) < 1e-4:
        return report(False, "", "that is the cost WITHOUT double quantization (a float32 per block).")
    if abs(value - (4 + 8 / 128)) < 1e-4:
        return report(False, "", "almost: the second-level float32 absmax (one per 256 blocks) is stored too.")
    return report(False, "", "4 bits of code + 8 bits per block of 128 + 32 bits per 256 blocks.")


def check_ex_7_2(answer) -> bool:
    """GB saved by double quantization on 7e9 parameters at blocksize 64."""
    right = 7e9 * (constants_bits(64) - constants_bits(64, double_quant=True)) / 8 / 1e9
    value = _float(answer)
    if value is None:
        return report(False, "", f"expected a float (GB), got {answer!r}")
    if abs(value - right) < 1e-3:
        return report(True, f"7e9 × (0.5 − 0.127) bits / 8 = {right:.3f} GB.", "")
    if abs(value - right * 8) < 1e-2:
        return report(False, "", "that is in gigaBITS: divide by 8 for bytes.")
    if abs(value - right * 1e9) < 1e7:
        return report(False, "", "that is in bytes: the answer is asked in GB (1e9 bytes).")
    return report(False, "", "saved bits/param = 32/64 − (8/64 + 32/(64·256)); times 7e9 parameters, / 8 / 1e9.")


def check_ex_7_3(answer) -> bool:
    """absmax = dynamic_map()[200] · 0.05 + 0.1."""
    code = float(dynamic_map()[200])
    right = code * 0.05 + 0.1
    value = _float(answer)
    if value is None:
        return report(False, "", f"expected a float, got {answer!r}")
    if abs(value - right) < 1e-6:
        return report(True, f"dyn[200] = {code:.4f}; {code:.4f} × 0.05 + 0.1 = {right:.5f}.", "")
    if abs(value - code * 0.05) < 1e-6:
        return report(False, "", "the offset (the mean subtracted before quantizing) must be added back.")
    if abs(value - (200 / 255 * 0.05 + 0.1)) < 1e-3 or abs(value - (200 / 127 * 0.05 + 0.1)) < 1e-3:
        return report(False, "", "the 8-bit code is an index into the dynamic map, not a linear integer.")
    return report(False, "", "look up Q.dynamic_map()[200], multiply by absmax2, add the offset.")
