"""Every worked solution of notebook 04 passes its checker; typical wrong answers are rejected.

Exercises 4.1 and 4.2 are experiments run with the notebook's ``finetune``; here a real, tiny
version of it (a 1-layer GPT, a few steps on random bytes) and a synthetic one stand in.
"""

import copy
import math

import pytest
import torch
from solutions import load_solutions

from lorakit.exercises import nb04
from lorakit.lora import inject_lora
from lorakit.model import GPT, GPTConfig
from lorakit.train import evaluate, train

solutions = load_solutions("nb04")


def synthetic_finetune(method="lora", targets="all-linear", r=4, lr=1e-2, **kw):
    """Loss a parabola in log10(lr) around 1e-2; gain/forget by target set."""
    loss = 3.0 + 0.2 * (math.log10(lr) + 2) ** 2
    forget = {"all-linear": 0.05, "['up_proj', 'down_proj']": 0.03}.get(str(targets), 0.02)
    gain = {"all-linear": 0.3, "['up_proj', 'down_proj']": 0.25}.get(str(targets), 0.1)
    return dict(docs=loss, gain=gain, forget=forget)


@pytest.fixture(scope="module")
def tiny_finetune():
    torch.manual_seed(0)
    cfg = GPTConfig(context=16, n_layer=1, n_head=2, d_model=64)
    base = GPT(cfg).eval()
    text = torch.tensor(list(b"def f(x):\n    return x + 1\n" * 200), dtype=torch.uint8)

    def finetune(method="lora", targets="all-linear", r=4, lr=1e-2, **kw):
        model = copy.deepcopy(base)
        inject_lora(model, targets, r=r, alpha=16)
        train(model, text, steps=3, batch_size=4, lr=lr, progress=False)
        return dict(docs=evaluate(model, text, 4, 2))

    return finetune


def test_solution_4_1_synthetic(capsys):
    assert nb04.check_ex_4_1(solutions.solve_ex_4_1(synthetic_finetune)) is True
    assert "Correct" in capsys.readouterr().out


def test_solution_4_1_real_tiny_runs(tiny_finetune, capsys):
    best, sweep = solutions.solve_ex_4_1(tiny_finetune, lrs=(1e-3, 1e-2, 1e-1, 1.0, 10.0))
    assert nb04.check_ex_4_1((best, sweep)) is True
    assert len(sweep) >= 3


def test_solution_4_2(capsys):
    assert nb04.check_ex_4_2(solutions.solve_ex_4_2(synthetic_finetune)) is True
    assert "Correct" in capsys.readouterr().out


@pytest.mark.parametrize("m", [3, 4])
def test_solution_passes(m, capsys):
    assert getattr(nb04, f"check_ex_4_{m}")(getattr(solutions, f"solve_ex_4_{m}")()) is True
    assert "Correct" in capsys.readouterr().out


def test_checkers_accept_natural_types(capsys):
    sweep = {torch.tensor(1e-3): 3.2, 1e-2: torch.tensor(3.0), 3e-2: 3.1}
    assert nb04.check_ex_4_1((torch.tensor(1e-2), sweep)) is True
    assert nb04.check_ex_4_2(("b", {"a": [0.1, 0.05], "b": (0.2, 0.04), "c": (0.3, 0.3)})) is True
    assert nb04.check_ex_4_4([torch.tensor(128), 16.0]) is True


GOOD_SWEEP = {1e-3: 3.2, 3e-3: 3.1, 1e-2: 3.0, 3e-2: 3.05}
TABLE = {"q": (0.10, 0.02), "all linear": (0.30, 0.03), "MLP": (0.25, 0.05)}
WRONG = {
    1: [
        None,
        1e-2,
        (1e-2, {1e-3: 3.1, 1e-2: 3.0}),  # too few points
        (2e-3, {1e-3: 3.1, 2e-3: 3.0, 4e-3: 3.05}),  # spans < 10x
        (3e-3, GOOD_SWEEP),  # not the argmin
        (1e-3, {1e-3: 3.0, 1e-2: 3.1, 1e-1: 3.2}),  # best at the edge
        (1e-2, {1e-3: 3.1, 1e-2: float("nan"), 1e-1: 3.2}),
        (True, GOOD_SWEEP),
        "0.01",
    ],
    2: [
        None,
        ("q", TABLE),  # least absolute forgetting, not per gain
        ("MLP", TABLE),
        ("q", {"q": (0.1, 0.02), "v": (0.2, 0.01)}),
        ("x", TABLE),
        ("q", {"q": (0.0, 0.01), "v": (0.2, 0.01), "w": (0.1, 0.2)}),
    ],
    3: [
        None,
        lambda x, g, A, s, lr: -lr * x.T @ g,  # full fine-tuning's step
        lambda x, g, A, s, lr: -lr * s * A @ (x @ A).T @ g,  # one s short
        lambda x, g, A, s, lr: lr * s * s * A @ (x @ A).T @ g,  # sign
        lambda x, g, A, s, lr: -lr * s * s * (x @ A).T @ g,  # B's step, not ΔW (r×n)
        lambda x, g, A, s, lr: 1 / 0,
        lambda x, g, A, s, lr: "no",
    ],
    4: [None, (2, 2), (16, 128), (128, 8), "128, 16", 128],
}


@pytest.mark.parametrize("m, wrong", [(m, w) for m, ws in WRONG.items() for w in ws])
def test_wrong_answers_are_rejected(m, wrong, capsys):
    assert getattr(nb04, f"check_ex_4_{m}")(wrong) is False
    assert "Not yet" in capsys.readouterr().out
