import numpy as np
import pytest
import torch
from solutions import load_solutions

from lorakit.exercises import nb01

sol = load_solutions("nb01")

S = torch.linalg.svdvals(nb01.exercise_matrix())


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_solution_passes(n, capsys):
    assert getattr(nb01, f"check_ex_1_{n}")(getattr(sol, f"solve_ex_1_{n}")())
    assert "Correct" in capsys.readouterr().out


@pytest.mark.parametrize(
    "n, wrong",
    [
        (1, None),
        (1, "373"),
        (1, 4096 * 11008 / (8 * 4096)),
        (1, 8 * 15104 / (4096 * 11008)),
        (1, 100.0),
        (2, None),
        (2, float(S[2])),
        (2, float(S[2:].sum())),
        (2, float(S[1:].square().sum().sqrt())),
        (2, 0.0),
        (3, None),
        (3, 2),
        (3, 4),
        (3, 3.5),
        (3, True),
        (4, None),
        (4, 48),
        (4, lambda k: 48),
        (4, lambda k: 1),
        (4, lambda k: k),
        (4, lambda k: 1 / 0),
    ],
)
def test_wrong_answer_fails(n, wrong, capsys):
    assert not getattr(nb01, f"check_ex_1_{n}")(wrong)
    assert "Not yet" in capsys.readouterr().out


@pytest.mark.parametrize(
    "n, answer",
    [
        (1, 373),
        (1, np.float64(373.2)),
        (2, torch.tensor(float(S[2:].square().sum().sqrt()))),
        (2, round(float(S[2:].square().sum().sqrt()), 4)),
        (3, 3.0),
        (3, np.int64(3)),
    ],
)
def test_rounded_answers_and_any_numeric_type_pass(n, answer):
    assert getattr(nb01, f"check_ex_1_{n}")(answer)
