"""Every worked solution of notebook 05 passes its checker; typical wrong answers are rejected."""

import math

import pytest
import torch
from solutions import load_solutions

from lorakit.exercises import nb05

solutions = load_solutions("nb05")


@pytest.mark.parametrize("m", [1, 2])
def test_solution_passes(m, capsys):
    answer = getattr(solutions, f"solve_ex_5_{m}")()
    assert getattr(nb05, f"check_ex_5_{m}")(answer) is True
    assert "Correct" in capsys.readouterr().out


def test_experiment_solution_passes_and_the_large_rate_wins(capsys, tmp_path, monkeypatch):
    """The experiment runs for real (tiny in test mode); the large learning rate wins; the checker
    checks the measurement: swapped, made-up or other-settings values are refused."""
    monkeypatch.setenv("LORAKIT_FAST", "1")
    answer = solutions.solve_ex_5_3()
    assert nb05.check_ex_5_3(answer) is True
    assert nb05.check_ex_5_3(answer, steps=12, batch_size=8) is True, (
        "the notebook passes STEPS, BATCH"
    )
    assert "Correct" in capsys.readouterr().out
    assert answer[1e-1] < answer[1e-4]
    swapped = {1e-4: answer[1e-1], 1e-1: answer[1e-4]}
    assert nb05.check_ex_5_3(swapped) is False
    assert "swapped" in capsys.readouterr().out
    assert nb05.check_ex_5_3({1e-4: 3.0, 1e-1: 2.9}) is False, (
        "any two plausible values are not enough"
    )


def test_notebook_and_checker_settings_agree():
    """The checker's settings per mode are the notebook's STEPS, BATCH, EVAL_BATCHES and P_MAX."""
    import re
    from pathlib import Path

    text = (
        Path(__file__).resolve().parents[1] / "notebooks" / "05_lora_and_its_siblings.py"
    ).read_text()
    for name, key in (
        ("STEPS", "steps"),
        ("BATCH", "batch_size"),
        ("EVAL_BATCHES", "eval_batches"),
        ("P_MAX", "p_max"),
    ):
        fast, full = map(
            int, re.search(rf"^{name} = (\d+) if FAST else (\d+)", text, re.M).groups()
        )
        assert (nb05.notebook_settings(True)[key], nb05.notebook_settings(False)[key]) == (
            fast,
            full,
        ), name


def _no_mask(q, k, v, pk, pv):
    K, V = torch.cat([pk, k], -2), torch.cat([pv, v], -2)
    return (q @ K.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1) @ V


def _causal_over_all(q, k, v, pk, pv):
    K, V = torch.cat([pk, k], -2), torch.cat([pv, v], -2)
    T, S = q.shape[-2], K.shape[-2]
    s = q @ K.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return s.masked_fill(~torch.ones(T, S, dtype=torch.bool).tril(), -float("inf")).softmax(-1) @ V


def _unscaled(q, k, v, pk, pv):
    return solutions.solve_ex_5_2()(q * math.sqrt(q.shape[-1]), k, v, pk, pv)


WRONG = {
    1: [None, "5242880", True, 20 * 4096, 20 * 32 * 4096, 20 * 2 * 4096, 1.5],
    2: [
        None,
        3,
        _no_mask,
        _causal_over_all,
        _unscaled,
        lambda q, k, v, pk, pv: q,
        lambda q, k, v, pk, pv: 1 / 0,
    ],
    3: [
        None,
        [3.1, 2.9],
        {1e-4: 3.0},
        {1e-4: 3.0, 1e-1: float("nan")},
        {1e-4: 3.0, 1e-1: 20.0},
        {1e-4: 3.0, 1e-1: "low"},
        {1e-4: 3.0, 1e-1: 3.0},
        {True: 3.0, 1e-1: 2.0},
    ],  # refused before any run
}


@pytest.mark.parametrize("m, wrong", [(m, w) for m, ws in WRONG.items() for w in ws])
def test_wrong_answers_are_rejected(m, wrong, capsys):
    assert getattr(nb05, f"check_ex_5_{m}")(wrong) is False
    assert "Not yet" in capsys.readouterr().out


def test_checker_accepts_other_numeric_types(capsys):
    assert nb05.check_ex_5_1(float(20 * 32 * 2 * 4096)) is True
    assert nb05.check_ex_5_1(torch.tensor(20 * 32 * 2 * 4096)) is True
