"""Checkers for notebook 07 (double quantization). Each returns True/False and never raises."""

from __future__ import annotations

from ..memory import MODEL_SHAPES, PAPER_DTYPES, estimate_memory
from ..quant import constants_bits, dynamic_map
from . import as_number, close, report

_float = as_number  # any numeric type; None for anything else (strings included)


def check_ex_7_1(answer) -> bool:
    """Bits per parameter for NF4, blocksize 128, double-quantized (blocks of 256): 4.0635.
    Any number type; accepted within 1e-4."""
    right = 4 + constants_bits(128, double_quant=True)
    value = _float(answer)
    if value is None:
        return report(False, "", f"expected a float, got {answer!r}")
    if abs(value - right) < 1e-4:
        return report(True, f"4 + 8/128 + 32/(128·256) = {right:.5f} bits per parameter.", "")
    if abs(value - (4 + constants_bits(128))) < 1e-4:
        return report(
            False, "", "that is the cost WITHOUT double quantization (a float32 per block)."
        )
    if abs(value - (4 + 8 / 128)) < 1e-4:
        return report(
            False, "", "almost: the second-level float32 absmax (one per 256 blocks) is stored too."
        )
    return report(False, "", "4 bits of code + 8 bits per block of 128 + 32 bits per 256 blocks.")


def check_ex_7_2(answer) -> bool:
    """GB saved by double quantization on 7e9 parameters at blocksize 64: 0.326 GB. Any number
    type; accepted within 0.5 %."""
    right = 7e9 * (constants_bits(64) - constants_bits(64, double_quant=True)) / 8 / 1e9
    value = _float(answer)
    if value is None:
        return report(False, "", f"expected a float (GB), got {answer!r}")
    if close(value, right, rel=5e-3):
        return report(True, f"7e9 × (0.5 − 0.127) bits / 8 = {right:.3f} GB.", "")
    if close(value, right * 8, rel=5e-3):
        return report(False, "", "that is in gigaBITS: divide by 8 for bytes.")
    if close(value, right * 1e9, rel=5e-3):
        return report(False, "", "that is in bytes: the answer is asked in GB (1e9 bytes).")
    return report(
        False,
        "",
        "saved bits/param = 32/64 − (8/64 + 32/(64·256)); times 7e9 parameters, / 8 / 1e9.",
    )


def check_ex_7_3(answer) -> bool:
    """absmax = dynamic_map()[200] · 0.05 + 0.1. Any number type; accepted within 1e-6."""
    code = float(dynamic_map()[200])
    right = code * 0.05 + 0.1
    value = _float(answer)
    if value is None:
        return report(False, "", f"expected a float, got {answer!r}")
    if abs(value - right) < 1e-6:
        return report(True, f"dyn[200] = {code:.4f}; {code:.4f} × 0.05 + 0.1 = {right:.5f}.", "")
    if abs(value - code * 0.05) < 1e-6:
        return report(
            False, "", "the offset (the mean subtracted before quantizing) must be added back."
        )
    if abs(value - (200 / 255 * 0.05 + 0.1)) < 1e-3 or abs(value - (200 / 127 * 0.05 + 0.1)) < 1e-3:
        return report(
            False, "", "the 8-bit code is an index into the dynamic map, not a linear integer."
        )
    return report(
        False, "", "look up quant.dynamic_map()[200], multiply by absmax2, add the offset."
    )


def _fits(limit_gb: float = 16.0) -> set:
    return {
        (m, method)
        for m in MODEL_SHAPES
        for method in ("full", "lora", "qlora")
        if estimate_memory(m, method, r=64, batch_size=1, seq_len=512)["total"] < limit_gb
    }


def check_ex_7_4(answer) -> bool:
    """The (model, method) pairs whose estimate (r = 64, batch 1×512) is under 16 GB: a set or any
    sequence of pairs (tuples or lists); exact."""
    try:
        got = {tuple(pair) for pair in answer}
    except TypeError:
        return report(False, "", f"expected a collection of (model, method) pairs, got {answer!r}")
    if not all(len(p) == 2 for p in got):
        return report(False, "", "each entry must be a pair (model, method), e.g. ('7B', 'qlora')")
    want = _fits()
    if got == want:
        totals = ", ".join(
            f"{m} {meth} {estimate_memory(m, meth, r=64)['total']:.1f} GB"
            for m, meth in sorted(want)
        )
        lora7 = estimate_memory("7B", "lora", r=64)["total"]
        lora7_paper = estimate_memory("7B", "lora", r=64, **PAPER_DTYPES)["total"]
        return report(
            True,
            f"{totals}. LoRA on a 16-bit 7B base needs {lora7:.1f} GB with the course's float32 "
            f"adapters and compute, {lora7_paper:.1f} GB with the paper's 16-bit ones: its frozen "
            "base alone is 2 bytes × 6.7 B parameters, so only 16-bit everything squeezes it onto "
            "a T4. QLoRA's 4-bit base is what brings 7B and 13B onto a free GPU on the course's path.",
            "",
        )
    if ("7B", "lora") in got - want:
        return report(
            False,
            "",
            "LoRA on a 16-bit 7B base fits 16 GB only with 16-bit adapters and activations "
            "(PAPER_DTYPES); with the course's float32 ones (the defaults) it does not",
        )
    missing, extra = sorted(want - got), sorted(got - want)
    return report(
        False,
        "",
        f"missing {missing or 'nothing'}, not fitting {extra or 'none'}: compare each "
        "estimate_memory(...)['total'] with 16",
    )
