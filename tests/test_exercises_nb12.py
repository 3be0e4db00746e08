"""Every worked solution of notebook 12 passes its checker; typical wrong answers are rejected."""

import numpy as np
import pytest
import torch
from solutions import load_solutions

from lorakit.exercises import nb12

solutions = load_solutions("nb12")


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_solution_passes(m, capsys):
    answer = getattr(solutions, f"solve_ex_12_{m}")()
    assert getattr(nb12, f"check_ex_12_{m}")(answer) is True
    assert "Correct" in capsys.readouterr().out


def test_numbers_of_any_type_and_natural_sequences_are_accepted():
    padded, own = solutions.solve_ex_12_1()
    for answer in (
        (padded, own),
        [padded, own],
        np.array([padded, own]),
        torch.tensor([padded, own]),
        (round(padded, 1), round(own, 1)),
    ):
        assert nb12.check_ex_12_1(answer) is True, type(answer)
    three = solutions.solve_ex_12_4()
    for answer in (three, list(three), np.array(three), torch.tensor(three)):
        assert nb12.check_ex_12_4(answer) is True, type(answer)


def test_12_1_refuses_the_named_mistakes(capsys):
    padded, own = solutions.solve_ex_12_1()
    cases = {
        (2 * padded, 2 * own): "float32",
        (own, padded): "swapped",
        (padded / 32, own / 32): "one layer",
        (padded * 8192 / 13312, own * 8192 / 13312): "",
        None: "expected a pair",
        "436": "expected a pair",
    }
    for answer, why in cases.items():
        assert nb12.check_ex_12_1(answer) is False, answer
        assert why in capsys.readouterr().out


def test_12_1_names_a_only():
    a_only = nb12._mb(8 * 64, factors="A")
    assert nb12.check_ex_12_1((a_only, 1.0)) is False


def _q8_round_to_even(x):
    blocks = x.float().reshape(-1, 32)
    d = blocks.abs().amax(1, keepdim=True) / 127
    inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    q = torch.round(blocks * inv).to(torch.int8)
    return torch.cat([d.half().view(torch.uint8), q.view(torch.uint8)], 1).reshape(
        *x.shape[:-1], -1
    )


def _q8_float32_scale(x):
    right = solutions.solve_ex_12_2()(x).reshape(-1, 34)
    d = (x.float().reshape(-1, 32).abs().amax(1, keepdim=True) / 127).view(
        torch.uint8
    )  # 4 bytes, not fp16
    return torch.cat([d, right[:, 2:]], 1).reshape(*x.shape[:-1], -1)


def test_12_2_refuses_the_named_mistakes(capsys):
    wrong = {
        _q8_round_to_even: "roundf",
        _q8_float32_scale: "shape",
        lambda x: solutions.solve_ex_12_2()(x).to(torch.int16): "uint8",
        lambda x: (_ for _ in ()).throw(RuntimeError("boom")): "raised",
        "not a function": "expected a function",
    }
    for answer, why in wrong.items():
        assert nb12.check_ex_12_2(answer) is False
        assert why in capsys.readouterr().out


def test_12_3_accepts_any_factorization_and_refuses_the_named_mistakes(capsys):
    right = solutions.solve_ex_12_3()

    def other_order(a1, a2, w1, w2):  # a different but exact factorization
        A, B = right(a2, a1, w2, w1)
        return 2 * A, B / 2

    assert nb12.check_ex_12_3(other_order) is True

    def unscaled(a1, a2, w1, w2):
        return torch.cat([w1 * a1[0], w2 * a2[0]], 1), torch.cat([a1[1], a2[1]], 0)

    def in_place(a1, a2, w1, w2):
        a1[0].mul_(w1 * a1[2])
        a2[0].mul_(w2 * a2[2])
        return torch.cat([a1[0], a2[0]], 1), torch.cat([a1[1], a2[1]], 0)

    def linear_style(a1, a2, w1, w2):  # averages A and B separately: needs equal ranks, fails here
        return w1 * a1[0] + w2 * a2[0], w1 * a1[1] + w2 * a2[1]

    for answer, why in [
        (unscaled, "scalings"),
        (in_place, "changed"),
        (linear_style, "raised"),
        (3, "expected"),
    ]:
        capsys.readouterr()
        assert nb12.check_ex_12_3(answer) is False
        assert why in capsys.readouterr().out


def test_12_4_refuses_the_named_mistakes(capsys):
    p_scratch, noise, p_into = solutions.solve_ex_12_4()
    for answer, why in [
        ((p_into, noise, p_scratch), "swapped"),
        ((p_scratch, noise / 7, p_into), "W_q"),
        ((p_scratch, noise), "three numbers"),
    ]:
        assert nb12.check_ex_12_4(answer) is False
        assert why in capsys.readouterr().out
