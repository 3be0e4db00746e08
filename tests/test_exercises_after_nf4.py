"""Exercises 6.5 (MXFP4's power-of-two scale), 8.5 (LoftQ) and 8.6 (QA-LoRA's merge): each worked
solution passes its checker, and the wrong answers each checker names are refused."""

import numpy as np
import pytest
import torch
from solutions import load_solutions

from lorakit.exercises import nb06, nb08

sol06, sol08 = load_solutions("nb06"), load_solutions("nb08")


@pytest.mark.parametrize(
    "check, solve",
    [
        (nb06.check_ex_6_5, sol06.solve_ex_6_5),
        (nb08.check_ex_8_5, sol08.solve_ex_8_5),
        (nb08.check_ex_8_6, sol08.solve_ex_8_6),
    ],
)
def test_solution_passes(check, solve, capsys):
    assert check(solve())
    assert "Correct" in capsys.readouterr().out


def test_6_5_any_type_and_wrong_answers(capsys):
    mx, real = sol06.solve_ex_6_5()
    assert real < mx, "the real-valued scale has the smaller error"
    assert nb06.check_ex_6_5(np.array([mx, real])) and nb06.check_ex_6_5(torch.tensor([mx, real]))
    W = nb06._ex_6_5_weight()
    wrong_top = nb06._rel(W, nb06._e2m1_real_scale(W, top=4.0))
    for wrong, why in [
        (None, "pair"),
        ((real, mx), "swapped"),
        ((mx, wrong_top), "not / 4"),
        ((0.5, real), "MXFP4's error"),
        ((mx, 0.5), "per block of 32"),
    ]:
        capsys.readouterr()
        assert not nb06.check_ex_6_5(wrong)
        assert why in capsys.readouterr().out


def test_8_5_wrong_answers(capsys):
    plain, t1, t3 = sol08.solve_ex_8_5()
    assert t3 <= t1 < plain
    for wrong, why in [
        (None, "three numbers"),
        ((plain, plain, plain), "include the adapter"),
        ((t1, t1, t3), "B = 0"),
        ((plain, t1, 0.0), "alternate"),
    ]:
        capsys.readouterr()
        assert not nb08.check_ex_8_5(wrong)
        assert why in capsys.readouterr().out


def test_8_6_wrong_answers(capsys):
    def no_mean(zero, A, B, scaling, L):
        return zero + (A @ B * scaling).t()

    def no_scaling(zero, A, B, scaling, L):
        return zero + (A @ B).t() / L

    def in_place(zero, A, B, scaling, L):
        return zero.add_((A @ B * scaling).t() / L)

    def wrong_shape(zero, A, B, scaling, L):
        return zero.t()

    def raises(zero, A, B, scaling, L):
        raise RuntimeError("boom")

    for wrong, why in [
        (None, "expected a function"),
        (no_mean, "MEAN"),
        (no_scaling, "scaling"),
        (in_place, "in place"),
        (wrong_shape, "shape"),
        (raises, "raised"),
    ]:
        capsys.readouterr()
        assert not nb08.check_ex_8_6(wrong)
        assert why in capsys.readouterr().out
