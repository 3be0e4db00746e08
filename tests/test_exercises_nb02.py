"""Every worked solution of notebook 02 passes its checker; typical wrong answers are rejected."""


import pytest
from solutions import load_solutions

from lorakit.exercises import nb02

solutions = load_solutions("nb02")


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_solution_passes(m, capsys):
    answer = getattr(solutions, f"solve_ex_2_{m}")()
    assert getattr(nb02, f"check_ex_2_{m}")(answer) is True
    assert "Correct" in capsys.readouterr().out


WRONG = {
    1: [None, 2_097_152, 32 * 2 * 4096 * 4096, "4194304", True],
    2: [None, 3, lambda W0, A, B, s: W0 + s * A @ B, lambda W0, A, B, s: W0 + (A @ B).T,
        lambda W0, A, B, s: "x", lambda W0, A, B, s: 1 / 0],
    3: [None, lambda A, B: (A, B), lambda A, B: (A.reshape(A.shape[1], -1), B.reshape(B.shape[1], -1)),
        lambda A, B: A.T],
    4: [None, 0.25, "two", 16.0],
}


@pytest.mark.parametrize("m, wrong", [(m, w) for m, ws in WRONG.items() for w in ws])
def test_wrong_answers_are_rejected(m, wrong, capsys):
    assert getattr(nb02, f"check_ex_2_{m}")(wrong) is False
    assert "Not yet" in capsys.readouterr().out
