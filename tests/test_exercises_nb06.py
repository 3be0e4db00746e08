"""Every notebook-06 solution passes its checker; typical wrong answers (and None) are rejected."""


import pytest
from solutions import load_solutions

from lorakit.exercises import nb06

solutions = load_solutions("nb06")


@pytest.mark.parametrize("n", [1, 2, 3])
def test_solution_passes(n, capsys):
    answer = getattr(solutions, f"solve_ex_6_{n}")()
    assert getattr(nb06, f"check_ex_6_{n}")(answer)
    assert "Correct" in capsys.readouterr().out


@pytest.mark.parametrize("n, wrong", [
    (1, None), (1, 10), (1, "eleven"), (1, 99),
    (2, None), (2, [0xC3, 0x77]), (2, [0x3C, 0x70]), (2, "bytes"),
    (3, None), (3, 4.5), (3, "4.25 bits"),
])
def test_wrong_answers_rejected(n, wrong, capsys):
    assert not getattr(nb06, f"check_ex_6_{n}")(wrong)
    assert "Not yet" in capsys.readouterr().out
