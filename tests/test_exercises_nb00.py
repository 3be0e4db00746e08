import math

import pytest
from solutions import load_solutions

from lorakit.exercises import nb00

sol = load_solutions("nb00")


@pytest.mark.parametrize("n", [1, 2, 3])
def test_solution_passes(n):
    assert getattr(nb00, f"check_ex_0_{n}")(getattr(sol, f"solve_ex_0_{n}")())


@pytest.mark.parametrize(
    "n, wrong",
    [(1, None), (1, 1.6 * math.log(2)), (2, None), (2, 128 * 512 + 512), (2, 128 * 128),
     (3, None), (3, (8.0, 100.0)), (3, 8.0)],
)
def test_wrong_answer_fails(n, wrong, capsys):
    assert not getattr(nb00, f"check_ex_0_{n}")(wrong)
    assert "Not yet" in capsys.readouterr().out
