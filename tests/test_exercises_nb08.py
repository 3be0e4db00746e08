"""Every worked solution of notebook 08 passes its checker; typical wrong answers are rejected."""


import pytest
from solutions import load_solutions

from lorakit.exercises import nb08
from lorakit.memory import lora_parameter_count, parameter_counts

solutions = load_solutions("nb08")


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_solution_passes(m, capsys):
    answer = getattr(solutions, f"solve_ex_8_{m}")()
    assert getattr(nb08, f"check_ex_8_{m}")(answer) is True
    assert "Correct" in capsys.readouterr().out


_linear13 = parameter_counts("13B")["linear"]
WRONG = {
    1: [None, "6.6", _linear13 * 4.5 / 8 / 1e9, _linear13 * 4 / 8 / 1e9, _linear13 * 4.127 / 1e9, 1.0],
    2: [None, 3, lambda g, W: g @ W.t(), lambda g, W: W @ g, lambda g, W: "x", lambda g, W: 1 / 0,
        lambda g, W: (g @ W) * 2],
    3: [None, 1.5e8, lora_parameter_count("7B", 64, ["q_proj", "v_proj"]), lora_parameter_count("7B", 8),
        lora_parameter_count("7B", 64, ["q_proj", "k_proj", "v_proj", "o_proj"]), True],
    4: [None, 0.5, 1.5, "0", 50.0],
}


@pytest.mark.parametrize("m", sorted(WRONG))
def test_wrong_answers_are_rejected_without_raising(m, capsys):
    for wrong in WRONG[m]:
        assert getattr(nb08, f"check_ex_8_{m}")(wrong) is False, wrong
    assert "Not yet" in capsys.readouterr().out
