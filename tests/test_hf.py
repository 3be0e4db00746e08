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
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=True
    )
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
    assert torch.equal(prompt[0], ids[:n_prompt]), (
        "generation starts from exactly the trained prompt"
    )


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
    result = hf.fine_tune(
        method,
        folder,
        train,
        val,
        steps=3,
        batch_size=4,
        lr=1e-3,
        compute_dtype=torch.float32,
        device="cpu",
        pad_id=tok.pad_token_id,
        warmup_steps=1,
        local_only=True,
        progress=False,
        keep_model=True,
    )
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
    runs = {
        m: hf.fine_tune(
            m,
            folder,
            train,
            val,
            steps=2,
            batch_size=2,
            lr=1e-3,
            compute_dtype=torch.float32,
            device="cpu",
            pad_id=tok.pad_token_id,
            warmup_steps=0,
            local_only=True,
            progress=False,
        )
        for m in ("lorakit-qlora", "lora", "full")
    }
    assert (
        runs["lorakit-qlora"]["peak_bytes"]
        < runs["lora"]["peak_bytes"]
        < runs["full"]["peak_bytes"]
    )


def test_out_of_memory_is_reported_not_raised(tiny, monkeypatch):
    folder, tok, train, val, _ = tiny

    def no_room(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(hf, "prepare", no_room)
    result = hf.fine_tune(
        "full",
        folder,
        train,
        val,
        steps=1,
        batch_size=1,
        lr=1e-3,
        compute_dtype=torch.float32,
        device="cpu",
        pad_id=tok.pad_token_id,
        local_only=True,
        progress=False,
    )
    assert result["status"] == "out of memory on this device" and "2.00 GiB" in result["error"]

    def a_bug(*args, **kwargs):
        raise KeyError("a real bug")

    monkeypatch.setattr(hf, "prepare", a_bug)
    with pytest.raises(KeyError):
        hf.fine_tune(
            "full",
            folder,
            train,
            val,
            steps=1,
            batch_size=1,
            lr=1e-3,
            compute_dtype=torch.float32,
            device="cpu",
            pad_id=tok.pad_token_id,
            local_only=True,
            progress=False,
        )


def test_the_exact_merge_saves_and_reloads_as_a_plain_model(tiny, tmp_path):
    folder, tok, train, val, val_pairs = tiny
    result = hf.fine_tune(
        "lorakit-qlora",
        folder,
        train,
        val,
        steps=4,
        batch_size=4,
        lr=3e-2,
        compute_dtype=torch.float32,
        device="cpu",
        pad_id=tok.pad_token_id,
        warmup_steps=0,
        local_only=True,
        progress=False,
        keep_model=True,
    )
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
    assert (again - trained).abs().max().item() < 1e-4, (
        "the merged, reloaded model is the trained one"
    )
    assert hf.generate_answers(reloaded, tok, val_pairs[:1], 6) == hf.generate_answers(
        model, tok, val_pairs[:1], 6
    )


def test_bad_method_is_refused(tiny):
    folder, *_ = tiny
    with pytest.raises(ValueError, match="method must be one of"):
        hf.prepare("qlora-please", folder, torch.float32, "cpu")


# ---------------------------------------------------------------- issue 26: measuring honestly on a GPU

import contextlib  # noqa: E402
import copy  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import warnings  # noqa: E402
import weakref  # noqa: E402

from torch.optim.optimizer import register_optimizer_step_post_hook  # noqa: E402

from lorakit import memory  # noqa: E402

FT = dict(steps=2, batch_size=2, warmup_steps=0, local_only=True, progress=False)


def _run(folder, tok, train, val, method, dtype=torch.float32, lr=1e-3, **kw):
    return hf.fine_tune(
        method,
        folder,
        train,
        val,
        lr=lr,
        compute_dtype=dtype,
        device="cpu",
        pad_id=tok.pad_token_id,
        **dict(FT, **kw),
    )


def device_wide_tracker(monkeypatch):
    """What CUDA's allocator sees, on the CPU: the bytes of EVERY live model that ``hf.prepare`` made,
    not only the one being trained (track_peak on a CPU counts that model alone, so it cannot see a
    kept model). Each prepared model is remembered by a weak reference: a freed one no longer counts."""
    models = weakref.WeakSet()
    prepare = hf.prepare

    def remembered(*args, **kwargs):
        model = prepare(*args, **kwargs)
        models.add(model)
        return model

    def live():
        return memory._tensor_bytes(
            t for m in list(models) for t in list(m.parameters()) + list(m.buffers())
        )

    @contextlib.contextmanager
    def device_wide_peak(device=None, model=None):
        result, most = {"method": "test: every live model"}, [live()]
        handle = register_optimizer_step_post_hook(lambda *a: most.append(live()))
        try:
            yield result
        finally:
            handle.remove()
        result["peak_bytes"] = max(most + [live()])

    monkeypatch.setattr(hf, "prepare", remembered)
    monkeypatch.setattr(hf, "track_peak", device_wide_peak)


def test_a_kept_model_is_not_counted_in_the_peaks_of_the_other_methods(tiny, monkeypatch):
    """Issue 26 item 1: the same method measured first and last gives the same peak."""
    folder, tok, train, val, _ = tiny
    device_wide_tracker(monkeypatch)
    common = dict(
        steps=2,
        batch_size=2,
        compute_dtype=torch.float32,
        device="cpu",
        pad_id=tok.pad_token_id,
        warmup_steps=0,
        local_only=True,
        progress=False,
        lr=1e-3,
    )
    # the old notebook loop (kept model trained first) is biased: the tracker does see it
    kept = hf.fine_tune("lorakit-qlora", folder, train, val, keep_model=True, **common)
    after_kept = hf.fine_tune("lora", folder, train, val, **common)
    del kept
    gc.collect()
    alone = hf.fine_tune("lora", folder, train, val, **common)
    assert after_kept["peak_bytes"] > alone["peak_bytes"], (
        "the fake device tracker sees every live model"
    )
    # compare_methods trains the kept model last, whatever the order asked for
    first = hf.compare_methods(
        ["lora", "lorakit-qlora"], folder, train, val, keep="lorakit-qlora", **common
    )
    del first["lorakit-qlora"]["model"]
    gc.collect()
    last = hf.compare_methods(
        ["lorakit-qlora", "lora"], folder, train, val, keep="lorakit-qlora", **common
    )
    assert list(last) == ["lorakit-qlora", "lora"], "results come back in the order asked for"
    assert first["lora"]["peak_bytes"] == last["lora"]["peak_bytes"] == alone["peak_bytes"]
    assert first["lorakit-qlora"]["peak_bytes"] == last["lorakit-qlora"]["peak_bytes"]
    assert "model" in last["lorakit-qlora"] and "model" not in last["lora"]


def test_compare_methods_refuses_bad_arguments(tiny):
    folder, tok, train, val, _ = tiny
    with pytest.raises(ValueError, match="distinct names"):
        hf.compare_methods(["lora", "lora"], folder, train, val, lr=1e-3)
    with pytest.raises(ValueError, match="keep must be"):
        hf.compare_methods(["lora"], folder, train, val, lr=1e-3, keep="full")


def _non_adapter_dtypes(model):
    return {
        p.dtype
        for n, p in model.named_parameters()
        if type(p).__name__ != "Params4bit" and "lora_" not in n and not n.endswith((".A", ".B"))
    }


def test_both_qlora_stacks_keep_the_non_quantized_parts_in_the_compute_dtype(tiny):
    """Issue 26 item 2: prepare_model_for_kbit_training would cast norms/embeddings to float32."""
    pytest.importorskip("peft")
    pytest.importorskip("bitsandbytes")
    folder, *_ = tiny
    ours = hf.prepare("lorakit-qlora", folder, torch.bfloat16, "cpu", local_only=True)
    theirs = hf.prepare("bnb-peft-qlora", folder, torch.bfloat16, "cpu", local_only=True)
    assert _non_adapter_dtypes(ours) == _non_adapter_dtypes(theirs) == {torch.bfloat16}
    for model in (ours, theirs):
        adapters = {p.dtype for n, p in model.named_parameters() if p.requires_grad}
        assert adapters == {torch.float32}, "LoRA matrices train in float32 in both stacks"
    assert hf.weight_dtypes(ours) == hf.weight_dtypes(theirs) == "4-bit + bfloat16 (LoRA float32)"


def test_full_fine_tuning_under_bfloat16_keeps_float32_master_weights_that_move(tiny):
    """Issue 26 item 3: pure-bf16 AdamW at lr 2e-5 leaves most weights (all norm weights) unchanged."""
    folder, tok, train, *_ = tiny
    model = hf.prepare("full", folder, torch.bfloat16, "cpu", local_only=True)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert "autocast bfloat16" in hf.weight_dtypes(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        for m in model.modules()
        if isinstance(m, torch.nn.Linear)
    ]
    sft.train_sft(
        model,
        train,
        steps=2,
        batch_size=2,
        lr=2e-5,
        pad_id=tok.pad_token_id,
        warmup=1,
        progress=False,
    )
    for h in hooks:
        h.remove()
    assert set(seen) == {torch.bfloat16}, "the matrix products ran in bfloat16"
    moved = {
        n: (p.detach() != before[n]).float().mean().item() for n, p in model.named_parameters()
    }
    norms = [v for n, v in moved.items() if "norm" in n]
    assert norms and min(norms) == 1.0, (
        "every norm weight moved (in bfloat16 none would: 1.0 ± 2e-5 rounds to 1.0)"
    )
    total = sum(v * before[n].numel() for n, v in moved.items()) / sum(
        t.numel() for t in before.values()
    )
    assert total > 0.95, f"only {total:.1%} of the entries moved"


def test_the_merge_check_is_exact_in_float32_and_statistical_under_bfloat16(tiny, tmp_path):
    """Issue 26 items 4 and 5: bf16 branch run on the CPU; one-dtype save that loads as saved."""
    folder, tok, train, val, val_pairs = tiny
    for dtype in (torch.float32, torch.bfloat16):
        run = _run(
            folder,
            tok,
            train,
            val,
            "lorakit-qlora",
            dtype,
            lr=3e-2,
            steps=4,
            batch_size=4,
            keep_model=True,
        )
        model = run["model"]
        ids = hf.generate_ids(model, tok, val_pairs[:2], max_new_tokens=6)
        assert all(isinstance(i, int) for a in ids for i in a) and all(len(a) > 0 for a in ids)
        merged = copy.deepcopy(model)
        merge_into_dequantized(merged, dtype=torch.float32)
        out = hf.save_merged(merged, tmp_path / str(dtype), torch.float32, tok)
        assert hf.checkpoint_dtypes(out) == {"F32"}, "one dtype in the file"
        config = json.loads((out / "config.json").read_text())
        assert config.get("dtype", config.get("torch_dtype")) == "float32", "and the config says it"
        plain = hf._transformers().AutoModelForCausalLM.from_pretrained(
            str(out), local_files_only=True
        )
        assert {p.dtype for p in plain.parameters()} == {torch.float32}, (
            "from_pretrained loads it as saved"
        )
        reloaded = hf.load_model(out, torch.float32, local_only=True)
        stats = hf.merge_agreement(model, reloaded, val, tok.pad_token_id)
        same = hf.generate_ids(reloaded, tok, val_pairs[:2], max_new_tokens=6) == ids
        assert hf.merge_problems(stats, dtype, same) == [], (dtype, stats)
        if dtype == torch.float32:
            assert stats["agreement"] == 1.0 and stats["max_logit_gap"] < 1e-4 and same
        else:
            assert stats["max_logit_gap"] > 1e-4, (
                "bfloat16 compute really differs from the float32 reload"
            )
    # the checks refuse wrong work: a different model is not the merge
    other = hf.load_model(folder, torch.float32, local_only=True)
    stats = hf.merge_agreement(reloaded, other, val, tok.pad_token_id)
    assert hf.merge_problems(stats, torch.float32, False) and hf.merge_problems(
        dict(stats, agreement=0.5), torch.bfloat16
    )


def test_a_mixed_dtype_model_saved_plainly_would_not_load_as_trained(tiny, tmp_path):
    """Why save_merged exists: the plain save of a float32 merge on a bfloat16 model mixes dtypes."""
    folder, tok, train, val, _ = tiny
    run = _run(folder, tok, train, val, "lorakit-qlora", torch.bfloat16, keep_model=True)
    model = run["model"]
    merge_into_dequantized(model, dtype=torch.float32)
    model.save_pretrained(tmp_path / "plain")
    assert hf.checkpoint_dtypes(tmp_path / "plain") == {"F32", "BF16"}
    hf.save_merged(model, tmp_path / "one", torch.bfloat16)
    assert hf.checkpoint_dtypes(tmp_path / "one") == {"BF16"}
    with pytest.raises(ValueError, match="dtype must be"):
        hf.save_merged(model, tmp_path / "bad", torch.int8)


def test_bnb_peft_checkpointing_is_quiet_and_turns_the_cache_off(tiny, capfd):
    """Issue 26 item 9: no deprecation or use_reentrant warning, use_cache=False, and it trains."""
    pytest.importorskip("peft")
    pytest.importorskip("bitsandbytes")
    folder, tok, train, *_ = tiny
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = hf.prepare(
            "bnb-peft-qlora",
            folder,
            torch.float32,
            "cpu",
            gradient_checkpointing=True,
            local_only=True,
        )
        losses = sft.train_sft(
            model, train, steps=2, batch_size=2, lr=1e-3, pad_id=tok.pad_token_id, progress=False
        )
    assert not [str(w.message) for w in caught], [str(w.message) for w in caught]
    assert capfd.readouterr().err == ""
    assert model.config.use_cache is False
    assert all(l == l for l in losses)
    assert all(p.requires_grad == ("lora_" in n) for n, p in model.named_parameters()), (
        "only LoRA trains"
    )
    assert all(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n), (
        "gradients reached every adapter through the checkpointed blocks"
    )


def test_saved_activations_are_counted_without_the_weights(tiny):
    folder, tok, train, *_ = tiny
    model = hf.prepare("lora", folder, torch.float32, "cpu", local_only=True)
    batch = sft.collate(train[:2], tok.pad_token_id)
    saved = hf.saved_activation_bytes(model, batch)
    cfg = model.config
    tokens = batch["input_ids"].numel()
    # at least the logits (float32, tokens × vocab) and each layer's hidden input; far less than the weights
    assert saved >= tokens * cfg.vocab_size * 4
    assert saved < 64 * tokens * (cfg.hidden_size * cfg.num_hidden_layers * 16 + cfg.vocab_size)


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
    return (
        folder,
        tok,
        train,
        val,
        val_pairs[:4],
        sft.evaluate_sft(base, val, tok.pad_token_id),
        before,
    )


@pytest.mark.parametrize("method", hf.METHODS)
def test_fine_tuning_the_stand_in_lowers_held_out_loss_and_changes_answers(pretrained, method):
    folder, tok, train, val, shown, base_bits, before = pretrained
    result = hf.fine_tune(
        method,
        folder,
        train,
        val,
        steps=FT_STEPS,
        batch_size=4,
        lr=FT_LR[method],
        compute_dtype=torch.float32,
        device="cpu",
        pad_id=tok.pad_token_id,
        warmup_steps=2,
        local_only=True,
        progress=False,
        keep_model=True,
    )
    stopped = []
    after = hf.generate_answers(result["model"], tok, shown, max_new_tokens=16, stopped=stopped)
    print(
        f"{method}: held-out response loss {base_bits:.3f} -> {result['val_bits']:.3f} bits/token; "
        f"stopped {sum(stopped)}/{len(shown)}\n  before {before}\n  after  {after}"
    )
    assert result["val_bits"] < base_bits - FT_MARGIN_BITS, "fine-tuning taught the held-out task"
    assert all(after), (
        "every fine-tuned answer has something to read (the base often writes only blank lines)"
    )
    assert any(a != b for a, b in zip(after, before)), "at least one answer changed"
