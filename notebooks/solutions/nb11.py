"""Worked solutions for notebook 11 (LoRA after SFT: DPO and GRPO)."""

import math

import torch

from lorakit import rl


def solve_ex_11_1() -> float:
    """margin = (−12 − (−13)) − (−15 − (−14)) = 1 + 1 = 2; loss = −log σ(0.5 · 2) = log(1 + e^−1)."""
    margin = (-12.0 - -13.0) - (-15.0 - -14.0)
    return math.log1p(math.exp(-0.5 * margin))


def solve_ex_11_2() -> list:
    """(r − mean) / std within the group, std as torch computes it (n − 1)."""
    r = torch.tensor([0.25, 0.75, 0.5, 0.5])
    return ((r - r.mean()) / r.std()).tolist()


def better_reward(answer: str, stopped: bool, summary: str) -> float:
    """Format is paid only in proportion to content: the overlap times (1 + stops + sentence) / 3.

    A contentless sentence that stops earns 0; the true line, ended, earns 1.
    """
    parts = rl.reward_parts(answer, stopped, summary)
    return parts["overlap"] * (1 + parts["stops"] + parts["sentence"]) / 3
