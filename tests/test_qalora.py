"""QA-LoRA (lorakit.qalora): the group-wise 4-bit base, the pooled adapter, and the merge that keeps
the model 4-bit and equal to the trained one; the pooled forward against PEFT's QALoraLinearVariant.

PEFT 0.21 dispatches ``LoraConfig(use_qalora=True)`` only for GPTQ layers (``gptqmodel``, a CUDA
package, not installed); a plain ``nn.Linear`` ignores the flag. Its ``QALoraLinearVariant`` is a
set of static functions, though, so they run on the CPU on a PEFT ``lora.Linear`` directly.
"""

import copy

import pytest
import torch
import torch.nn as nn
from tiny import tiny_gpt

from lorakit.lora import LoRAConfig
from lorakit.qalora import (
    GroupLinear4bit,
    QALoRALinear,
    dequantize_groupwise,
    merge_qalora,
    pool,
    prepare_qalora,
    qalora_layers,
    quantize_groupwise,
)
from lorakit.quiet import quiet_import

peft = quiet_import("peft")


def test_groupwise_quantization():
    W = torch.randn(24, 64, generator=torch.Generator().manual_seed(0))
    codes, scale, zero = quantize_groupwise(W, 16)
    assert (
        codes.shape == (24, 64) and scale.shape == zero.shape == (24, 4) and int(codes.max()) <= 15
    )
    W_hat = dequantize_groupwise(codes, scale, zero)
    err = (W - W_hat).abs().view(24, 4, 16)
    assert torch.all(err <= scale.unsqueeze(2) / 2 + 1e-6), "round to nearest: at most half a step"
    groups = W.view(24, 4, 16)
    assert torch.allclose(W_hat.view(24, 4, 16).amin(2), groups.amin(2)), (
        "the minimum is a level (code 0)"
    )


def _trained_layer(seed=1, group_size=16):
    g = torch.Generator().manual_seed(seed)
    linear = nn.Linear(64, 48)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(48, 64, generator=g) * 0.05)
    layer = prepare_qalora(
        nn.Sequential(linear), "all-linear", r=2, alpha=4, group_size=group_size
    )[0]
    with torch.no_grad():
        layer.B.copy_(torch.randn(layer.B.shape, generator=g) * 0.1)  # as if trained
    return layer


def test_pooled_forward_is_a_group_constant_update():
    layer = _trained_layer()
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(2))
    dense = x @ layer.base.dequantized_weight().t() + layer.base.bias + x @ layer.delta()
    assert torch.allclose(layer(x), dense, atol=1e-5)
    rows = layer.delta().view(4, 16, 48)
    assert torch.equal(rows, rows[:, :1].expand_as(rows)), (
        "ΔW is constant within each quantization group"
    )


def test_merge_stays_4bit_and_exact():
    layer = _trained_layer()
    model = nn.Sequential(layer)
    x = torch.randn(7, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        trained = model(x)
    packed, scale, nbytes = layer.base.packed.clone(), layer.base.scale.clone(), layer.base.nbytes
    assert merge_qalora(model) == ["0"]
    merged = model[0]
    assert isinstance(merged, GroupLinear4bit) and not qalora_layers(model)
    assert torch.equal(merged.packed, packed) and torch.equal(merged.scale, scale), (
        "same codes, same scales"
    )
    assert merged.nbytes == nbytes and merged.bits_per_parameter() == 4 + 64 / 16
    with torch.no_grad():
        assert (model(x) - trained).abs().max().item() < 1e-5, (
            "the merged 4-bit model is the trained model"
        )


@pytest.mark.skipif(peft is None, reason="peft is not installed")
def test_equal_to_peft_qalora_variant():
    from peft.tuners.lora.layer import Linear as PeftLinear
    from peft.tuners.lora.variants import QALoraLinearVariant

    layer = _trained_layer(group_size=16)
    n_groups = 64 // 16
    base = nn.Linear(64, 48)
    with torch.no_grad():
        base.weight.copy_(layer.base.dequantized_weight())
        base.bias.copy_(layer.base.bias)
    config = peft.LoraConfig(r=2, lora_alpha=4, use_qalora=True, qalora_group_size=16)
    theirs = PeftLinear(base, "default", config=config, r=2, lora_alpha=4)
    QALoraLinearVariant.init(theirs, "default", config)
    with torch.no_grad():
        theirs.lora_A["default"].weight.copy_(
            layer.A.t() / n_groups
        )  # PEFT feeds pool(x)·G to lora_A
        theirs.lora_B["default"].weight.copy_(layer.B.t())
    x = torch.randn(3, 5, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        y = QALoraLinearVariant.forward(theirs, active_adapter="default", x=x, result=base(x))
        assert torch.allclose(y, layer(x), atol=1e-5)
    assert theirs.lora_A["default"].weight.shape == (2, n_groups), (
        "PEFT's lora_A is r × (in / group_size)"
    )


def test_prepare_on_the_course_gpt():
    model = tiny_gpt(0, d_model=64)
    x = torch.randint(0, 256, (2, 16))
    prepared = prepare_qalora(copy.deepcopy(model), "all-linear", r=2, alpha=4, group_size=32)
    assert all(n.endswith((".A", ".B")) for n, p in prepared.named_parameters() if p.requires_grad)
    assert isinstance(prepared.lm_head, nn.Linear), "the head stays as it is"
    logits = prepared(x)[0]
    logits.sum().backward()
    assert all(layer.A.grad is not None for layer in qalora_layers(prepared).values())
    assert pool(torch.arange(8.0), 4).tolist() == [1.5, 5.5]


def test_bad_input():
    with pytest.raises(ValueError, match="group_size must divide"):
        quantize_groupwise(torch.randn(4, 30), 16)
    with pytest.raises(ValueError, match="group_size must divide"):
        prepare_qalora(nn.Sequential(nn.Linear(30, 8)), "all-linear", group_size=16)
    with pytest.raises(ValueError, match="r must be"):
        QALoRALinear(GroupLinear4bit.from_linear(nn.Linear(32, 8), 16), LoRAConfig(r=3))
    with pytest.raises(ValueError, match="no QA-LoRA"):
        merge_qalora(nn.Sequential(nn.Linear(4, 4)))
