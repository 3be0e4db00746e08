"""Every checker accepts its worked solution in both modes (issue 27).

A checker that rebuilds what the notebook computed must rebuild it with the settings of the mode
the notebook ran in (test mode or learner size). The arithmetic and code checkers here are run
once with LORAKIT_FAST set and once without; those that depend on a run (4.1, 4.2, 5.3, 9.1,
9.3, 10.4) have their own both-mode tests in tests/test_exercises_nbNN.py.
"""

import importlib
import inspect

import pytest
from solutions import load_solutions

RUN_DEPENDENT = {"4_1", "4_2", "5_3", "9_1", "9_3", "10_4"}


def cases():
    out = []
    for nb in range(11):
        solutions = load_solutions(f"nb{nb:02d}")
        for name, solve in vars(solutions).items():
            if not name.startswith("solve_ex_") or name[len("solve_ex_") :] in RUN_DEPENDENT:
                continue
            if any(p.default is p.empty for p in inspect.signature(solve).parameters.values()):
                continue
            out.append((nb, name[len("solve_ex_") :]))
    return out


@pytest.mark.parametrize("fast", ["1", ""], ids=["test-mode", "learner-size"])
@pytest.mark.parametrize("nb, ex", cases())
def test_solution_accepted_in_both_modes(nb, ex, fast, monkeypatch, capsys):
    monkeypatch.setenv("LORAKIT_FAST", fast)
    solutions = load_solutions(f"nb{nb:02d}")
    checkers = importlib.import_module(f"lorakit.exercises.nb{nb:02d}")
    assert getattr(checkers, f"check_ex_{ex}")(getattr(solutions, f"solve_ex_{ex}")()) is True
    assert "Correct" in capsys.readouterr().out
