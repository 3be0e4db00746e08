"""lorakit.memory: the QLoRA paper's numbers from the estimates, and measured peaks."""

import pytest
import torch
import torch.nn as nn

from lorakit.memory import (
    MODEL_SHAPES,
    estimate_memory,
    lora_parameter_count,
    parameter_counts,
    peak_memory,
    quantized_bits_per_parameter,
    track_peak,
)


def test_shapes_give_the_published_parameter_counts():
    # LLaMA paper: 6.7B, 13.0B, 32.5B, 65.2B; Llama 2: 69B-70B
    expected = {"7B": 6.74, "13B": 13.0, "33B": 32.5, "65B": 65.2, "70B": 69.0}
    for name, billions in expected.items():
        got = parameter_counts(name)["total"] / 1e9
        assert got == pytest.approx(billions, rel=0.01), f"{name}: {got:.2f} B parameters"


def test_bits_per_parameter_of_double_quantization():
    assert quantized_bits_per_parameter(64, True) == pytest.approx(4.127, abs=5e-4)
    assert quantized_bits_per_parameter(64, False) == pytest.approx(4.5)


def test_paper_65b_full_finetuning_needs_more_than_780_gb():
    full = estimate_memory("65B", "full")
    assert 780 < full["total"] < 800, full
    assert full["weights"] + full["gradients"] + full["optimizer"] == pytest.approx(
        12 * parameter_counts("65B")["total"] / 1e9)


def test_paper_65b_qlora_fits_in_48_gb():
    q = estimate_memory("65B", "qlora", r=64, batch_size=1, seq_len=512, gradient_checkpointing=True)
    assert q["total"] < 48, q
    assert set(q) == {"weights", "lora", "gradients", "optimizer", "activations", "total"}
    assert q["total"] == pytest.approx(sum(v for k, v in q.items() if k != "total"))
    # weights dominate; LoRA r=64 on all linear layers is about 800 M parameters
    assert q["weights"] > 30
    assert lora_parameter_count("65B", 64) == pytest.approx(0.8e9, rel=0.01)


def test_ordering_of_methods_and_checkpointing():
    for name in MODEL_SHAPES:
        full, lora, qlora = (estimate_memory(name, m)["total"] for m in ("full", "lora", "qlora"))
        assert qlora < lora < full, name
    with_ckpt = estimate_memory("7B", "qlora", gradient_checkpointing=True)["activations"]
    without = estimate_memory("7B", "qlora", gradient_checkpointing=False)["activations"]
    assert without > 5 * with_ckpt


def test_estimate_accepts_a_shape_dict():
    shape = dict(MODEL_SHAPES["7B"])
    assert estimate_memory(shape, "lora") == estimate_memory("7B", "lora")


@pytest.mark.parametrize(
    "kwargs, err",
    [
        (dict(model="8B", method="full"), ValueError),
        (dict(model="7B", method="adam"), ValueError),
        (dict(model="7B", method="lora", r=0), ValueError),
        (dict(model="7B", method="lora", targets=["qkv"]), ValueError),
        (dict(model="7B", method="lora", batch_size=0), ValueError),
        (dict(model={"hidden_size": 8}, method="lora"), ValueError),
        (dict(model=7, method="lora"), TypeError),
    ],
)
def test_bad_inputs(kwargs, err):
    with pytest.raises(err):
        estimate_memory(**kwargs)


def test_cpu_peak_counts_parameters_gradients_and_adam_states():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.Linear(64, 8))
    model[0].weight.requires_grad_(False)
    model[0].bias.requires_grad_(False)
    n_all = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def step():
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
        model(torch.randn(4, 32)).square().mean().backward()
        opt.step()

    measured = peak_memory(step, model=model, device="cpu")
    # params (all) + grads (trainable) + exp_avg, exp_avg_sq (trainable), float32; + step counters
    expected = 4 * (n_all + n_train + 2 * n_train)
    assert expected <= measured["peak_bytes"] <= expected + 64, measured
    assert "activations not counted" in measured["method"]
    assert measured["result"] is None


def test_track_peak_without_optimizer_counts_the_model():
    model = nn.Linear(10, 10, bias=False)
    with track_peak(device="cpu", model=model) as m:
        model(torch.randn(2, 10))
    assert m["peak_bytes"] == 400


def test_peak_memory_rejects_non_callables():
    with pytest.raises(TypeError):
        peak_memory(3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the allocator's peak")
def test_cuda_peak_sees_activations():
    def make():
        return torch.empty(10_000_000, device="cuda")

    m = peak_memory(make, device="cuda")
    assert m["peak_bytes"] >= 40_000_000
