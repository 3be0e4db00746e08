"""Worked solutions for notebook 06 (NF4 by hand)."""

import torch

from lorakit import quant as Q


def solve_ex_6_1() -> int:
    """Nearest NF4 value to 0.3: bucketize against the midpoints (ties go down)."""
    midpoints = (Q.NF4[:-1] + Q.NF4[1:]) / 2
    return int(torch.bucketize(torch.tensor(0.3), midpoints))


def solve_ex_6_2() -> list:
    """Pad [3, 12, 7] with NF4's code of 0.0 (7), then first code << 4 | second code."""
    codes = [3, 12, 7, 7]
    return [codes[i] << 4 | codes[i + 1] for i in range(0, len(codes), 2)]


def solve_ex_6_3() -> float:
    """4 bits of code + one float32 absmax shared by 128 values."""
    return 4 + 32 / 128
