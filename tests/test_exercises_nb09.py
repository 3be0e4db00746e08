"""Every notebook-09 solution passes its checker; typical wrong answers are rejected."""

import copy

import pytest
import torch
from solutions import load_solutions

from lorakit import sft
from lorakit.exercises import nb09
from lorakit.lora import lora_layers
from lorakit.model import GPT, GPTConfig
from lorakit.qlora import prepare_qlora

solutions = load_solutions("nb09")


@pytest.fixture(scope="module")
def examples():
    return sft.byte_examples(sft.docstring_pairs("train", 60)[:200], 96)


@pytest.fixture
def layer():
    torch.manual_seed(0)
    model = prepare_qlora(
        GPT(GPTConfig(context=16, n_layer=1, n_head=2, d_model=64)), "all-linear", r=4, alpha=8
    )
    layer = lora_layers(model)["blocks.0.mlp.up_proj"]  # 64 → 256: not square, so a transpose shows
    with torch.no_grad():
        layer.B.normal_(0, 0.1)
    return layer


def test_9_1(examples, capsys):
    right = solutions.solve_ex_9_1(examples)
    assert nb09.check_ex_9_1(right, examples) and nb09.check_ex_9_1(round(right, 2), examples)
    assert nb09.check_ex_9_1(torch.tensor(right), examples), "any numeric type"
    for wrong in (None, True, "a lot", 1 - right, 100 * right, right + 0.05):
        assert not nb09.check_ex_9_1(wrong, examples), wrong
    assert "PROMPT" in capsys.readouterr().out


def test_9_2(capsys):
    assert nb09.check_ex_9_2(solutions.make_labels)
    assert nb09.check_ex_9_2(lambda p, r: torch.tensor([-100] * len(p) + r)), "a tensor is fine"
    assert not nb09.check_ex_9_2(lambda p, r: p + r)
    assert not nb09.check_ex_9_2(lambda p, r: [-100] * (len(p) + len(r)))
    assert not nb09.check_ex_9_2(lambda p, r: [-100] * (len(p) - 1) + r)  # off by one
    assert not nb09.check_ex_9_2(lambda p, r: 1 / 0)
    assert not nb09.check_ex_9_2("labels")
    assert "nothing is masked" in capsys.readouterr().out


def test_9_3(layer, capsys):
    assert nb09.check_ex_9_3(solutions.solve_ex_9_3(layer))
    W_hat = layer.base.dequantized_weight(torch.float32)
    update = layer.scaling * (layer.A @ layer.B)
    assert not nb09.check_ex_9_3((layer, W_hat)), "the update is missing"
    assert not nb09.check_ex_9_3((layer, (W_hat.t() + update))), "in×out layout"
    assert not nb09.check_ex_9_3((layer, W_hat + (layer.A @ layer.B).t())), "the scaling is missing"
    assert not nb09.check_ex_9_3((copy.deepcopy(layer), None))
    assert not nb09.check_ex_9_3(None)
    out = capsys.readouterr().out
    assert "Ŵ alone" in out and "out×in" in out


@pytest.mark.parametrize("fast", [True, False])
def test_9_1_right_answer_accepted_in_both_modes(fast, monkeypatch, capsys):
    """Issue 27: test mode builds summaries of ≤ 28 bytes, learner size ≤ 60; the checker left
    without examples must rebuild the ones of the mode the notebook ran in."""
    from lorakit.train import base_settings

    monkeypatch.setenv("LORAKIT_FAST", "1" if fast else "")
    assert nb09.notebook_examples.__doc__ and base_settings()["config"].context == (
        64 if fast else 128
    )
    mode = nb09.notebook_examples()
    right = solutions.solve_ex_9_1(mode)
    other = solutions.solve_ex_9_1(nb09.notebook_examples(not fast))
    assert abs(right - other) > 0.01, (
        "the modes differ by more than the ±0.01 tolerance (0.379 vs 0.397)"
    )
    assert nb09.check_ex_9_1(right) and nb09.check_ex_9_1(right, mode)
    assert not nb09.check_ex_9_1(other)
    for wrong in (1 - right, 100 * right):
        assert not nb09.check_ex_9_1(wrong)
