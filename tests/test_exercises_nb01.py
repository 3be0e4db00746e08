
import pytest
from solutions import load_solutions
import torch

from lorakit.exercises import nb01

sol = load_solutions("nb01")

S = torch.linalg.svdvals(nb01.exercise_matrix())


@pytest.mark.parametrize("n", [1, 2, 3])
def test_solution_passes(n, capsys):
    assert getattr(nb01, f"check_ex_1_{n}")(getattr(sol, f"solve_ex_1_{n}")())
    assert "Correct" in capsys.readouterr().out


@pytest.mark.parametrize(
    "n, wrong",
    [(1, None), (1, "373"), (1, 4096 * 11008 / (8 * 4096)), (1, 8 * 15104 / (4096 * 11008)), (1, 100.0),
     (2, None), (2, float(S[2])), (2, float(S[2:].sum())), (2, float(S[1:].square().sum().sqrt())), (2, 0.0),
     (3, None), (3, 2), (3, 4), (3, 3.0), (3, True)],
)
def test_wrong_answer_fails(n, wrong, capsys):
    assert not getattr(nb01, f"check_ex_1_{n}")(wrong)
    assert "Not yet" in capsys.readouterr().out
