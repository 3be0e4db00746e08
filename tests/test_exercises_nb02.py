"""Every worked solution of notebook 02 passes its checker; typical wrong answers are rejected."""

import pytest
import torch
from solutions import load_solutions

from lorakit.exercises import nb02

solutions = load_solutions("nb02")


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_solution_passes(m, capsys):
    answer = getattr(solutions, f"solve_ex_2_{m}")()
    assert getattr(nb02, f"check_ex_2_{m}")(answer) is True
    assert "Correct" in capsys.readouterr().out


def in_place_merge(W0, A, B, s):
    W0 += s * (A @ B).T  # right value, but the shared base weight is gone
    return W0


def ignores_its_start(A0, B0):  # trains from its own random init, so "both zero" learns too
    return solutions.solve_ex_2_4()(torch.randn_like(A0) / 4, torch.zeros_like(B0))


WRONG = {
    1: [
        None,
        3,
        lambda x, W0, A, B, s, G: (
            x.T @ G @ B.T,
            (x @ A).T @ G,
            G @ W0.T + G @ B.T @ A.T,
        ),  # no scaling
        lambda x, W0, A, B, s, G: (
            s * x.T @ G @ B.T,
            s * (x @ A).T @ G,
            s * G @ B.T @ A.T,
        ),  # no frozen path
        lambda x, W0, A, B, s, G: (s * x.T @ G @ B.T, s * (x @ A).T @ G),  # two values
        lambda x, W0, A, B, s, G: (s * G.T @ x @ B.T, s * (x @ A).T @ G, G @ W0.T),  # shapes
        lambda *a: 1 / 0,
    ],
    2: [
        None,
        3,
        lambda W0, A, B, s: W0 + s * A @ B,
        lambda W0, A, B, s: W0 + (A @ B).T,
        lambda W0, A, B, s: "x",
        lambda W0, A, B, s: 1 / 0,
        in_place_merge,
    ],
    3: [
        None,
        lambda A, B: (A, B),
        lambda A, B: (A.reshape(A.shape[1], -1), B.reshape(B.shape[1], -1)),
        lambda A, B: A.T,
    ],
    4: [
        None,
        0.25,
        lambda A0, B0: 0.0,
        lambda A0, B0: 1e9,
        ignores_its_start,
        lambda A0, B0: 1 / 0,
    ],
}


@pytest.mark.parametrize("m, wrong", [(m, w) for m, ws in WRONG.items() for w in ws])
def test_wrong_answers_are_rejected(m, wrong, capsys):
    assert getattr(nb02, f"check_ex_2_{m}")(wrong) is False
    assert "Not yet" in capsys.readouterr().out


def test_a_pair_as_a_list_passes_2_3():
    assert nb02.check_ex_2_3(lambda A, B: [A.T, B.T])
