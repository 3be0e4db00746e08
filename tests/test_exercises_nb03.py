
import pytest
from solutions import load_solutions
import torch

from lorakit import lowrank
from lorakit.exercises import nb03

sol = load_solutions("nb03")

A1, A2 = nb03.exercise_adapters()
PHI = lowrank.subspace_similarity(A1, A2, 2, 3)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_solution_passes(n, capsys):
    assert getattr(nb03, f"check_ex_3_{n}")(getattr(sol, f"solve_ex_3_{n}")())
    assert "Correct" in capsys.readouterr().out


def test_solution_3_2_equals_the_package():
    assert sol.solve_ex_3_2() == pytest.approx(PHI, rel=1e-12)
    assert sol.solve_ex_3_3() == lowrank.random_subspace_similarity(128, 8, 64)


def naive_phi():
    return float((A1[:, :2].T @ A2[:, :3]).square().sum() / 2)


@pytest.mark.parametrize(
    "n, wrong",
    [(1, None), (1, 0.25), (1, 16.0), (1, "2"),
     (2, None), (2, 2 * PHI), (2, naive_phi()), (2, 1.0), (2, torch.zeros(2)),
     (3, None), (3, 4.0), (3, 0.0625), (3, 1.0)],
)
def test_wrong_answer_fails(n, wrong, capsys):
    assert not getattr(nb03, f"check_ex_3_{n}")(wrong)
    assert "Not yet" in capsys.readouterr().out
