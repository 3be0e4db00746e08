"""DPO from scratch (notebook 11 §2): the loss and its gradient against the paper's formula written
out independently here (TRL is not a lorakit dependency), and the reference model as the adapter
switched off, exactly, with no second model."""

import copy
import math

import pytest
import torch
from tiny import tiny_llama

from lorakit import preference, sft
from lorakit.lora import inject_lora, lora_layers, merge_lora
from lorakit.model import GPT, GPTConfig
from lorakit.quiet import quiet_import


def paper_dpo(pc, pr, rc, rr, beta):
    """Rafailov et al. 2023, eq. 7, one pair at a time with Python floats: -log(1 / (1 + e^-z))."""
    z = beta * ((pc - rc) - (pr - rr))
    return math.log1p(math.exp(-z))


def test_dpo_loss_and_gradient_match_the_paper():
    g = torch.Generator().manual_seed(0)
    logps = [torch.randn(6, generator=g, dtype=torch.float64) * 5 for _ in range(4)]
    beta = 0.3
    policy = [t.clone().requires_grad_(True) for t in logps[:2]]
    got = preference.dpo_loss(policy[0], policy[1], logps[2], logps[3], beta)
    want = [paper_dpo(*(float(t[i]) for t in logps), beta) for i in range(6)]
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    got.sum().backward()
    # d/d pc of -log σ(z) = -β σ(-z); d/d pr = +β σ(-z): written from the formula, not from autograd
    for i in range(6):
        z = beta * (
            (float(logps[0][i]) - float(logps[2][i])) - (float(logps[1][i]) - float(logps[3][i]))
        )
        s = 1 / (1 + math.exp(z))
        assert math.isclose(float(policy[0].grad[i]), -beta * s, rel_tol=1e-10)
        assert math.isclose(float(policy[1].grad[i]), beta * s, rel_tol=1e-10)


def test_dpo_loss_is_log2_at_the_reference_and_finite_for_huge_margins():
    zero = torch.zeros(3)
    assert torch.allclose(
        preference.dpo_loss(zero, zero, zero, zero, 0.1), torch.full((3,), math.log(2))
    )
    huge = torch.tensor([-1e4, 1e4])
    loss = preference.dpo_loss(huge, -huge, torch.zeros(2), torch.zeros(2), 1.0)
    assert torch.isfinite(loss).all() and loss[1] == 0 and loss[0] > 1e3
    with pytest.raises(ValueError, match="beta"):
        preference.dpo_loss(zero, zero, zero, zero, 0.0)


def _examples(n=6, max_len=16):
    pairs = sft.docstring_pairs("train", 28)[:n]
    rejected = preference.rejected_summaries(pairs)
    assert all(r != p.summary for p, r in zip(pairs, rejected)), (
        "a rejected answer is another function's"
    )
    return [preference.preference_example(p, r, None, max_len * 4) for p, r in zip(pairs, rejected)]


def test_chosen_and_rejected_share_the_prompt():
    for (ci, cl), (ri, rl) in _examples():
        n_c, n_r = int((cl == sft.IGNORE).sum()), int((rl == sft.IGNORE).sum())
        assert n_c == n_r and torch.equal(ci[:n_c], ri[:n_r])


def test_disabled_adapter_is_the_base_model_exactly_with_no_copy():
    torch.manual_seed(0)
    base = GPT(GPTConfig(context=64, n_layer=1, n_head=2, d_model=32)).eval()
    model = copy.deepcopy(base)
    inject_lora(model, "all-linear", r=4, alpha=8)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.B.normal_(0, 0.5)
    batch = preference.preference_batch(_examples(), pad_id=0)
    n_params = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        adapted = preference.sequence_logps(model, batch)
        with preference.adapter_disabled(model):
            ref = preference.sequence_logps(model, batch)
            assert sum(p.numel() for p in model.parameters()) < n_params, (
                "the adapters are out of the forward"
            )
        want = preference.sequence_logps(base, batch)
    assert torch.equal(ref, want), "the adapter switched off computes the base model bit for bit"
    assert not torch.allclose(adapted, want), "the adapter on does change the model"
    assert sum(p.numel() for p in model.parameters()) == n_params and lora_layers(model), (
        "put back afterwards"
    )
    merge_lora(model)
    with pytest.raises(ValueError, match="unmerge"):
        with preference.adapter_disabled(model):
            pass
    with pytest.raises(ValueError, match="deepcopy"):
        with preference.adapter_disabled(base):
            pass


def test_peft_disable_adapter_is_the_reference_too():
    peft = quiet_import("peft")
    if peft is None:
        pytest.skip("PEFT is not installed")
    base = tiny_llama()
    model = peft.get_peft_model(
        copy.deepcopy(base),
        peft.LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
        ),
    )
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :5] = sft.IGNORE
    batch = dict(input_ids=ids, labels=labels, attention_mask=torch.ones_like(ids))
    with torch.no_grad(), preference.adapter_disabled(model):
        ref = preference.sequence_logps(model, batch)
    with torch.no_grad():
        assert torch.allclose(ref, preference.sequence_logps(base, batch), atol=1e-6)
        assert not torch.allclose(ref, preference.sequence_logps(model, batch), atol=1e-4)


def test_dpo_training_prefers_the_chosen_answers():
    torch.manual_seed(0)
    model = GPT(GPTConfig(context=64, n_layer=1, n_head=2, d_model=32)).eval()
    inject_lora(model, "all-linear", r=4, alpha=8)
    examples = _examples(8)
    assert preference.reward_accuracy(model, examples, 0) == 0, "B = 0: the policy is the reference"
    history = preference.train_dpo(
        model, examples, steps=25, batch_size=8, lr=2e-2, beta=0.5, pad_id=0, progress=False
    )
    assert history["loss"][-1] < history["loss"][0] < math.log(2) + 1e-6
    assert preference.reward_accuracy(model, examples, 0) >= 0.75
    assert preference.drift(model, examples, 0) > 0
