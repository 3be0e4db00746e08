"""DoRA, PiSSA and LoRA+ (lorakit.variants) against PEFT's own implementations."""

import copy

import pytest
import torch
import torch.nn as nn

from lorakit.lora import LoRAConfig, LoRALinear, inject_lora, lora_layers, merge_lora, unmerge_lora
from lorakit.model import GPT
from lorakit.quiet import quiet_import
from lorakit.train import train
from lorakit.variants import (
    DoRALinear,
    inject_dora,
    inject_pissa,
    loraplus_optimizer,
    loraplus_param_groups,
    pissa_init,
)

peft = quiet_import("peft")
needs_peft = pytest.mark.skipif(peft is None, reason="PEFT is not installed")
TARGETS = ["q_proj", "v_proj", "up_proj"]


@pytest.fixture
def gpt(tiny_cfg):
    torch.manual_seed(0)
    return GPT(tiny_cfg).eval()


def _tokens(cfg, n=3):
    return torch.randint(
        0, cfg.vocab_size, (n, cfg.context), generator=torch.Generator().manual_seed(5)
    )


def _peft_layer(peft_model, name):
    return peft_model.base_model.model.get_submodule(name)


# ---------------------------------------------------------------- DoRA


def test_dora_starts_as_the_base_and_its_magnitude_is_the_column_norm(gpt, tiny_cfg):
    model = copy.deepcopy(gpt)
    inject_dora(model, TARGETS, r=4, alpha=8)
    x = _tokens(tiny_cfg)
    assert torch.allclose(model(x)[0], gpt(x)[0], atol=1e-6)
    layer = model.blocks[0].attn.q_proj
    assert isinstance(layer, DoRALinear)
    assert torch.allclose(
        layer.magnitude, layer.base.weight.norm(dim=1)
    )  # W0ᵀ's rows = W0's columns
    trainable = {n.rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"A", "B", "magnitude"}


@needs_peft
def test_dora_equals_peft_use_dora(gpt, tiny_cfg):
    ours = copy.deepcopy(gpt)
    inject_dora(ours, TARGETS, r=4, alpha=8)
    theirs = peft.get_peft_model(
        copy.deepcopy(gpt),
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, use_dora=True),
    )
    for name, layer in lora_layers(ours).items():  # PEFT's magnitude at init is ours, untouched
        assert torch.allclose(
            _peft_layer(theirs, name).lora_magnitude_vector["default"].weight, layer.magnitude
        )
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, layer in lora_layers(ours).items():
            layer.B.copy_(0.05 * torch.randn(layer.B.shape, generator=g))
            layer.magnitude.mul_(1 + 0.1 * torch.randn(layer.magnitude.shape, generator=g))
            target = _peft_layer(theirs, name)
            target.lora_A["default"].weight.copy_(layer.A.T)
            target.lora_B["default"].weight.copy_(layer.B.T)
            target.lora_magnitude_vector["default"].weight.copy_(layer.magnitude)
    x = _tokens(tiny_cfg)
    y_ours, loss_ours = ours(x, x)
    y_theirs = theirs(x)[0]
    assert (y_ours - y_theirs).abs().max() < 1e-5
    # the gradients agree too (both treat the column norm as a constant)
    loss_theirs = nn.functional.cross_entropy(
        y_theirs.reshape(-1, y_theirs.shape[-1]), x.reshape(-1)
    )
    loss_ours.backward()
    loss_theirs.backward()
    for name, layer in lora_layers(ours).items():
        target = _peft_layer(theirs, name)
        assert torch.allclose(layer.A.grad, target.lora_A["default"].weight.grad.T, atol=1e-6)
        assert torch.allclose(layer.B.grad, target.lora_B["default"].weight.grad.T, atol=1e-6)
        assert torch.allclose(
            layer.magnitude.grad, target.lora_magnitude_vector["default"].weight.grad, atol=1e-6
        )


def test_dora_merge_and_unmerge(gpt, tiny_cfg):
    model = copy.deepcopy(gpt)
    inject_dora(model, TARGETS, r=4, alpha=8)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.B.normal_(std=0.05)
            layer.magnitude.mul_(1.1)
    x = _tokens(tiny_cfg)
    W0 = model.blocks[0].attn.q_proj.base.weight.clone()
    y = model(x)[0]
    merge_lora(model)
    assert torch.allclose(model(x)[0], y, atol=1e-5)
    unmerge_lora(model)
    assert torch.allclose(model.blocks[0].attn.q_proj.base.weight, W0, atol=1e-6)
    assert torch.allclose(model(x)[0], y, atol=1e-5)


def test_dora_refuses_a_base_it_cannot_read():
    class NotLinear(nn.Module):
        in_features, out_features = 4, 4

        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="nn.Linear"):
        DoRALinear(NotLinear(), r=2, alpha=2)


# ---------------------------------------------------------------- PiSSA


@needs_peft
def test_pissa_equals_peft_init(gpt, tiny_cfg):
    ours = copy.deepcopy(gpt)
    inject_pissa(ours, TARGETS, r=4, alpha=8)
    theirs = peft.get_peft_model(
        copy.deepcopy(gpt),
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights="pissa"),
    )
    for name, layer in lora_layers(ours).items():
        target = _peft_layer(theirs, name)
        assert torch.allclose(layer.A, target.lora_A["default"].weight.T, atol=1e-5)
        assert torch.allclose(layer.B, target.lora_B["default"].weight.T, atol=1e-5)
        assert torch.allclose(layer.base.weight, target.base_layer.weight, atol=1e-5)
    x = _tokens(tiny_cfg)
    assert (ours(x)[0] - theirs(x)[0]).abs().max() < 1e-5
    assert (ours(x)[0] - gpt(x)[0]).abs().max() < 1e-4, "PiSSA leaves the model unchanged at init"


def test_pissa_moves_the_top_singular_part_into_A_B():
    torch.manual_seed(0)
    linear = nn.Linear(12, 9, bias=False)
    W0 = linear.weight.detach().T.clone()  # in×out
    layer = pissa_init(LoRALinear(linear, LoRAConfig(r=3, alpha=6)))
    U, S, Vh = torch.linalg.svd(W0)
    best = U[:, :3] @ torch.diag(S[:3]) @ Vh[:3]
    assert torch.allclose(layer.delta(), best, atol=1e-5), "s·A B is the best rank-r part of W0"
    assert torch.allclose(layer.base.weight.T, W0 - best, atol=1e-5), "the base keeps the residual"
    with pytest.raises(TypeError):
        pissa_init(linear)


# ---------------------------------------------------------------- LoRA+


@needs_peft
def test_loraplus_groups_and_steps_equal_peft(gpt, tiny_cfg):
    quiet_import("peft.optimizers")
    from peft.optimizers import create_loraplus_optimizer

    ours = copy.deepcopy(gpt)
    inject_lora(ours, TARGETS, r=4, alpha=8)
    theirs = peft.get_peft_model(
        copy.deepcopy(gpt), peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS)
    )
    with torch.no_grad():
        for name, layer in lora_layers(ours).items():
            _peft_layer(theirs, name).lora_A["default"].weight.copy_(layer.A.T)
    opt_ours = loraplus_optimizer(ours, lr=1e-3, ratio=16)
    opt_theirs = create_loraplus_optimizer(theirs, torch.optim.AdamW, lr=1e-3, loraplus_lr_ratio=16)
    lr_ours = {
        n: g["lr"]
        for g in opt_ours.param_groups
        for p in g["params"]
        for n, q in ours.named_parameters()
        if q is p
    }
    lr_theirs = {
        n: g["lr"]
        for g in opt_theirs.param_groups
        for p in g["params"]
        for n, q in theirs.named_parameters()
        if q is p
    }
    as_peft = {n: f"base_model.model.{n[:-2]}.lora_{n[-1]}.default.weight" for n in lr_ours}
    assert {as_peft[n]: lr for n, lr in lr_ours.items()} == lr_theirs
    assert {lr for lr in lr_ours.values()} == {1e-3, 16e-3}
    x = _tokens(tiny_cfg)
    for _ in range(3):
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            logits = model(x)[0]
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert (ours(x)[0] - theirs(x)[0]).abs().max() < 1e-5


def test_loraplus_puts_dora_magnitude_with_B(gpt):
    model = copy.deepcopy(gpt)
    inject_dora(model, ["q_proj"], r=2, alpha=2)
    groups = loraplus_param_groups(model, lr=1e-3, ratio=4)
    fast = {id(p) for p in groups[1]["params"]}
    layer = model.blocks[0].attn.q_proj
    assert id(layer.B) in fast and id(layer.magnitude) in fast and id(layer.A) not in fast


def test_loraplus_trains_through_lorakit_train(gpt, tiny_cfg):
    model = copy.deepcopy(gpt)
    inject_lora(model, ["q_proj"], r=2, alpha=2)
    data = torch.randint(
        0, 256, (2000,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    opt = loraplus_optimizer(model, lr=1e-3, ratio=8)
    train(model, data, steps=3, batch_size=2, optimizer=opt, warmup=2, progress=False)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 8e-3], (
        "after warm-up each group has its own lr"
    )
    assert model.blocks[0].attn.q_proj.B.abs().max() > 0


@pytest.mark.parametrize(
    "kw, err",
    [
        (dict(lr=0), ValueError),
        (dict(lr=True), TypeError),
        (dict(lr=1e-3, ratio=float("inf")), ValueError),
        (dict(lr=1e-3, ratio="16"), TypeError),
    ],
)
def test_loraplus_bad_inputs(gpt, kw, err):
    model = copy.deepcopy(gpt)
    inject_lora(model, ["q_proj"], r=2, alpha=2)
    with pytest.raises(err):
        loraplus_param_groups(model, **kw)


def test_loraplus_needs_an_adapter(gpt):
    with pytest.raises(ValueError, match="inject"):
        loraplus_param_groups(gpt, lr=1e-3)


def test_pissa_refuses_a_merged_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8, bias=False))
    inject_lora(model, ["0"], r=2, alpha=2)
    merge_lora(model)
    with pytest.raises(ValueError, match="merged"):
        pissa_init(model[0])
