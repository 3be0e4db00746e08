"""Training a real model well (notebook 09 §10): schedule, accumulation, clipping, optimizer choice,
length-grouped batches, the end-of-turn token, the adapter in PEFT's format over a 4-bit base."""

import copy
import math

import pytest
import torch
from tiny import tiny_gpt
from torch.optim.optimizer import register_optimizer_step_pre_hook

from lorakit import recipe, sft
from lorakit.memory import track_peak

GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def examples(n=24, seed=0, vocab=256, low=6, high=16):
    """Random (ids, labels) pairs of varied length, the first third of each a masked prompt."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        T = int(torch.randint(low, high + 1, (1,), generator=gen))
        ids = torch.randint(1, vocab, (T,), generator=gen)
        labels = ids.clone()
        labels[: T // 3] = sft.IGNORE
        out.append((ids, labels))
    return out


# ---------------------------------------------------------------- schedule


def test_warmup_then_constant_is_todays_schedule():
    lrs = [recipe.learning_rate(s, 20, 1e-3, warmup=4) for s in range(20)]
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3]) and set(lrs[4:]) == {1e-3}
    assert recipe.learning_rate(0, 5, 1e-3, warmup=0) == 1e-3


def test_cosine_values():
    lr, steps, warmup = 1e-3, 21, 1
    lrs = [recipe.learning_rate(s, steps, lr, warmup, "cosine") for s in range(steps)]
    assert lrs[1] == pytest.approx(lr), "the decay starts at the peak"
    assert lrs[11] == pytest.approx(lr / 2), "half way down at the middle"
    assert lrs[-1] == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * 19 / 20)))
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:])), "strictly decreasing after the warm-up"
    floor = [recipe.learning_rate(s, steps, lr, 0, "cosine", min_ratio=0.1) for s in range(steps)]
    assert min(floor) > 0.1 * lr
    assert floor[-1] == pytest.approx(lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 20 / 21))))


def test_cosine_equals_transformers_after_warmup():
    transformers = pytest.importorskip("transformers")
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1e-3)
    sched = transformers.get_cosine_schedule_with_warmup(
        opt, num_warmup_steps=5, num_training_steps=40
    )
    theirs = []
    for _ in range(40):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours = [recipe.learning_rate(s, 40, 1e-3, 5, "cosine") for s in range(40)]
    assert ours[5:] == pytest.approx(theirs[5:], rel=1e-9, abs=1e-15)
    assert theirs[0] == 0 and ours[0] > 0, "ours lets the first step move"


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="schedule"):
        recipe.learning_rate(0, 10, 1e-3, schedule="linear")
    with pytest.raises(ValueError, match="min_ratio"):
        recipe.learning_rate(0, 10, 1e-3, schedule="cosine", min_ratio=2)


def test_train_sft_follows_the_schedule():
    record = {}
    sft.train_sft(
        tiny_gpt(),
        examples(),
        steps=6,
        batch_size=4,
        lr=1e-3,
        pad_id=0,
        warmup=2,
        progress=False,
        schedule="cosine",
        record=record,
    )
    assert record["lr"] == pytest.approx(
        [recipe.learning_rate(s, 6, 1e-3, 2, "cosine") for s in range(6)]
    )


# ---------------------------------------------------------------- accumulation and clipping


def test_accumulating_k_micro_batches_equals_one_batch_k_times_larger():
    data = examples(36)
    a, b = tiny_gpt(), tiny_gpt()
    la = sft.train_sft(
        a,
        data,
        steps=3,
        batch_size=2,
        lr=1e-3,
        pad_id=0,
        warmup=1,
        progress=False,
        accumulation_steps=3,
    )
    lb = sft.train_sft(b, data, steps=3, batch_size=6, lr=1e-3, pad_id=0, warmup=1, progress=False)
    assert la == pytest.approx(lb, rel=1e-5), "same loss: every labelled token weighs the same"
    moved = max(
        (p0 - p1).abs().max().item() for p0, p1 in zip(tiny_gpt().parameters(), b.parameters())
    )
    gap = max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters()))
    assert moved > 1e-3 and gap < 1e-3 * moved, f"same update ({gap:.2e} apart, moved {moved:.2e})"


def test_accumulation_is_not_a_larger_learning_rate():
    data = examples(36)
    a, b = tiny_gpt(), tiny_gpt()
    sft.train_sft(
        a,
        data,
        steps=3,
        batch_size=2,
        lr=1e-3,
        pad_id=0,
        warmup=1,
        progress=False,
        accumulation_steps=3,
    )
    sft.train_sft(b, data, steps=3, batch_size=2, lr=1e-3, pad_id=0, warmup=1, progress=False)
    gap = max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters()))
    assert gap > 1e-5, "k micro-batches per step see other data than one micro-batch per step"


def test_clipping_bounds_the_gradient_the_optimizer_sees():
    seen = []

    def pre_step(opt, args, kwargs):
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        seen.append(
            torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g) for g in grads])
            ).item()
        )

    handle = register_optimizer_step_pre_hook(pre_step)
    try:
        record = {}
        sft.train_sft(
            tiny_gpt(),
            examples(),
            steps=3,
            batch_size=4,
            lr=1e-3,
            pad_id=0,
            progress=False,
            max_grad_norm=0.05,
            record=record,
        )
        sft.train_sft(
            tiny_gpt(),
            examples(),
            steps=3,
            batch_size=4,
            lr=1e-3,
            pad_id=0,
            progress=False,
            record=(free := {}),
        )
    finally:
        handle.remove()
    clipped, unclipped = seen[:3], seen[3:]
    assert all(n <= 0.05 * (1 + 1e-4) for n in clipped)
    assert record["grad_norm"][0] == pytest.approx(unclipped[0], rel=1e-4), (
        "the norm before clipping is recorded"
    )
    assert min(record["grad_norm"]) > 0.05 and free["grad_norm"] == []
    with pytest.raises(ValueError, match="max_grad_norm"):
        sft.train_sft(
            tiny_gpt(), examples(), steps=1, batch_size=4, lr=1e-3, pad_id=0, max_grad_norm=-1
        )
    with pytest.raises(ValueError, match="accumulation_steps"):
        sft.train_sft(
            tiny_gpt(), examples(), steps=1, batch_size=4, lr=1e-3, pad_id=0, accumulation_steps=0
        )


def test_default_options_train_as_before():
    """The defaults are the course's old loop: AdamW, warm-up then constant, no clipping, random batches."""
    data = examples()
    model = tiny_gpt()
    ref = copy.deepcopy(model)
    record = {}
    losses = sft.train_sft(
        model,
        data,
        steps=2,
        batch_size=4,
        lr=1e-3,
        pad_id=0,
        warmup=2,
        progress=False,
        record=record,
    )
    opt = torch.optim.AdamW(
        [p for p in ref.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0
    )
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0)).tolist()
    ref.train()
    for step in range(2):
        opt.param_groups[0]["lr"] = 1e-3 * (step + 1) / 2
        loss = sft.response_loss(
            ref, sft.collate([data[i] for i in order[4 * step : 4 * step + 4]], 0)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert losses[step] == pytest.approx(loss.item(), rel=1e-5)
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
    assert record["optimizer"] == "adamw" and record["optimizer_why"] == ""


# ---------------------------------------------------------------- the optimizer


def test_the_optimizer_choice():
    assert recipe.choose_optimizer("adamw", "cuda") == ("adamw", "")
    assert recipe.choose_optimizer("paged_adamw_8bit", "cuda", bitsandbytes_available=True) == (
        "paged_adamw_8bit",
        "",
    )
    assert recipe.choose_optimizer("adamw_8bit", "cuda:0", bitsandbytes_available=True) == (
        "adamw_8bit",
        "",
    )
    for device in ("cpu", "mps"):
        name, why = recipe.choose_optimizer("paged_adamw_8bit", device, bitsandbytes_available=True)
        assert name == "adamw" and "CUDA" in why and device in why
    name, why = recipe.choose_optimizer("paged_adamw_8bit", "cuda", bitsandbytes_available=False)
    assert name == "adamw" and "pip install bitsandbytes" in why
    with pytest.raises(ValueError, match="optimizer must be one of"):
        recipe.choose_optimizer("adam8", "cpu")


def test_the_cuda_optimizer_is_built_by_the_same_function():
    bnb = pytest.importorskip("bitsandbytes")
    params = [torch.nn.Parameter(torch.zeros(8, 8))]
    opt, name, why = recipe.make_optimizer(params, "paged_adamw_8bit", 1e-3, "cuda")
    assert isinstance(opt, bnb.optim.PagedAdamW8bit) and name == "paged_adamw_8bit" and why == ""
    opt, name, _ = recipe.make_optimizer(params, "adamw_8bit", 1e-3, "cuda")
    assert isinstance(opt, bnb.optim.AdamW8bit)
    opt, name, why = recipe.make_optimizer(params, "paged_adamw_8bit", 1e-3, "cpu")
    assert type(opt) is torch.optim.AdamW and name == "adamw" and why


def test_on_the_cpu_the_8bit_request_trains_with_the_fallback():
    record = {}
    losses = sft.train_sft(
        tiny_gpt(),
        examples(),
        steps=3,
        batch_size=4,
        lr=1e-2,
        pad_id=0,
        progress=False,
        optimizer="paged_adamw_8bit",
        record=record,
    )
    assert record["optimizer"] == "adamw" and "CUDA" in record["optimizer_why"] and len(losses) == 3


def test_optimizer_state_bytes():
    big, small = (
        torch.zeros(1000, 16),
        torch.zeros(100),
    )  # 16,000 values (8-bit), 100 (< min_8bit_size)
    assert recipe.optimizer_state_bytes([big, small], "adamw") == 8 * 16100
    assert (
        recipe.optimizer_state_bytes([big, small], "paged_adamw_8bit")
        == 2 * (16000 + 4 * 63) + 8 * 100
    )
    assert recipe.optimizer_state_bytes([big], "adamw_8bit") < 0.26 * recipe.optimizer_state_bytes(
        [big], "adamw"
    )


def test_the_adamw_states_are_counted_in_the_measured_peak():
    model = tiny_gpt()
    params = [p for p in model.parameters() if p.requires_grad]
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    with track_peak(device="cpu", model=model) as peak:
        sft.train_sft(model, examples(), steps=1, batch_size=4, lr=1e-3, pad_id=0, progress=False)
    states = recipe.optimizer_state_bytes(params, "adamw")
    assert peak["peak_bytes"] >= weights + 4 * sum(p.numel() for p in params) + states


# ---------------------------------------------------------------- padding


def test_padding_share_by_hand():
    assert recipe.padding_share([1, 3], [0, 1], 2) == pytest.approx(1 / 3)
    assert recipe.padding_share([1, 3, 3, 1], [0, 1, 2, 3], 2) == pytest.approx(1 / 3)
    assert recipe.padding_share([1, 3, 3, 1], [0, 3, 1, 2], 2) == 0
    assert recipe.padding_share([1, 3, 3, 1], [0, 1, 2, 3], 1) == 0


def test_length_grouped_order_is_a_permutation_with_less_padding():
    lengths = [len(ids) for ids, _ in examples(400, low=5, high=200)]
    order = recipe.length_grouped_order(lengths, 8, seed=0)
    assert sorted(order) == list(range(400))
    assert max(lengths[i] for i in order[:8]) == max(lengths), "the longest batch comes first"
    random = torch.randperm(400, generator=torch.Generator().manual_seed(0)).tolist()
    grouped, shuffled = (
        recipe.padding_share(lengths, order, 8),
        recipe.padding_share(lengths, random, 8),
    )
    assert grouped < 0.25 * shuffled
    assert order != recipe.length_grouped_order(lengths, 8, seed=1), "the seed still shuffles"


def test_train_sft_records_the_padding_it_trained_on():
    data = examples(64, low=2, high=16)
    rec_random, rec_grouped = {}, {}
    sft.train_sft(
        tiny_gpt(),
        data,
        steps=4,
        batch_size=8,
        lr=1e-3,
        pad_id=0,
        progress=False,
        record=rec_random,
    )
    sft.train_sft(
        tiny_gpt(),
        data,
        steps=4,
        batch_size=8,
        lr=1e-3,
        pad_id=0,
        progress=False,
        record=rec_grouped,
        group_by_length=True,
    )
    assert rec_grouped["padding_share"] < rec_random["padding_share"]


# ---------------------------------------------------------------- the end-of-turn token


@pytest.fixture(scope="module")
def chatml(tmp_path_factory):
    pytest.importorskip("transformers")
    from lorakit import hf

    folder = hf.build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
    return folder, hf.load_tokenizer(folder, local_only=True)


def gemma_style(tokenizer):
    """The ChatML tokenizer given Gemma's turn markers, EOS and template: built offline."""
    tok = copy.deepcopy(tokenizer)
    tok.add_special_tokens({"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"})
    tok.add_tokens(["<start_of_turn>", "<end_of_turn>"], special_tokens=True)
    tok.chat_template = GEMMA_TEMPLATE
    return tok


def test_end_of_turn_of_chatml_is_im_end(chatml):
    _, tok = chatml
    assert tok.convert_ids_to_tokens(recipe.end_of_turn_id(tok)) == "<|im_end|>"


def test_end_of_turn_of_gemma_is_not_its_eos(chatml):
    tok = gemma_style(chatml[1])
    eot = recipe.end_of_turn_id(tok)
    assert tok.convert_ids_to_tokens(eot) == "<end_of_turn>" and eot != tok.eos_token_id
    pair = sft.docstring_pairs("train", 60)[0]
    ids, labels = sft.chat_example(pair, tok, 256, end_id=eot)
    assert ids[-1] == eot and labels[-1] == eot, "the answer ends where the template ends a turn"
    ids, _ = sft.chat_example(pair, tok, 256)
    assert ids[-1] == tok.eos_token_id, "by default: EOS, as before"


def test_end_of_turn_falls_back_to_eos_and_refuses_no_template(chatml):
    tok = copy.deepcopy(chatml[1])
    tok.chat_template = "{% for message in messages %}{{ message['content'] }}\n{% endfor %}"
    assert recipe.end_of_turn_id(tok) == tok.eos_token_id
    tok.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        recipe.end_of_turn_id(tok)


# ---------------------------------------------------------------- the adapter, in PEFT's format, over 4 bits


def test_the_adapter_loads_in_peft_over_a_bitsandbytes_4bit_base(chatml, tmp_path):
    pytest.importorskip("peft")
    pytest.importorskip("bitsandbytes")
    import json

    from lorakit import hf, quantload
    from lorakit.lora import lora_layers

    folder, tok = chatml
    model = quantload.load_qlora(folder, r=4, alpha=8, local_only=True)
    train = [sft.chat_example(p, tok, 160) for p in sft.docstring_pairs("train", 60)[:16]]
    sft.train_sft(
        model,
        train,
        steps=3,
        batch_size=4,
        lr=1e-2,
        pad_id=tok.pad_token_id,
        warmup=1,
        progress=False,
    )
    assert all(layer.B.abs().max() > 0 for layer in lora_layers(model).values()), (
        "the adapter has trained"
    )
    out = recipe.save_adapter_for_peft(model, tmp_path / "adapter", folder)
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["task_type"] == "CAUSAL_LM" and cfg["base_model_name_or_path"] == str(folder)

    peft_model = recipe.load_peft_over_4bit(folder, out, torch.float32, "cpu", local_only=True)
    assert type(peft_model).__name__ == "PeftModelForCausalLM"
    assert any(
        type(m).__name__ == "Linear4bit" and "bitsandbytes" in type(m).__module__
        for m in peft_model.modules()
    ), "the base is bitsandbytes' 4-bit"
    ids = hf.chat_prompt_ids(tok, sft.docstring_pairs("val", 60)[0])
    with torch.no_grad():
        ours = model(input_ids=ids).logits
        theirs = peft_model(input_ids=ids).logits
        with peft_model.disable_adapter():
            base = peft_model(input_ids=ids).logits
    # bitsandbytes' CPU backend re-lays its 4-bit weight out for its CPU kernel, with bfloat16 block
    # constants (not double-quantized): the same model up to that rounding, far below the adapter's effect
    gap, effect = (ours - theirs).abs().max().item(), (ours - base).abs().max().item()
    assert gap < 0.02 * effect, (
        f"PEFT over 4 bits computes our model ({gap:.1e} apart; the adapter moves {effect:.1e})"
    )
    layer = lora_layers(model)["model.layers.0.self_attn.q_proj"]
    loaded = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    assert torch.equal(loaded.lora_A["default"].weight, layer.A.T) and torch.equal(
        loaded.lora_B["default"].weight, layer.B.T
    )
    assert loaded.scaling["default"] == layer.scaling


# ---------------------------------------------------------------- through hf.fine_tune


def test_fine_tune_passes_the_options_on_and_reports_them(chatml):
    pytest.importorskip("peft")
    from lorakit import hf

    folder, tok = chatml
    train = [sft.chat_example(p, tok, 160) for p in sft.docstring_pairs("train", 60)[:24]]
    val = train[:4]
    options = dict(
        accumulation_steps=2,
        max_grad_norm=1.0,
        schedule="cosine",
        optimizer="paged_adamw_8bit",
        group_by_length=True,
    )
    run = hf.fine_tune(
        "lorakit-qlora",
        folder,
        train,
        val,
        steps=5,
        batch_size=2,
        lr=1e-3,
        compute_dtype=torch.float32,
        device="cpu",
        pad_id=tok.pad_token_id,
        local_only=True,
        progress=False,
        train_options=options,
    )
    training = run["training"]
    assert (
        run["status"] == "ok"
        and training["optimizer"] == "adamw"
        and "CUDA" in training["optimizer_why"]
    )
    assert len(training["grad_norm"]) == 5 and training["lr"][-1] < training["lr"][-2]
    plain = hf.fine_tune(
        "lorakit-qlora",
        folder,
        train,
        val,
        steps=5,
        batch_size=2,
        lr=1e-3,
        compute_dtype=torch.float32,
        device="cpu",
        pad_id=tok.pad_token_id,
        local_only=True,
        progress=False,
    )
    assert (
        plain["training"]["grad_norm"] == []
        and plain["training"]["lr"][-1] == plain["training"]["lr"][-2]
    )
    with pytest.raises(ValueError, match="not options of train_sft"):
        hf.fine_tune(
            "lorakit-qlora",
            folder,
            train,
            val,
            steps=1,
            batch_size=2,
            lr=1e-3,
            compute_dtype=torch.float32,
            device="cpu",
            pad_id=tok.pad_token_id,
            local_only=True,
            train_options=dict(steps=5),
        )
