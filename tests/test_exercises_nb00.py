import math

import numpy as np
import pytest
import torch
from solutions import load_solutions

from lorakit.exercises import nb00

sol = load_solutions("nb00")


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_solution_passes(n, capsys):
    assert getattr(nb00, f"check_ex_0_{n}")(getattr(sol, f"solve_ex_0_{n}")())
    assert "Correct" in capsys.readouterr().out


@pytest.mark.parametrize(
    "n, answer",
    [
        (1, 2.31),
        (1, np.float32(1.6 / math.log(2))),
        (1, torch.tensor(2.308)),  # sensible rounding, any type
        (2, 65536.0),
        (2, np.int64(65536)),
        (3, [8, 6.64]),
        (3, np.array([8.0, 6.644])),
        (3, torch.tensor([8.0, 6.644])),
    ],
)
def test_rounded_answers_and_any_numeric_type_pass(n, answer):
    assert getattr(nb00, f"check_ex_0_{n}")(answer)


def joint_entropy(data):
    d = data.long()
    c = torch.bincount(d[:-1] * 256 + d[1:], minlength=65536).double()
    p = c[c > 0] / c.sum()
    return float(-(p * p.log2()).sum())


def nats(data):
    return sol.solve_ex_0_4()(data) * math.log(2)


@pytest.mark.parametrize(
    "n, wrong",
    [
        (1, None),
        (1, 1.6 * math.log(2)),
        (1, "2.31"),
        (1, True),
        (2, None),
        (2, 128 * 512 + 512),
        (2, 128 * 128),
        (2, 65536.5),
        (3, None),
        (3, (8.0, 100.0)),
        (3, 8.0),
        (3, (8.0, math.log(100))),
        (3, (8.0, 6.644, 1.0)),
        (4, None),
        (4, 3.2),
        (4, joint_entropy),
        (4, nats),
        (4, lambda d: 1 / 0),
        (4, lambda d: "x"),
    ],
)
def test_wrong_answer_fails(n, wrong, capsys):
    assert not getattr(nb00, f"check_ex_0_{n}")(wrong)
    assert "Not yet" in capsys.readouterr().out


def test_hint_of_0_1_says_the_nat_is_the_larger_unit(capsys):
    nb00.check_ex_0_1(1.6 * math.log(2))
    out = capsys.readouterr().out
    assert "nat is the larger unit" in out and "bit is larger" not in out
