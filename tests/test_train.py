import json

import pytest
import torch

from lorakit import train as T
from lorakit.data import load_splits
from lorakit.model import GPT, GPTConfig


@pytest.fixture(scope="module")
def splits():
    return load_splits("code", max_bytes=300_000)


def _fit(cfg, splits, seed=0, steps=25):
    T.set_seed(seed)
    model = GPT(cfg)
    hist = T.train(
        model,
        splits[0],
        splits[1],
        steps=steps,
        batch_size=8,
        lr=3e-3,
        seed=seed,
        eval_every=steps,
        progress=False,
    )
    return model, hist


def test_loss_decreases_on_the_tiny_config(tiny_cfg, splits):
    model, hist = _fit(tiny_cfg, splits, steps=40)
    assert hist.val_bpb[-1] < hist.val_bpb[0] - 1.0, hist.val_bpb
    assert len(hist.train_bpb) == 40


def test_same_seed_same_loss(tiny_cfg, splits):
    _, h1 = _fit(tiny_cfg, splits, seed=5)
    _, h2 = _fit(tiny_cfg, splits, seed=5)
    _, h3 = _fit(tiny_cfg, splits, seed=6)
    assert h1.train_bpb == h2.train_bpb
    assert h1.train_bpb != h3.train_bpb


def test_evaluate_is_bits_per_byte_and_reproducible(tiny_cfg, splits):
    model = GPT(tiny_cfg)
    a = T.evaluate(model, splits[1], batch_size=4, n_batches=3)
    b = T.evaluate(model, splits[1], batch_size=4, n_batches=3)
    assert a == b
    assert abs(a - 8.0) < 0.2  # an untrained model is close to uniform: log2(256) = 8 bits


def test_train_only_touches_trainable_parameters(tiny_cfg, splits):
    model = GPT(tiny_cfg)
    for p in model.parameters():
        p.requires_grad_(False)
    model.lm_head.weight.requires_grad_(True)
    frozen = model.tok_emb.weight.clone()
    T.train(model, splits[0], steps=3, batch_size=4, progress=False)
    assert torch.equal(frozen, model.tok_emb.weight)


def test_save_and_load_round_trip(tiny_cfg, tmp_path):
    model = GPT(tiny_cfg)
    T.save_model(model, tmp_path / "m.safetensors")
    again = T.load_model(tmp_path / "m.safetensors")
    assert again.cfg == tiny_cfg
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k


def test_checkpoint_from_another_config_is_refused_without_changes(tiny_cfg, tmp_path):
    other = GPT(GPTConfig(context=32, n_layer=1, n_head=2, d_model=64))
    T.save_model(other, tmp_path / "other.safetensors")
    model = GPT(tiny_cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="does not fit this model.*wrong shapes"):
        T.load_weights(model, tmp_path / "other.safetensors")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_pickle_is_not_loaded(tiny_cfg, tmp_path):
    path = tmp_path / "evil.safetensors"
    torch.save({"x": torch.zeros(1)}, path)  # a pickle, not safetensors
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        T.load_model(path)


SMALL = dict(
    config=GPTConfig(context=32, n_layer=1, n_head=2, d_model=32),
    steps=10,
    batch_size=8,
    max_bytes=200_000,
)


def test_base_model_is_cached_then_reused(tmp_cache, capsys):
    m1, info1 = T.base_model(progress=False, **SMALL)
    assert info1["trained"] and info1["val_bpb"] < 8.0
    m2, info2 = T.base_model(progress=False, **SMALL)
    assert not info2["trained"]
    assert info2["val_bpb"] == info1["val_bpb"]
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    assert len(list(tmp_cache.glob("*.safetensors"))) == 1


def test_corrupt_cache_is_detected_and_retrained(tmp_cache, capsys):
    _, info = T.base_model(progress=False, **SMALL)
    path = info["path"]
    with open(path, "r+b") as f:  # flip bytes in the middle of the weights
        f.seek(2000)
        f.write(b"\x00\x01\x02\x03" * 8)
    _, again = T.base_model(progress=False, **SMALL)
    assert again["trained"], "a corrupted cache must not be used"
    assert "sha256 does not match" in capsys.readouterr().out


def test_truncated_or_unreadable_card_is_retrained(tmp_cache, capsys):
    _, info = T.base_model(progress=False, **SMALL)
    card = info["path"].replace(".safetensors", ".json")
    with open(card, "w") as f:
        f.write("{not json")
    _, again = T.base_model(progress=False, **SMALL)
    assert again["trained"]
    assert "unreadable" in capsys.readouterr().out
    json.loads(open(card).read())  # rewritten


def test_cache_folder_follows_the_environment(tmp_cache):
    assert T.cache_dir() == tmp_cache


def test_device_helper_returns_cpu_here():
    assert T.pick_device().type in {"cpu", "cuda", "mps"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), "steps must be an integer >= 1"),
        (dict(steps=1, batch_size=0), "batch_size must be an integer >= 1"),
        (dict(steps=1, lr=0.0), "lr must be a finite number > 0"),
        (dict(steps=1, context=0), "context must be an integer >= 1"),
    ],
)
def test_train_bad_input(tiny_cfg, splits, kwargs, match):
    with pytest.raises(ValueError, match=match):
        T.train(GPT(tiny_cfg), splits[0], progress=False, **kwargs)


def test_base_model_unknown_setting():
    with pytest.raises(ValueError, match="unknown base_model settings"):
        T.base_model(progress=False, epochs=3)


def test_fast_mode_reads_the_environment(monkeypatch):
    monkeypatch.setenv("LORAKIT_FAST", "1")
    assert T.fast_mode()
    monkeypatch.setenv("LORAKIT_FAST", "0")
    assert not T.fast_mode()


# ---------------------------------------------------------------- a real (tiny) LoRA run


def tiny_setup():
    torch.manual_seed(0)
    model = GPT(GPTConfig(context=16, n_layer=1, n_head=2, d_model=16))
    data = torch.randint(
        0, 256, (2000,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    return model, data[:1600], data[1600:]


def test_short_lora_run_is_deterministic_and_leaves_the_base_alone():
    model, tr, va = tiny_setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kw = dict(r=2, alpha=4, steps=3, batch_size=4, eval_batches=2)
    a = T.short_lora_run(model, tr, va, **kw)
    b = T.short_lora_run(model, tr, va, **kw)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert a["val_bpb"] == pytest.approx(b["val_bpb"], rel=1e-6)
    assert a["scaling"] == 2.0 and len(a["train_bpb"]) == 3 and a["dW_norm"] > 0
    assert set(a["A"]) == {"blocks.0.attn.q_proj", "blocks.0.attn.v_proj"}
    assert a["A"]["blocks.0.attn.q_proj"].shape == (16, 2)
    c = T.short_lora_run(model, tr, va, **{**kw, "rslora": True})
    assert c["scaling"] == pytest.approx(4 / 2**0.5)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        T.short_lora_run(model, tr, va, r=2, alpha=4, steps=0)
