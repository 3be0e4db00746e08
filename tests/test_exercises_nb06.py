"""Every notebook-06 solution passes its checker; typical wrong answers (and None) are rejected."""

import numpy as np
import pytest
import torch
from solutions import load_solutions

from lorakit.exercises import nb06

solutions = load_solutions("nb06")


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_solution_passes(n, capsys):
    answer = getattr(solutions, f"solve_ex_6_{n}")()
    assert getattr(nb06, f"check_ex_6_{n}")(answer)
    assert "Correct" in capsys.readouterr().out


@pytest.mark.parametrize(
    "n, wrong",
    [
        (1, None),
        (1, 10),
        (1, "eleven"),
        (1, 99),
        (2, None),
        (2, [0xC3, 0x77]),
        (2, [0x3C, 0x70]),
        (2, "bytes"),
        (3, None),
        (3, 4.5),
        (3, "4.25 bits"),
        (1, 11.5),
        (1, True),
        (2, [0x3C, 0x77, 0]),
        (2, [60.5, 119]),
        (4, None),
        (4, [0.14, 0.15, 0.10]),
        (4, {"int4": 0.1078, "fp4": 0.1222, "nf4": 0.0921}),
        (4, {"int4": 0.14, "fp4": 0.15, "nf4": 0.2}),
        (4, {"int4": "x", "fp4": 0.15, "nf4": 0.1}),
    ],
)
def test_wrong_answers_rejected(n, wrong, capsys):
    assert not getattr(nb06, f"check_ex_6_{n}")(wrong)
    assert "Not yet" in capsys.readouterr().out


@pytest.mark.parametrize(
    "n, answer",
    [
        (1, 11.0),
        (1, np.int64(11)),
        (2, (0x3C, 0x77)),
        (2, bytes([0x3C, 0x77])),
        (2, torch.tensor([60, 119])),
        (3, np.float32(4.25)),
        (4, {"int4": 0.141, "fp4": 0.151, "nf4": torch.tensor(0.104)}),
    ],
)
def test_any_numeric_or_sequence_type_passes(n, answer):
    assert getattr(nb06, f"check_ex_6_{n}")(answer)
