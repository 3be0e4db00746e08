"""The adapter doctor: every diagnosis on a planted fault, on the course GPT, a tiny Hugging Face
Llama built from a config, and PEFT-wrapped models."""

import copy

import pytest
import torch
from tiny import tiny_llama

from lorakit import doctor
from lorakit.adapters import load_adapter, save_adapter
from lorakit.lora import inject_lora, lora_layers, merge_lora, remove_lora
from lorakit.model import GPT
from lorakit.quiet import quiet_import
from lorakit.train import train
from lorakit.variants import inject_dora, inject_pissa

# GQA, gate/up/down MLP and tied embeddings: the parts of a real Llama the doctor must understand
GQA_TIED = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_key_value_heads=2,
    tie_word_embeddings=True,
)

peft = quiet_import("peft")
transformers = quiet_import("transformers")
needs_peft = pytest.mark.skipif(peft is None, reason="PEFT is not installed")
needs_hf = pytest.mark.skipif(transformers is None, reason="transformers is not installed")


@pytest.fixture
def gpt(tiny_cfg):
    torch.manual_seed(0)
    return GPT(tiny_cfg).eval()


@pytest.fixture
def data():
    return torch.randint(
        0, 256, (4000,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


def _adapted(model, targets=("q_proj", "v_proj"), **kw):
    model = copy.deepcopy(model)
    inject_lora(model, list(targets), r=kw.pop("r", 4), alpha=kw.pop("alpha", 8), **kw)
    return model


def _nudge_B(model, std=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.B.copy_(std * torch.randn(layer.B.shape, generator=g))
    return model


def _errors(report):
    return {f.code for f in report.findings if f.level == "error"}


# ---------------------------------------------------------------- a healthy adapter


def test_a_healthy_adapter_before_and_after_training(gpt, data):
    model = _adapted(gpt)
    before = doctor.check(model, ["q_proj", "v_proj"])
    assert before.ok and "B_zero" in before.codes and "no_grads" in before.codes
    assert len(before.layers) == 2 and before.trainable == 2 * 4 * (32 + 32)
    assert set(before.untargeted) == {
        "blocks.0.attn.k_proj",
        "blocks.0.attn.o_proj",
        "blocks.0.mlp.up_proj",
        "blocks.0.mlp.down_proj",
        "lm_head",
    }
    train(model, data, steps=3, batch_size=2, lr=1e-2, progress=False)
    after = doctor.check(model, ["q_proj", "v_proj"], after_training=True, reference=gpt)
    assert after.ok, str(after)
    assert "update_size" in after.codes and all(row["B_norm"] > 0 for row in after.layers)
    assert all(0 < row["update_ratio"] < 1 for row in after.layers)
    text = str(after)
    assert "‖sAB‖/‖W0‖" in text and "blocks.0.attn.q_proj" in text
    assert 0 < after.share < 0.1


# ---------------------------------------------------------------- the five failures learners report most


def test_targets_that_match_nothing(gpt):
    report = doctor.check(gpt, ["q", "v"])  # T5-style names on a Llama-style model
    assert {"unmatched_targets", "no_adapters"} <= _errors(report)
    assert "q_proj" in next(f.message for f in report.findings if f.code == "unmatched_targets")
    partly = doctor.check(_adapted(gpt, ["q_proj"]), ["q_proj", "query"])
    assert "unmatched_targets" in _errors(partly)
    assert "targets_not_adapted" in _errors(
        doctor.check(_adapted(gpt, ["q_proj"]), ["q_proj", "v_proj"])
    )


def test_an_adapter_that_never_trained_frozen(gpt, data):
    model = _adapted(gpt)
    for layer in lora_layers(model).values():
        layer.B.requires_grad_(False)
    train(model, data, steps=2, batch_size=2, lr=1e-2, progress=False)
    report = doctor.check(model, after_training=True)
    assert {"frozen_adapter", "B_zero"} <= _errors(report)


def test_an_adapter_that_never_trained_optimizer_built_too_early(gpt, data):
    model = copy.deepcopy(gpt)
    early = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    inject_lora(model, ["q_proj"], r=2, alpha=4)
    assert "not_in_optimizer" in _errors(doctor.check(model, optimizer=early))
    zero = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)
    assert "zero_lr" in _errors(doctor.check(model, optimizer=zero))
    good = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    assert doctor.check(model, optimizer=good).ok


def test_alpha_confused_with_the_scaling(gpt):
    confused = doctor.check(_adapted(gpt, r=32, alpha=2))  # meant "scaling 2", got 2/32
    assert "unusual_scaling" in confused.codes
    assert "pass α = 64" in next(
        f.message for f in confused.findings if f.code == "unusual_scaling"
    )
    assert "unusual_scaling" not in doctor.check(_adapted(gpt, r=32, alpha=64)).codes
    rs = doctor.check(_adapted(gpt, r=16, alpha=8, rslora=True))
    assert "α/√r" in next(f.message for f in rs.findings if f.code == "scaling")


def test_merging_twice(gpt, tmp_path):
    model = _nudge_B(_adapted(gpt))
    path = save_adapter(model, tmp_path / "a.safetensors")
    merge_lora(model)
    once = doctor.check(model, reference=gpt)
    assert once.ok and "merged" in once.codes
    remove_lora(model, merge=True)  # a plain model holding W0 + ΔW ...
    load_adapter(model, path)  # ... gets the same adapter again
    stacked = doctor.check(model, reference=gpt)
    assert "double_applied" in _errors(stacked)
    merge_lora(model)  # and merges it: W0 + 2 ΔW
    twice = doctor.check(model, reference=gpt)
    assert "merged_twice" in _errors(twice)
    assert "k = 2.00" in next(f.message for f in twice.findings if f.code == "merged_twice")


def test_low_precision_adapters_round_small_updates_away(gpt, data):
    model = _adapted(gpt, dtype=torch.bfloat16)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    report = doctor.check(model, optimizer=opt)
    finding = next(f for f in report.findings if f.code == "low_precision")
    assert finding.level == "warning" and "bfloat16" in finding.message
    assert finding.value > 0.5, "most of A (|A| ~ 1/sqrt(in)) cannot move by 1e-5 in bfloat16"
    A0 = model.blocks[0].attn.q_proj.A.detach().clone()
    train(model, data, steps=3, batch_size=2, optimizer=opt, progress=False)
    unchanged = (model.blocks[0].attn.q_proj.A == A0).float().mean().item()
    assert unchanged > 0.5, "and indeed, training leaves most of A bit-for-bit unchanged"
    assert "low_precision" not in doctor.check(_adapted(gpt)).codes


# ---------------------------------------------------------------- gradients and the rest


def test_both_zero_gets_no_gradient(gpt, tiny_cfg):
    model = _adapted(gpt)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.A.zero_()
    x = torch.randint(0, 256, (2, tiny_cfg.context))
    model(x, x)[1].backward()
    report = doctor.check(model)
    assert {"both_zero", "grad_zero"} <= _errors(report)
    assert all(row["grad"] == "0,0" for row in report.layers)


def test_gradients_none_and_ok(gpt, tiny_cfg):
    model = _nudge_B(_adapted(gpt))
    x = torch.randint(0, 256, (2, tiny_cfg.context))
    model(x, x)[1].backward()
    healthy = doctor.check(model)
    assert healthy.ok and all(row["grad"] == "ok,ok" for row in healthy.layers)
    layer = model.blocks[0].attn.v_proj
    layer.A.grad = layer.B.grad = None
    assert "grad_none" in doctor.check(model).codes


def test_trainable_parameters_outside_the_adapters(gpt):
    model = _adapted(gpt)
    model.lm_head.weight.requires_grad_(True)
    report = doctor.check(model)
    assert "extra_trainable" in report.codes
    assert report.trainable == 2 * 4 * 64 + model.lm_head.weight.numel()


def test_variants_are_understood(gpt):
    pissa = copy.deepcopy(gpt)
    inject_pissa(pissa, ["q_proj"], r=2, alpha=4)
    report = doctor.check(pissa, reference=gpt)
    assert "pissa_residual" in report.codes and report.ok
    dora = copy.deepcopy(gpt)
    inject_dora(dora, ["q_proj"], r=2, alpha=4)
    report = doctor.check(dora)
    assert report.trainable == 2 * 32 + 2 * 32 + 32 and report.ok


@pytest.mark.parametrize(
    "kw, err",
    [
        (dict(model="gpt"), TypeError),
        (dict(after_training=1), TypeError),
        (dict(optimizer="adam"), TypeError),
        (dict(reference=3), TypeError),
        (dict(targets=[1]), TypeError),
    ],
)
def test_bad_inputs(gpt, kw, err):
    model = kw.pop("model", gpt)
    with pytest.raises(err):
        doctor.check(model, **kw)


# ---------------------------------------------------------------- Hugging Face models


@needs_hf
def test_hugging_face_llama_with_lorakit_adapters():
    llama = tiny_llama(**GQA_TIED)
    model = _nudge_B(_adapted(llama, ["q_proj", "v_proj"]))
    report = doctor.check(model, ["q_proj", "v_proj"], after_training=True, reference=llama)
    assert report.ok, str(report)
    assert len(report.layers) == 4
    kinds = {n.split(".")[-1] for n in report.untargeted}
    assert kinds == {"k_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"}
    assert "unmatched_targets" in doctor.check(model, ["q_proj", "c_attn"]).codes


@needs_hf
@needs_peft
def test_peft_wrapped_llama():
    llama = tiny_llama(**GQA_TIED)
    model = peft.get_peft_model(
        copy.deepcopy(llama),
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    before = doctor.check(model, ["q_proj", "v_proj"])
    assert before.ok and len(before.layers) == 4 and "B_zero" in before.codes
    assert before.layers[0]["layer"] == "model.layers.0.self_attn.q_proj"
    assert "model.layers.0.self_attn.k_proj" in before.untargeted
    assert not any(".lora_" in n or "base_layer" in n for n in before.untargeted)
    after = doctor.check(model, after_training=True)
    assert "B_zero" in _errors(after), "a PEFT adapter whose B is still zero never trained"
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "lora_B") and isinstance(m.lora_B, torch.nn.ModuleDict):
                m.lora_B["default"].weight.normal_(std=0.05)
    model.merge_adapter()
    merged = doctor.check(model, reference=llama, after_training=True)
    assert merged.ok and all(row["merged"] for row in merged.layers), str(merged)
    confused = peft.get_peft_model(
        copy.deepcopy(llama), peft.LoraConfig(r=32, lora_alpha=1, target_modules=["q_proj"])
    )
    assert "unusual_scaling" in doctor.check(confused).codes


@needs_peft
def test_peft_dora_magnitudes_count_as_adapter_parameters(gpt):
    model = peft.get_peft_model(
        copy.deepcopy(gpt),
        peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], use_dora=True),
    )
    report = doctor.check(model, ["q_proj"])
    assert "extra_trainable" not in report.codes and report.ok, str(report)
    assert report.trainable == 2 * (32 + 32) + 32
