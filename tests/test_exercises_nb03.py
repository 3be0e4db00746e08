import pytest
import torch
from solutions import load_solutions

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
    assert sol.solve_ex_3_3()(128, 8, 64, 50) == pytest.approx(
        lowrank.random_subspace_similarity(128, 8, 64), abs=0.02
    )


def formula_only(d, i, j, trials, seed=0):
    return max(i, j) / d


def min_phi(d, i, j, trials, seed=0):
    return min(i, j) / d


def unnormalised(d, i, j, trials, seed=0):  # columns of A instead of orthonormal U
    gen = torch.Generator().manual_seed(seed)
    vals = [
        float(
            (torch.randn(d, i, generator=gen).T @ torch.randn(d, j, generator=gen)).square().sum()
            / min(i, j)
        )
        for _ in range(trials)
    ]
    return sum(vals) / trials


def naive_phi():
    return float((A1[:, :2].T @ A2[:, :3]).square().sum() / 2)


@pytest.mark.parametrize(
    "n, wrong",
    [
        (1, None),
        (1, 0.25),
        (1, 16.0),
        (1, "2"),
        (2, None),
        (2, 2 * PHI),
        (2, naive_phi()),
        (2, 1.0),
        (2, torch.zeros(2)),
        (3, None),
        (3, 0.5),
        (3, formula_only),
        (3, min_phi),
        (3, unnormalised),
        (3, lambda *a: 1 / 0),
    ],
)
def test_wrong_answer_fails(n, wrong, capsys):
    assert not getattr(nb03, f"check_ex_3_{n}")(wrong)
    assert "Not yet" in capsys.readouterr().out


@pytest.mark.parametrize(
    "n, answer", [(1, 2), (1, torch.tensor(2.0)), (2, round(PHI, 4)), (2, torch.tensor(PHI))]
)
def test_rounded_answers_and_any_numeric_type_pass(n, answer):
    assert getattr(nb03, f"check_ex_3_{n}")(answer)
