"""Instruction pairs from the stdlib, prompt templates, EOS, and the loss mask (lorakit.sft)."""

import ast
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from lorakit import sft
from lorakit.data import encode
from lorakit.lora import inject_lora
from lorakit.model import GPT, GPTConfig


@pytest.fixture(scope="module")
def pairs():
    return sft.docstring_pairs("train", 60), sft.docstring_pairs("val", 60)


def test_pairs_are_code_without_docstring_and_its_first_line(pairs):
    train, val = pairs
    assert len(train) > 100 and len(val) > 10
    for p in train[:200]:
        assert 12 <= len(p.summary) <= 60 and p.summary.endswith(".")
        assert p.summary not in p.code, f"{p.name}: the answer must not be in the prompt"
        node = ast.parse(p.code).body[0]  # the code without its docstring still parses
        assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == p.name
        assert ast.get_docstring(node) is None


def test_validation_modules_are_never_seen_in_training(pairs):
    train, val = pairs
    assert not {p.module for p in train} & {p.module for p in val}
    assert sft.docstring_pairs("val", 60) is val, "parsed once per process"


def test_the_cache_on_disk_gives_the_same_pairs(pairs, tmp_path, monkeypatch):
    monkeypatch.setenv("LORAKIT_CACHE", str(tmp_path))
    first = sft._all_pairs(40)
    assert list(tmp_path.glob("sft-pairs-*.json"))
    assert sft._all_pairs(40) == first


def test_byte_example_keeps_the_response_whole_and_masks_the_prompt(pairs):
    p = pairs[0][0]
    ids, labels = sft.byte_example(p, context=96)
    assert len(ids) <= 96
    response = encode(p.summary + sft.EOS).long()
    assert torch.equal(ids[-len(response) :], response), "the response and its EOS end the example"
    n_prompt = len(ids) - len(response)
    assert (labels[:n_prompt] == sft.IGNORE).all() and torch.equal(labels[n_prompt:], response)
    ids2, labels2 = sft.byte_example(p, context=96, mask=False, eos=False)
    assert torch.equal(ids2, labels2) and ids2[-1] != ord(sft.EOS)


def test_byte_examples_skip_what_cannot_fit(pairs):
    train = pairs[0][:300]
    kept = sft.byte_examples(train, context=48)
    assert 0 < len(kept) < len(train)
    assert all(len(ids) <= 48 for ids, _ in kept)
    with pytest.raises(ValueError, match="context 30 leaves"):
        sft.byte_example(max(train, key=lambda p: len(p.summary)), context=30)


def test_collate_pads_on_the_right_with_ignored_labels():
    a = (torch.tensor([1, 2, 3]), torch.tensor([-100, 2, 3]))
    b = (torch.tensor([4]), torch.tensor([4]))
    batch = sft.collate([a, b], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


class FixedLogits(nn.Module):
    """A stand-in 'model' whose logits are a leaf tensor, so their gradient can be read."""

    def __init__(self, T, V):
        super().__init__()
        self.logits = nn.Parameter(torch.randn(1, T, V))

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.logits)


def test_a_masked_prompt_token_contributes_nothing_to_the_loss():
    """Checked by gradient: positions that predict prompt tokens get exactly zero gradient."""
    ids = torch.tensor([[5, 6, 7, 8, 9, 3]])
    labels = torch.tensor([[-100, -100, -100, 8, 9, 3]])  # prompt 5 6 7, response 8 9 EOS
    model = FixedLogits(6, 16)
    sft.response_loss(model, dict(input_ids=ids, labels=labels)).backward()
    g = model.logits.grad[0].abs().sum(-1)
    # position t predicts token t+1: positions 0, 1 predict prompt tokens 6, 7
    assert g[0] == 0 and g[1] == 0, "a masked prompt token must not move the model"
    assert (g[2:5] > 0).all(), "response tokens (and the EOS) are learned"
    assert g[5] == 0, "the last position predicts nothing"
    # the loss is the mean cross-entropy of the three response predictions, by hand
    logp = torch.log_softmax(model.logits[0].detach(), -1)
    by_hand = -(logp[2, 8] + logp[3, 9] + logp[4, 3]) / 3
    loss = sft.response_loss(model, dict(input_ids=ids, labels=labels))
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_fine_tuning_the_course_gpt_lowers_the_response_loss(pairs):
    torch.manual_seed(0)
    model = GPT(GPTConfig(context=96, n_layer=1, n_head=2, d_model=32))
    train = sft.byte_examples(pairs[0][:64], 96)
    val = sft.byte_examples(pairs[1][:16], 96)
    before = sft.evaluate_sft(model, val, pad_id=0)
    inject_lora(model, "all-linear", r=4, alpha=8)
    losses = sft.train_sft(model, train, steps=30, batch_size=8, lr=1e-2, pad_id=0, progress=False)
    assert sum(losses[-5:]) < sum(losses[:5])
    assert sft.evaluate_sft(model, val, pad_id=0) < before
    answer = sft.generate_bytes(model, sft.prompt_of(pairs[1][0], 40), max_new_tokens=10)
    assert isinstance(answer, str) and len(encode(answer)) <= 10


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="split must be"):
        sft.docstring_pairs("test")
    with pytest.raises(TypeError, match="max_summary_chars must be an int"):
        sft.docstring_pairs("train", True)
    with pytest.raises(ValueError, match="max_summary_chars must be an integer >= 12"):
        sft.docstring_pairs("train", 11)
    model = GPT(GPTConfig(context=32, n_layer=1, n_head=2, d_model=32))
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        sft.train_sft(
            model,
            [(torch.tensor([1, 2]), torch.tensor([1, 2]))],
            steps=0,
            batch_size=1,
            lr=1e-3,
            pad_id=0,
        )
    with pytest.raises(ValueError, match="examples is empty"):
        sft.train_sft(model, [], steps=1, batch_size=1, lr=1e-3, pad_id=0)
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        sft.train_sft(
            model,
            [(torch.tensor([1, 2]), torch.tensor([1, 2]))],
            steps=1,
            batch_size=1,
            lr=1e-3,
            pad_id=0,
        )
