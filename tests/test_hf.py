"""The real-LLM path of notebook 09, end to end on a tiny local Llama and an offline tokenizer.

Everything the finale does on a GPU with SmolLM2 runs here on the CPU at tiny size, through the
same ``from_pretrained`` calls: only the Hub download is not exercised.
"""

import pytest
import torch

pytest.importorskip("transformers", reason="transformers is not installed")

from lorakit import hf, sft, standin  # noqa: E402
from lorakit.lora import lora_layers  # noqa: E402
from lorakit.qlora import Linear4bit, merge_into_dequantized  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = hf.build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
    tok = hf.load_tokenizer(folder, local_only=True)
    train = [sft.chat_example(p, tok, 192) for p in sft.docstring_pairs("train", 60)[:48]]
    val_pairs = sft.docstring_pairs("val", 60)[:8]
    val = [sft.chat_example(p, tok, 192) for p in val_pairs]
    return folder, tok, train, val, val_pairs


def test_the_tiny_llama_loads_like_a_hub_model(tiny):
    folder, tok, *_ = tiny
    model = hf.load_model(folder, local_only=True)
    cfg = model.config
    assert cfg.num_key_value_heads < cfg.num_attention_heads, "grouped-query attention, as SmolLM2"
    assert cfg.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=True)
    ids = ids if isinstance(ids, list) else ids["input_ids"]
    assert tok.decode(ids).endswith("<|im_start|>assistant\n")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id is not None


def test_chat_examples_mask_the_template_and_end_with_eos(tiny):
    _, tok, train, *_ = tiny
    ids, labels = train[0]
    n_prompt = int((labels == sft.IGNORE).sum())
    assert ids[-1] == tok.eos_token_id and labels[-1] == tok.eos_token_id
    assert (labels[n_prompt:] == ids[n_prompt:]).all() and n_prompt > 10
    prompt = hf.chat_prompt_ids(tok, sft.docstring_pairs("train", 60)[0])
    assert torch.equal(prompt[0], ids[:n_prompt]), "generation starts from exactly the trained prompt"


def test_an_offline_model_id_falls_back_to_the_pretrained_stand_in(tiny):
    chosen, why = hf.pick_model("no-such-org/no-such-model", local_only=True)
    assert chosen == str(standin.SHIPPED) and why, "offline: the stand-in that ships with lorakit"
    chosen, why = hf.pick_model("no-such-org/no-such-model", tiny[0], local_only=True)
    assert chosen == str(tiny[0]) and why, "or the fallback folder given"
    chosen, why = hf.pick_model(str(tiny[0]), local_only=True, device="cpu")
    assert chosen == str(standin.SHIPPED) and "no CUDA GPU" in why, "on a CPU: the stand-in"


@pytest.mark.parametrize("method", hf.METHODS)
def test_every_method_fine_tunes(tiny, method):
    folder, tok, train, val, val_pairs = tiny
    result = hf.fine_tune(method, folder, train, val, steps=3, batch_size=4, lr=1e-3,
                          compute_dtype=torch.float32, device="cpu", pad_id=tok.pad_token_id,
                          warmup_steps=1, local_only=True, progress=False, keep_model=True)
    assert result["status"] == "ok"
    assert len(result["losses"]) == 3 and all(l == l for l in result["losses"])
    assert result["val_bits"] > 0 and result["ms_per_step"] > 0 and result["peak_bytes"] > 0
    model = result["model"]
    total = sum(p.numel() for p in model.parameters())
    if method == "full":
        assert result["trainable"] == total
    else:
        assert 0 < result["trainable"] < total / 2
    answers = hf.generate_answers(model, tok, val_pairs[:2], max_new_tokens=4)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_qlora_stores_less_than_lora(tiny):
    folder, tok, train, val, _ = tiny
    runs = {m: hf.fine_tune(m, folder, train, val, steps=2, batch_size=2, lr=1e-3, compute_dtype=torch.float32,
                            device="cpu", pad_id=tok.pad_token_id, warmup_steps=0, local_only=True, progress=False)
            for m in ("lorakit-qlora", "lora", "full")}
    assert runs["lorakit-qlora"]["peak_bytes"] < runs["lora"]["peak_bytes"] < runs["full"]["peak_bytes"]


def test_out_of_memory_is_reported_not_raised(tiny, monkeypatch):
    folder, tok, train, val, _ = tiny

    def no_room(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(hf, "prepare", no_room)
    result = hf.fine_tune("full", folder, train, val, steps=1, batch_size=1, lr=1e-3, compute_dtype=torch.float32,
                          device="cpu", pad_id=tok.pad_token_id, local_only=True, progress=False)
    assert result["status"] == "out of memory on this device" and "2.00 GiB" in result["error"]

    def a_bug(*args, **kwargs):
        raise KeyError("a real bug")
    monkeypatch.setattr(hf, "prepare", a_bug)
    with pytest.raises(KeyError):
        hf.fine_tune("full", folder, train, val, steps=1, batch_size=1, lr=1e-3, compute_dtype=torch.float32,
                     device="cpu", pad_id=tok.pad_token_id, local_only=True, progress=False)


def test_the_exact_merge_saves_and_reloads_as_a_plain_model(tiny, tmp_path):
    folder, tok, train, val, val_pairs = tiny
    result = hf.fine_tune("lorakit-qlora", folder, train, val, steps=4, batch_size=4, lr=3e-2,
                          compute_dtype=torch.float32, device="cpu", pad_id=tok.pad_token_id, warmup_steps=0,
                          local_only=True, progress=False, keep_model=True)
    model = result["model"]
    assert any(l.B.abs().sum() > 0 for l in lora_layers(model).values()), "the adapter trained"
    ids = hf.chat_prompt_ids(tok, val_pairs[0])
    with torch.no_grad():
        trained = model(input_ids=ids).logits
    merge_into_dequantized(model)
    assert not any(isinstance(m, Linear4bit) for m in model.modules()) and not lora_layers(model)
    model.save_pretrained(tmp_path / "merged")
    tok.save_pretrained(tmp_path / "merged")
    reloaded = hf.load_model(tmp_path / "merged", local_only=True)
    with torch.no_grad():
        again = reloaded(input_ids=ids).logits
    assert (again - trained).abs().max().item() < 1e-4, "the merged, reloaded model is the trained one"
    assert hf.generate_answers(reloaded, tok, val_pairs[:1], 6) == hf.generate_answers(model, tok, val_pairs[:1], 6)


def test_bad_method_is_refused(tiny):
    folder, *_ = tiny
    with pytest.raises(ValueError, match="method must be one of"):
        hf.prepare("qlora-please", folder, torch.float32, "cpu")


# ---------------------------------------------------------------- the same path on the pretrained stand-in

#: fine-tuning the pretrained stand-in (below) must lower the held-out response loss by at least this
FT_MARGIN_BITS = 0.5
#: 20 steps of 4 pairs at the learning rates notebook 09 uses on the stand-in (a drop of ~1.5 bits
#: after 30 steps, measured on 200 held-out pairs)
FT_STEPS = 20
FT_LR = {"lorakit-qlora": 3e-3, "bnb-peft-qlora": 3e-3, "lora": 3e-3, "full": 1e-3}


@pytest.fixture(scope="module")
def pretrained():
    folder = standin.standin_folder()
    tok = hf.load_tokenizer(folder, local_only=True)
    train = [sft.chat_example(p, tok, 160) for p in sft.docstring_pairs("train", 60)[:96]]
    val_pairs = sft.docstring_pairs("val", 60)[:24]
    val = [sft.chat_example(p, tok, 160) for p in val_pairs]
    base = hf.load_model(folder, local_only=True)
    before = hf.generate_answers(base, tok, val_pairs[:4], max_new_tokens=16)
    return folder, tok, train, val, val_pairs[:4], sft.evaluate_sft(base, val, tok.pad_token_id), before


@pytest.mark.parametrize("method", hf.METHODS)
def test_fine_tuning_the_stand_in_lowers_held_out_loss_and_changes_answers(pretrained, method):
    folder, tok, train, val, shown, base_bits, before = pretrained
    result = hf.fine_tune(method, folder, train, val, steps=FT_STEPS, batch_size=4, lr=FT_LR[method],
                          compute_dtype=torch.float32, device="cpu", pad_id=tok.pad_token_id, warmup_steps=2,
                          local_only=True, progress=False, keep_model=True)
    stopped = []
    after = hf.generate_answers(result["model"], tok, shown, max_new_tokens=16, stopped=stopped)
    print(f"{method}: held-out response loss {base_bits:.3f} -> {result['val_bits']:.3f} bits/token; "
          f"stopped {sum(stopped)}/{len(shown)}\n  before {before}\n  after  {after}")
    assert result["val_bits"] < base_bits - FT_MARGIN_BITS, "fine-tuning taught the held-out task"
    assert all(after), "every fine-tuned answer has something to read (the base often writes only blank lines)"
    assert any(a != b for a, b in zip(after, before)), "at least one answer changed"
