"""Checkers for notebook 00's exercises (solutions: notebooks/solutions/nb00.py)."""

import math

from . import report


def check_ex_0_1(answer) -> bool:
    """1.6 nats in bits."""
    want = 1.6 / math.log(2)
    if not isinstance(answer, (int, float)):
        return report(False, "", f"expected a float (bits per byte), got {answer!r}")
    if abs(answer - 1.6 * math.log(2)) < 1e-3:
        return report(False, "", "you multiplied by ln 2; a bit is larger than a nat, so divide")
    return report(abs(answer - want) < 1e-3, f"1.6 nats = {want:.4f} bits",
                  f"{answer} is not 1.6 / ln 2; check the conversion")


def check_ex_0_2(answer) -> bool:
    """Parameters of up_proj at d=128, ratio 4, no bias."""
    want = 128 * 4 * 128
    if not isinstance(answer, int):
        return report(False, "", f"expected an int, got {answer!r}")
    if answer == want + 4 * 128:
        return report(False, "", "the course's Linear layers have no bias (like Llama's)")
    return report(answer == want, f"{want:,} = 128 × 512",
                  f"{answer} is not in×out for in=128, out=512")


def check_ex_0_3(answer) -> bool:
    """Uniform over 256 and over 100 outcomes."""
    want = (8.0, math.log2(100))
    if not (isinstance(answer, tuple) and len(answer) == 2):
        return report(False, "", f"expected a tuple of two floats, got {answer!r}")
    ok = all(isinstance(a, (int, float)) and abs(a - w) < 1e-3 for a, w in zip(answer, want))
    return report(ok, f"log2 256 = 8 and log2 100 = {want[1]:.3f} bits/byte",
                  "each is log2 of the number of equally likely outcomes")
