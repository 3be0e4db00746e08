"""The pretrained Llama stand-in of notebook 09: shipped, checked, reproducible, and a fine-tune shows.

The stand-in replaces SmolLM2 on a CPU. These tests check that what ships is what its training
card describes (every sha256, the settings), that a changed file is refused before anything
loads, that retraining reproduces its quality, and that fine-tuning it visibly does something:
the held-out response loss drops and the answers change.
"""

import json
import math
import shutil

import pytest
import torch

pytest.importorskip("transformers", reason="transformers is not installed")

from lorakit import hf, standin  # noqa: E402
from lorakit.data import load_corpus  # noqa: E402

#: the most the shipped folder may weigh (issue 28: "aim for <= 10 MB and state it")
MAX_SHIPPED_MB = 10
#: a retrained test-size stand-in's held-out loss may differ from the reference card's by this
#: much: on one machine and library versions it is bit-identical; another Python's stdlib (the
#: corpus) or another torch changes tokens and rounding, not the quality (its loss drops ~1.5 bits)
RETRAIN_TOL_BITS = 0.25


@pytest.fixture(scope="module")
def shipped():
    folder = standin.standin_folder()
    return (
        folder,
        hf.load_tokenizer(folder, local_only=True),
        hf.load_model(folder, local_only=True),
    )


def test_the_shipped_stand_in_matches_its_card_and_is_small():
    card = standin.verify(standin.SHIPPED)
    assert card["settings"] == standin.standin_settings("learner")
    size = sum(f.stat().st_size for f in standin.SHIPPED.iterdir())
    print(
        f"shipped stand-in: {size / 2**20:.2f} MB, {card['parameters']:,} parameters, "
        f"held-out {card['val_bits_per_token']:.3f} bits/token"
    )
    assert size < MAX_SHIPPED_MB * 2**20, f"the stand-in ships in at most {MAX_SHIPPED_MB} MB"
    assert set(card["sha256"]) >= {"model.safetensors", "config.json", "tokenizer.json"}
    hist = card["history"]
    assert len(hist["train_bpb"]) == card["settings"]["steps"], (
        "the card holds the whole loss curve"
    )
    assert card["val_bits_per_token"] < hist["val_bpb"][0] - 4, (
        "pretraining lowered the loss by bits"
    )
    assert "torch" in card["trained_with"] and "transformers" in card["trained_with"]


def test_it_has_smollm2s_architecture_and_loads_like_a_hub_model(shipped):
    folder, tok, model = shipped
    chosen, why = hf.pick_model(hf.DEFAULT_MODEL_ID, device="cpu")
    assert chosen == str(standin.SHIPPED) and "no CUDA GPU" in why
    cfg = model.config
    assert cfg.model_type == "llama" and cfg.num_key_value_heads < cfg.num_attention_heads, (
        "grouped-query attention"
    )
    assert cfg.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    mlp = model.model.layers[0].mlp
    assert all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")), (
        "a gated (SwiGLU) MLP"
    )
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=True
    )
    ids = ids if isinstance(ids, list) else ids["input_ids"]
    assert tok.decode(ids) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", (
        "ChatML, as SmolLM2"
    )
    assert tok.eos_token == "<|im_end|>" and cfg.eos_token_id == tok.eos_token_id
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id


def _bits_per_token(model, tok, text: str) -> float:
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"][:512]])
    with torch.no_grad():
        return model(input_ids=ids, labels=ids).loss.item() / math.log(2)


def test_it_is_pretrained_text_it_never_saw_costs_far_less_than_chance(shipped):
    _, tok, model = shipped
    text = load_corpus("tests", max_bytes=20_000).decode(
        "utf-8", errors="replace"
    )  # the stdlib's tests: unseen
    bits = _bits_per_token(model, tok, text)
    chance = math.log2(len(tok))  # what the untrained model scores: every token equally likely
    print(f"unseen stdlib tests: {bits:.2f} bits/token (chance {chance:.1f})")
    assert bits < chance - 3, (
        "a pretrained model gives unseen Python at least 8x chance's probability per token"
    )


def test_its_greedy_text_looks_like_python():
    samples = standin.read_card()["samples"]
    assert any(
        any(w in text for w in ("def ", "self", "return", "import")) for text in samples.values()
    ), samples


def _copy(tmp_path):
    folder = tmp_path / "standin"
    shutil.copytree(standin.SHIPPED, folder)
    return folder


def test_a_tampered_weight_file_is_refused_with_a_clear_message(tmp_path, monkeypatch):
    folder = _copy(tmp_path)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(
        ValueError, match=r"model\.safetensors: sha256 .* does not match its training card"
    ):
        standin.verify(folder)
    monkeypatch.setattr(standin, "SHIPPED", folder)
    with pytest.raises(ValueError, match="changed or damaged"):
        hf.pick_model(hf.DEFAULT_MODEL_ID, device="cpu")  # the notebook's path refuses it too


def test_other_settings_a_changed_tokenizer_or_stray_files_are_refused(tmp_path):
    folder = _copy(tmp_path)
    card = json.loads((folder / standin.CARD).read_text())
    card["settings"]["steps"] += 1
    (folder / standin.CARD).write_text(json.dumps(card))
    with pytest.raises(ValueError, match="was trained with settings"):
        standin.verify(folder)

    folder = _copy(tmp_path / "b")
    with open(folder / "tokenizer.json", "a") as f:
        f.write(" ")
    with pytest.raises(ValueError, match=r"tokenizer\.json: sha256"):
        standin.verify(folder)

    folder = _copy(tmp_path / "c")
    (folder / "pytorch_model.bin").write_bytes(b"not listed")
    with pytest.raises(ValueError, match="its card lists"):
        standin.verify(folder)
    with pytest.raises(ValueError, match="size must be one of"):
        standin.standin_settings("huge")


def test_retraining_reproduces_the_reference_quality(tmp_path):
    reference = json.loads(standin.TEST_REFERENCE.read_text())
    folder, card = standin.train_standin(tmp_path / "again", size="test", progress=False)
    assert card["settings"] == reference["settings"] == standin.standin_settings("test")
    same = card["sha256"]["model.safetensors"] == reference["sha256"]["model.safetensors"]
    print(
        f"retrained: {card['val_bits_per_token']:.4f} bits/token vs reference {reference['val_bits_per_token']:.4f}"
        f" ({'bit-identical weights' if same else 'different bits'}; {reference['trained_with']})"
    )
    assert abs(card["val_bits_per_token"] - reference["val_bits_per_token"]) < RETRAIN_TOL_BITS
    assert card["val_bits_per_token"] < card["history"]["val_bpb"][0] - 1, (
        "the retrained model learned"
    )
    assert standin.verify(folder, size="test")["sha256"] == card["sha256"], (
        "a fresh folder passes its own check"
    )
