"""Every worked solution of notebook 08 passes its checker; typical wrong answers are rejected."""

import numpy as np
import pytest
import torch
import torch.nn as nn
from solutions import load_solutions

from lorakit.exercises import nb08
from lorakit.memory import parameter_counts
from lorakit.qlora import Linear4bit

solutions = load_solutions("nb08")


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_solution_passes(m, capsys):
    answer = getattr(solutions, f"solve_ex_8_{m}")()
    assert getattr(nb08, f"check_ex_8_{m}")(answer) is True
    assert "Correct" in capsys.readouterr().out


def test_numbers_of_any_type_and_natural_sequences_are_accepted(capsys):
    gb = solutions.solve_ex_8_1()
    for answer in (gb, np.float32(gb), torch.tensor(gb), round(gb, 2)):
        assert nb08.check_ex_8_1(answer) is True, type(answer)
    proj, noise = solutions.solve_ex_8_4()
    for answer in (
        (proj, noise),
        [proj, noise],
        np.array([proj, noise]),
        torch.tensor([proj, noise]),
        (round(proj, 3), round(noise, 3)),
    ):
        assert nb08.check_ex_8_4(answer) is True, type(answer)


def _wrong_backwards():
    def no_adapter_in_grad_x(x, gy, W, A, B, s):
        h = x @ A
        return gy @ W, x.t() @ (s * gy @ B.t()), s * h.t() @ gy

    def no_scaling(x, gy, W, A, B, s):
        h = x @ A
        return gy @ W + (gy @ B.t()) @ A.t() * s, x.t() @ (gy @ B.t()), h.t() @ gy

    def transposed(x, gy, W, A, B, s):
        return gy @ W.t(), A, B

    return [None, 3, no_adapter_in_grad_x, no_scaling, transposed, lambda *a: 1 / 0, lambda *a: "x"]


def _wrong_merges():
    @torch.no_grad()
    def requantized(layer):
        W = layer.base.dequantized_weight(torch.float32) + layer.delta().t()
        lin = nn.Linear(layer.in_features, layer.out_features)
        lin.weight.copy_(W)
        lin.bias.copy_(layer.base.bias)
        return Linear4bit.from_linear(lin)

    @torch.no_grad()
    def in_place(layer):  # right outputs, but it zeroes the trained adapter
        merged = solutions.solve_ex_8_3()(layer)
        layer.B.zero_()
        return merged

    @torch.no_grad()
    def no_bias(layer):
        lin = nn.Linear(layer.in_features, layer.out_features, bias=False)
        lin.weight.copy_(layer.base.dequantized_weight(torch.float32) + layer.delta().t())
        return lin

    @torch.no_grad()
    def unscaled(layer):
        lin = solutions.solve_ex_8_3()(layer)
        lin.weight.copy_(layer.base.dequantized_weight(torch.float32) + (layer.A @ layer.B).t())
        return lin

    @torch.no_grad()
    def untransposed(layer):
        lin = nn.Linear(layer.out_features, layer.in_features)
        lin.weight.copy_(layer.delta())
        return lin

    return [
        None,
        3,
        requantized,
        in_place,
        no_bias,
        unscaled,
        untransposed,
        lambda layer: layer.base,
    ]


def _wrong_requantize():
    right = nb08._requantize_stats()
    return [
        None,
        0.84,
        "0.84, 0.80",
        right[::-1],
        nb08._requantize_stats(dw_first=True),
        nb08._requantize_stats(from_w=True),
        (1.0, 0.0),
        (True, False),
    ]


_linear13 = parameter_counts("13B")["linear"]
WRONG = {
    1: [
        None,
        "6.6",
        True,
        _linear13 * 4.5 / 8 / 1e9,
        _linear13 * 4 / 8 / 1e9,
        _linear13 * 4.127 / 1e9,
        1.0,
        _linear13 * 4.127 / 8 / 2**30,
    ],
    2: _wrong_backwards(),
    3: _wrong_merges(),
    4: _wrong_requantize(),
}


@pytest.mark.parametrize("m", sorted(WRONG))
def test_wrong_answers_are_rejected_without_raising(m, capsys):
    for wrong in WRONG[m]:
        assert getattr(nb08, f"check_ex_8_{m}")(wrong) is False, wrong
    assert "Not yet" in capsys.readouterr().out


def test_the_wrong_draw_order_is_far_outside_the_tolerance():
    right, swapped = nb08._requantize_stats(), nb08._requantize_stats(dw_first=True)
    assert max(abs(a - b) for a, b in zip(right, swapped)) > 2e-3
