"""Every notebook-07 solution passes its checker; typical wrong answers (and None) are rejected."""

import numpy as np
import pytest
import torch
from solutions import load_solutions

from lorakit.exercises import nb07

solutions = load_solutions("nb07")


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_solution_passes(n, capsys):
    answer = getattr(solutions, f"solve_ex_7_{n}")()
    assert getattr(nb07, f"check_ex_7_{n}")(answer)
    assert "Correct" in capsys.readouterr().out


@pytest.mark.parametrize(
    "n, wrong",
    [
        (1, None),
        (1, 4.25),
        (1, 4 + 8 / 128),
        (1, "4.06"),
        (2, None),
        (2, 7e9 * 0.373046875 / 8),
        (2, 0.373046875 * 7e9 / 1e9),
        (2, 4.5),
        (3, None),
        (3, 0.0),
        (3, 200 / 255 * 0.05 + 0.1),
        (3, "x"),
        (4, None),
        (4, 3),
        (4, {("7B", "qlora")}),
        (4, {("7B", "qlora"), ("13B", "qlora"), ("33B", "qlora")}),
        (
            4,
            {("7B", "qlora"), ("13B", "qlora"), ("7B", "lora")},
        ),  # the paper's 16-bit dtypes, not the defaults
        (4, ["7B", "13B"]),
    ],
)
def test_wrong_answers_rejected(n, wrong, capsys):
    assert not getattr(nb07, f"check_ex_7_{n}")(wrong)
    assert "Not yet" in capsys.readouterr().out


@pytest.mark.parametrize(
    "n, answer",
    [
        (1, 4.0635),
        (1, np.float64(4 + 8 / 128 + 32 / (128 * 256))),
        (2, 0.326),
        (2, torch.tensor(0.3264)),
        (4, [["7B", "qlora"], ["13B", "qlora"]]),
    ],
)
def test_rounded_answers_and_any_type_pass(n, answer):
    assert getattr(nb07, f"check_ex_7_{n}")(answer)
