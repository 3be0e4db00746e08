"""Every notebook-07 solution passes its checker; typical wrong answers (and None) are rejected."""


import pytest
from solutions import load_solutions

from lorakit.exercises import nb07

solutions = load_solutions("nb07")


@pytest.mark.parametrize("n", [1, 2, 3])
def test_solution_passes(n, capsys):
    answer = getattr(solutions, f"solve_ex_7_{n}")()
    assert getattr(nb07, f"check_ex_7_{n}")(answer)
    assert "Correct" in capsys.readouterr().out


@pytest.mark.parametrize("n, wrong", [
    (1, None), (1, 4.25), (1, 4 + 8 / 128), (1, "4.06"),
    (2, None), (2, 7e9 * 0.373046875 / 8), (2, 0.373046875 * 7e9 / 1e9), (2, 4.5),
    (3, None), (3, 0.0), (3, 200 / 255 * 0.05 + 0.1), (3, "x"),
])
def test_wrong_answers_rejected(n, wrong, capsys):
    assert not getattr(nb07, f"check_ex_7_{n}")(wrong)
    assert "Not yet" in capsys.readouterr().out
