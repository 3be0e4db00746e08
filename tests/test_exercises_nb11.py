"""Every notebook-11 solution passes its checker; typical wrong answers are rejected."""

import math

import numpy as np
import torch
from solutions import load_solutions

from lorakit import rl
from lorakit.exercises import nb11

solutions = load_solutions("nb11")


def test_11_1(capsys):
    right = solutions.solve_ex_11_1()
    assert (
        nb11.check_ex_11_1(right)
        and nb11.check_ex_11_1(np.float32(right))
        and nb11.check_ex_11_1(torch.tensor(right))
    )
    for wrong in (
        None,
        "0.31",
        math.log1p(math.e),
        math.log1p(math.exp(-2)),
        math.log1p(math.exp(-1.5)),
        1 / (1 + math.exp(-1)),
        math.log(2),
    ):
        assert not nb11.check_ex_11_1(wrong), wrong
    out = capsys.readouterr().out
    assert "sign is flipped" in out and "β is missing" in out and "reference is missing" in out


def test_11_2(capsys):
    right = solutions.solve_ex_11_2()
    assert (
        nb11.check_ex_11_2(right)
        and nb11.check_ex_11_2(torch.tensor(right))
        and nb11.check_ex_11_2(tuple(right))
    )
    r = torch.tensor([0.25, 0.75, 0.5, 0.5])
    assert nb11.check_ex_11_2(((r - r.mean()) / r.std(unbiased=False)).numpy()), (
        "the population std is accepted"
    )
    for wrong in (None, 1.0, [0.0] * 4, (r - r.mean()).tolist(), r.tolist(), right[:3]):
        assert not nb11.check_ex_11_2(wrong), wrong
    assert "did not divide" in capsys.readouterr().out


def test_11_3(capsys):
    assert nb11.check_ex_11_3(solutions.better_reward)
    assert not nb11.check_ex_11_3(rl.reward), "the notebook's own verifier pays 0.5 for 'Rod.'"
    assert not nb11.check_ex_11_3(lambda a, s, t: float(s and a == t)), (
        "pass/fail: content earns nothing"
    )
    assert not nb11.check_ex_11_3(lambda a, s, t: 2.0)
    assert not nb11.check_ex_11_3(lambda a, s, t: 1 / 0)
    assert not nb11.check_ex_11_3(
        lambda a, s, t: rl.reward_parts(a, s, t)["overlap"] * (0.5 if s else 1.0)
    )
    assert not nb11.check_ex_11_3("reward")
    out = capsys.readouterr().out
    assert "at most 0.1" in out and "ZeroDivisionError" in out
