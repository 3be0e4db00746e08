"""The compute dtype QLoRA picks (a T4 simulated on the CPU) and the exact merge into Ŵ."""

import copy

import pytest
import torch
import torch.nn as nn

from lorakit.lora import lora_layers
from lorakit.model import GPT, GPTConfig
from lorakit.qlora import (
    choose_compute_dtype,
    merge_into_16bit,
    merge_into_dequantized,
    prepare_qlora,
)


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(context=16, n_layer=2, n_head=2, d_model=64))


def fake_cuda(monkeypatch, native_bf16: bool):
    """A CUDA device that emulates bfloat16 (like a T4, sm_75) or computes it natively (Ampere+)."""

    def is_bf16_supported(including_emulation: bool = True):
        return native_bf16 or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)


def test_a_t4_gets_float32_although_torch_says_bf16_is_supported(monkeypatch):
    fake_cuda(monkeypatch, native_bf16=False)
    assert torch.cuda.is_bf16_supported() is True, (
        "the trap: by default emulation counts as support"
    )
    assert choose_compute_dtype("cuda") == torch.float32


def test_ampere_gets_bfloat16_and_the_cpu_float32(monkeypatch):
    fake_cuda(monkeypatch, native_bf16=True)
    assert choose_compute_dtype("cuda") == torch.bfloat16
    assert choose_compute_dtype("cpu") == torch.float32


def test_the_t4_choice_trains(monkeypatch):
    """What a T4 would run, on the CPU: the chosen dtype prepares, trains and moves B."""
    fake_cuda(monkeypatch, native_bf16=False)
    dtype = choose_compute_dtype("cuda")
    model = prepare_qlora(tiny_gpt(), "all-linear", r=4, alpha=8, compute_dtype=dtype)
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad), (
        "adapters train in float32, as PEFT's do"
    )
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = torch.randint(0, 256, (2, 16))
    _, loss = model(x, torch.roll(x, -1, 1))
    loss.backward()
    opt.step()
    assert all(layer.B.abs().sum() > 0 for layer in lora_layers(model).values())


def test_adapters_stay_float32_under_bfloat16_compute():
    model = prepare_qlora(tiny_gpt(), ["q_proj"], r=4, alpha=8, compute_dtype=torch.bfloat16)
    layer = next(iter(lora_layers(model).values()))
    assert layer.A.dtype == layer.B.dtype == torch.float32
    with pytest.raises(ValueError, match="adapter_dtype"):
        prepare_qlora(tiny_gpt(), ["q_proj"], adapter_dtype=torch.int8)


def _trained_qlora(seed=1):
    base = tiny_gpt()
    model = prepare_qlora(copy.deepcopy(base), "all-linear", r=4, alpha=8)
    torch.manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.B.normal_(0, 0.05)
    return base, model


def test_merge_into_dequantized_is_the_trained_model_and_16bit_is_not():
    base, model = _trained_qlora()
    x = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        trained = model(x)[0]
        into16 = merge_into_16bit(model, base)(x)[0]
        exact = copy.deepcopy(model)
        names = merge_into_dequantized(exact)
        merged = exact(x)[0]
    assert len(names) == 12 and not lora_layers(exact)
    assert all(type(m) is nn.Linear for n, m in exact.named_modules() if n.endswith("proj"))
    assert (merged - trained).abs().max().item() < 1e-4, "merging into Ŵ computes the trained model"
    assert (into16 - trained).abs().max().item() > 10 * (merged - trained).abs().max().item(), (
        "merging into the original 16-bit weights is a different model"
    )


def test_merge_into_dequantized_in_bfloat16_rounds_once_more():
    _, model = _trained_qlora()
    x = torch.randint(0, 256, (2, 16))
    m32, m16 = copy.deepcopy(model), copy.deepcopy(model)
    merge_into_dequantized(m32)
    merge_into_dequantized(m16, dtype=torch.bfloat16)
    assert m16.blocks[0].attn.q_proj.weight.dtype == torch.bfloat16
    with torch.no_grad():
        gap = (m16.to(torch.float32)(x)[0] - m32(x)[0]).abs().max().item()
    assert 0 < gap < 0.5


def test_merge_into_dequantized_refuses_bad_input_before_changing_anything():
    _, model = _trained_qlora()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="dtype must be one of"):
        merge_into_dequantized(model, dtype=torch.int8)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="no LoRA layers on a 4-bit base"):
        merge_into_dequantized(tiny_gpt())
