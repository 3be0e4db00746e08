"""The learner-size base model that ships in lorakit/weights/: verified, used, and retrainable."""

import json

import pytest
import torch

from lorakit import train as T
from lorakit.model import GPTConfig

LEARNER = dict(
    config=GPTConfig(context=128, n_layer=4, n_head=4, d_model=128),
    steps=800,
    batch_size=32,
    lr=2e-3,
    max_bytes=None,
    seed=0,
)


def test_the_shipped_card_describes_the_shipped_weights():
    card = json.loads(T.SHIPPED.with_suffix(".json").read_text())
    assert card["sha256"] == T._sha256(T.SHIPPED), (
        "the weights are the ones the card was written for"
    )
    assert card["config"] == LEARNER["config"].to_dict()
    assert card["ship_key"] == T._ship_key(LEARNER), (
        "the card's settings are the learner-size settings"
    )
    assert 1.5 < card["val_bpb"] < 3.0 and len(card["history"]["val_bpb"]) > 5


def test_learner_size_uses_the_shipped_model_without_training(tmp_cache, monkeypatch):
    monkeypatch.setattr(
        T, "train", lambda *a, **k: pytest.fail("the shipped model must not be retrained")
    )
    model, info = T.base_model(progress=False, **LEARNER)
    assert info["path"] == str(T.SHIPPED) and info["trained"] is False
    assert sum(p.numel() for p in model.parameters()) > 800_000
    x = torch.randint(0, 256, (1, 16))
    assert torch.isfinite(model(x)[0]).all()


def test_a_tampered_shipped_file_is_not_used(tmp_cache, monkeypatch, tmp_path):
    fake = tmp_path / "base-learner.safetensors"
    fake.write_bytes(T.SHIPPED.read_bytes()[:-8] + b"tampered")
    (tmp_path / "base-learner.json").write_text(T.SHIPPED.with_suffix(".json").read_text())
    monkeypatch.setattr(T, "SHIPPED", fake)
    assert T._read_shipped(LEARNER) == (None, {}), "a sha256 mismatch means: do not load it"


def test_other_settings_or_use_shipped_false_train(tmp_cache):
    assert T._read_shipped({**LEARNER, "steps": 10})[0] is None
    small = dict(
        config=GPTConfig(context=16, n_layer=1, n_head=2, d_model=16),
        steps=2,
        batch_size=2,
        lr=1e-3,
        max_bytes=50_000,
        seed=0,
    )
    _, info = T.base_model(progress=False, use_shipped=False, **small)
    assert info["trained"] is True and info["path"] != str(T.SHIPPED)
