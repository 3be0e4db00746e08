"""GRPO from scratch (notebook 11 §1, §3, §6): the verifier on hand-made answers, group-normalised
advantages, the clipped loss and its KL, a run on the course GPT and on a Hugging Face model, and
the doctor catching each planted failure with a message that names the fix."""

import copy

import pytest
import torch
from tiny import tiny_llama

from lorakit import doctor, hf, rl, sft, standin
from lorakit.lora import inject_lora
from lorakit.model import GPT, GPTConfig

TRUE = "Return True for leap years, False for non-leap years."


@pytest.mark.parametrize(
    "answer, stopped, want",
    [
        (TRUE, True, 1.0),  # the true line, ended: full marks
        (TRUE, False, 0.75),  # never stopped: loses the stop part
        (
            "Return true for leap years.",
            True,
            0.5 + 0.5 * 3 / 5,
        ),  # 3 of its 3 words, of the summary's 5
        (
            "return true for leap years",
            True,
            0.25 + 0.5 * 3 / 5,
        ),  # not a sentence (lower case, no stop)
        ("Rod.", True, 0.5),  # the hack: format without content
        (
            "Leap leap leap years years false true non calendar month day week.",
            True,
            0.5 + 0.5 * 5 / 9,
        ),
        ("", True, 0.25),
    ],
)
def test_the_verifier_on_hand_made_answers(answer, stopped, want):
    assert rl.reward(answer, stopped, TRUE) == pytest.approx(want)


def test_padding_an_answer_with_guessed_words_lowers_its_reward():
    short = rl.reward("Return true for leap years.", True, TRUE)
    padded = rl.reward(
        "Return true for leap years, months, days, weeks, calendars, dates, times.", True, TRUE
    )
    assert padded < short


def test_group_advantages():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5], [0.0, 0.2, 0.4, 1.0]])
    a = rl.group_advantages(r)
    assert torch.allclose(a[0], torch.tensor([1.0, -1.0, -1.0, 1.0]) * (0.5 / (r[0].std() + 1e-4)))
    assert torch.equal(a[1], torch.zeros(4)), "equal rewards: zero advantage"
    assert torch.allclose(a.mean(1), torch.zeros(3), atol=1e-6)
    assert torch.allclose(a[2].std(), torch.tensor(1.0), atol=1e-3)
    with pytest.raises(ValueError, match="G >= 2"):
        rl.group_advantages(torch.ones(3, 1))


def test_grpo_loss_at_ratio_one_is_the_policy_gradient_and_the_clip_acts():
    g = torch.Generator().manual_seed(0)
    logps = torch.randn(3, 5, generator=g).requires_grad_(True)
    mask = torch.ones(3, 5)
    adv = torch.tensor([1.0, -0.5, 0.0])
    loss, stats = rl.grpo_loss(logps, logps.detach(), logps.detach(), mask, adv, kl_coef=0.1)
    loss.backward()
    assert stats["kl"] == pytest.approx(0.0, abs=1e-7) and stats["clipped"] == 0
    assert torch.allclose(logps.grad, -(adv / 5 / 3).unsqueeze(1).expand(3, 5)), (
        "∇ = −Â ∇log π / (|o| G)"
    )
    # a ratio of e^1 > 1 + ε with a positive advantage: clipped, so no gradient flows
    up = (torch.zeros(1, 2) + 1.0).requires_grad_(True)
    loss, stats = rl.grpo_loss(
        up, torch.zeros(1, 2), up.detach(), torch.ones(1, 2), torch.tensor([1.0]), kl_coef=0.0
    )
    loss.backward()
    assert stats["clipped"] == 1.0 and torch.equal(up.grad, torch.zeros(1, 2))
    # the KL estimate is never negative and grows with the distance
    lo, _ = rl.grpo_loss(
        torch.zeros(1, 3),
        torch.zeros(1, 3),
        torch.full((1, 3), -0.1),
        torch.ones(1, 3),
        torch.zeros(1),
        kl_coef=1.0,
    )
    hi, _ = rl.grpo_loss(
        torch.zeros(1, 3),
        torch.zeros(1, 3),
        torch.full((1, 3), -1.0),
        torch.ones(1, 3),
        torch.zeros(1),
        kl_coef=1.0,
    )
    assert 0 < lo < hi


def _gpt_task():
    torch.manual_seed(0)
    model = GPT(GPTConfig(context=64, n_layer=1, n_head=2, d_model=32)).eval()
    task = rl.byte_task(sft.docstring_pairs("train", 28)[:12], 8, 64)
    assert len({len(p) for p in task.prompts}) == 1 and len(task.prompts) == 12
    return model, task


def test_grpo_runs_on_the_course_gpt_with_the_adapter_off_as_reference():
    model, task = _gpt_task()
    inject_lora(model, "all-linear", r=1, alpha=8)
    share_of_e = lambda answer, stopped, summary: len(answer.encode()) / 40  # noqa: E731 - graded: varies
    history = rl.train_grpo(
        model,
        task,
        3,
        lr=1e-2,
        group_size=4,
        prompts_per_step=2,
        max_new=12,
        updates_per_batch=2,
        reward_fn=share_of_e,
        progress=False,
    )
    assert len(history["reward"]) == 3 and all(0 <= r <= 1 for r in history["reward"])
    assert history["kl"][-1] > 0 and max(history["clipped"]) >= 0
    assert 0 <= rl.mean_reward(model, task, 12) <= 1
    examples = rl.answer_examples(task)
    assert examples and all(len(ids) <= 64 for ids, _ in examples)


def test_grpo_runs_on_a_hugging_face_model():
    folder = standin.standin_folder()
    tokenizer = hf.load_tokenizer(folder, local_only=True)
    model = tiny_llama(vocab_size=len(tokenizer))
    inject_lora(model, ["q_proj", "v_proj"], r=2, alpha=4)
    task = rl.chat_task(sft.docstring_pairs("train", 28)[:4], tokenizer, max_code_chars=60)
    history = rl.train_grpo(
        model, task, 2, lr=1e-3, group_size=2, prompts_per_step=2, max_new=6, progress=False
    )
    assert len(history["reward"]) == 2
    assert len(rl.greedy_answers(model, task, 4)) == 4


def test_the_doctor_catches_each_planted_failure():
    model, task = _gpt_task()
    frozen = copy.deepcopy(model)
    inject_lora(frozen, "all-linear", r=1, alpha=8)
    frozen.requires_grad_(False)  # "loaded frozen"
    report = doctor.check_rl(frozen)
    assert "frozen_adapter" in report.codes and "requires_grad_(True)" in str(report)
    with pytest.raises(ValueError, match="is_trainable=True"):
        rl.train_grpo(frozen, task, 1, lr=1e-2, progress=False)
    assert "no_trainable" in doctor.check_rl(copy.deepcopy(model).requires_grad_(False)).codes

    lora = copy.deepcopy(model)
    inject_lora(lora, "all-linear", r=1, alpha=8)
    exact = lambda answer, stopped, summary: float(stopped and answer == summary)  # noqa: E731 - never right
    history = rl.train_grpo(
        lora,
        task,
        2,
        lr=1e-2,
        group_size=2,
        prompts_per_step=2,
        max_new=4,
        reward_fn=exact,
        progress=False,
    )
    assert history["zero_groups"] == [1.0, 1.0]
    report = doctor.check_rl(lora, history)
    assert "zero_advantage" in report.codes and "partial" in str(report)

    runaway = dict(reward=[0.1, 0.1, 0.0, 0.0], zero_groups=[0, 0, 0, 0], kl=[0.0, 0.4, 2.0, 6.0])
    report = doctor.check_rl(lora, runaway)
    assert "kl_exploding" in report.codes and "kl_coef" in str(report)

    slow = copy.deepcopy(model)
    inject_lora(slow, "all-linear", r=8, alpha=8)
    with torch.no_grad():
        for p in slow.parameters():
            if p.requires_grad and p.shape[0] == 8:
                p.fill_(1e-6)  # B barely moved
    flat = dict(reward=[0.2, 0.21, 0.2, 0.2, 0.19, 0.2], zero_groups=[0.0] * 6, kl=[0.0] * 6)
    report = doctor.check_rl(slow, flat, lr=1e-5)
    assert "lr_too_small" in report.codes and "0.0001" in str(report)
    healthy = dict(
        reward=[0.1, 0.1, 0.2, 0.3, 0.4, 0.4],
        zero_groups=[0.1] * 6,
        kl=[0.0, 0.05, 0.1, 0.1, 0.1, 0.1],
    )
    with torch.no_grad():
        for p in slow.parameters():
            if p.requires_grad and p.shape[0] == 8:
                p.normal_(0, 0.05)  # B moved as training moves it
    assert doctor.check_rl(slow, healthy).ok
