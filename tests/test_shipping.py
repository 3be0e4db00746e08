"""Notebook 12: mixed-adapter batches == PEFT's adapter_names, merges == add_weighted_adapter,
Q8_0/Q4_0 by hand == gguf's bytes, a GGUF round trip, and bad inputs refused before any change."""

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
from tiny import tiny_gpt, tiny_llama

from lorakit import export, merging, serving

TARGETS = ["q_proj", "v_proj", "down_proj"]
RANKS = {"sql": 4, "math": 8, "code": 4}  # (PEFT warns on names inside "lora_", e.g. "a")


@pytest.fixture(scope="module")
def peft_llama():
    """A tiny GQA Llama (plain copy kept) and a PEFT model with three random adapters (ranks 4, 8, 4)."""
    peft = pytest.importorskip("peft")
    base = tiny_llama(num_key_value_heads=2, tie_word_embeddings=True)
    plain = copy.deepcopy(base)
    torch.manual_seed(1)
    model = None
    for name, r in RANKS.items():
        cfg = peft.LoraConfig(
            r=r, lora_alpha=2 * r, target_modules=TARGETS, init_lora_weights=False
        )
        if model is None:
            model = peft.get_peft_model(base, cfg, adapter_name=name)
        else:
            model.add_adapter(name, cfg)
    model.eval()
    return plain, model, {n: serving.peft_factors(model, n) for n in RANKS}


@pytest.mark.parametrize("mode", serving.MODES)
def test_mixed_batch_equals_peft_adapter_names(peft_llama, mode):
    plain, model, adapters = peft_llama
    ids = torch.randint(0, 256, (6, 10), generator=torch.Generator().manual_seed(0))
    rows = ["sql", "math", "__base__", "code", "sql", None]
    with torch.no_grad():
        ref = model(input_ids=ids, adapter_names=[r or "__base__" for r in rows]).logits
        ours = copy.deepcopy(plain)
        serving.attach_adapters(ours, adapters, mode)
        with serving.use_rows(ours, rows):
            got = ours(input_ids=ids).logits
        # row by row: a row with adapter j equals the model with j merged (one model per tenant)
        merged_sql = serving.merged_copy(plain, adapters["sql"])(input_ids=ids[:1]).logits
        base_row = plain(input_ids=ids).logits[2:3]  # same batch shape: the same float sums
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(got[:1], merged_sql, rtol=0, atol=1e-4)
    assert torch.equal(got[2:3], base_row), "a __base__ row is the base model's, exactly"
    assert (got[0] - got[1]).abs().max() > 1e-3, "different adapters give different rows"


def test_padded_memory_counts(peft_llama):
    plain, _, adapters = peft_llama
    per_layer = [(A.shape[0] + B.shape[1]) for A, B, _ in adapters["sql"].values()]
    assert serving.factors_nbytes(adapters["math"]) == 4 * 8 * sum(per_layer)
    assert serving.padded_nbytes(adapters) == 3 * 4 * 8 * sum(per_layer), (
        "every adapter padded to r = 8"
    )
    assert serving.model_nbytes(plain) + sum(
        map(serving.factors_nbytes, adapters.values())
    ) < 2 * serving.model_nbytes(plain)


@pytest.mark.parametrize("combination", merging.COMBINATIONS)
def test_merges_equal_add_weighted_adapter(peft_llama, combination, monkeypatch):
    _, model, adapters = peft_llama
    names = ["sql", "math"] if combination == "cat" else ["sql", "code"]
    weights, density, seed = [0.7, -0.4], (None if combination in ("linear", "cat") else 0.5), 5
    # PEFT draws the new adapter's init from the global RNG before DARE's masks: re-seed after it
    lora_model = type(model.base_model)
    inject = lora_model.inject_adapter
    monkeypatch.setattr(
        lora_model,
        "inject_adapter",
        lambda self, *a, **k: (inject(self, *a, **k), torch.manual_seed(seed))[0],
    )
    new = f"merged_{combination}"
    model.add_weighted_adapter(names, weights, new, combination_type=combination, density=density)
    theirs = serving.peft_factors(model, new)
    model.delete_adapter(new)
    ours = merging.merge_adapters(
        [adapters[n] for n in names], weights, combination, density=density, seed=seed
    )
    assert list(ours) == list(theirs)
    for path in ours:
        torch.testing.assert_close(ours[path][0], theirs[path][0], rtol=0, atol=1e-6)
        torch.testing.assert_close(ours[path][1], theirs[path][1], rtol=0, atol=1e-6)
        assert ours[path][2] == theirs[path][2] == 1.0


def test_cat_is_the_exact_weighted_sum_and_linear_is_not(peft_llama):
    _, _, adapters = peft_llama
    pair, w = [adapters["sql"], adapters["code"]], [0.5, 0.5]
    exact = merging.weighted_delta(pair, w)
    cat = merging.delta_of(merging.merge_adapters(pair, w, "cat"))
    lin = merging.delta_of(merging.merge_adapters(pair, w, "linear"))
    for path in exact:
        torch.testing.assert_close(cat[path], exact[path], rtol=0, atol=1e-6)
        assert (lin[path] - exact[path]).norm() > 0.1 * exact[path].norm(), (
            "linear adds cross terms A_i B_j"
        )


def test_bad_adapters_are_refused_before_any_change(peft_llama):
    plain, _, adapters = peft_llama
    model = copy.deepcopy(plain)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fewer = dict(list(adapters["sql"].items())[:-1])
    with pytest.raises(ValueError, match="target different layers"):
        serving.attach_adapters(model, {"sql": adapters["sql"], "x": fewer})
    other = serving.lorakit_factors(_gpt_with_lora())
    with pytest.raises(ValueError, match="another base"):
        serving.attach_adapters(model, {"gpt": other})
    wide = {p: (torch.zeros(A.shape[0] * 2, 4), B, s) for p, (A, B, s) in adapters["sql"].items()}
    with pytest.raises(ValueError, match="another base"):
        serving.attach_adapters(model, {"sql": adapters["sql"], "wide": wide})
    with pytest.raises(ValueError, match="__base__"):
        serving.attach_adapters(model, {"__base__": adapters["sql"]})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(isinstance(m, serving.MultiLoRALinear) for m in model.modules()), (
        "nothing was replaced"
    )
    with pytest.raises(ValueError, match="ranks"):
        merging.merge_adapters([adapters["sql"], adapters["math"]], [1, 1], "ties", density=0.5)
    with pytest.raises(ValueError, match="different layers"):
        merging.merge_adapters([adapters["sql"], fewer], [1, 1], "cat")
    with pytest.raises(ValueError, match="density"):
        merging.merge_adapters([adapters["sql"], adapters["code"]], [1, 1], "dare_linear")
    other_base = {
        p: (torch.zeros(A.shape[0] + 32, A.shape[1]), B, sc)
        for p, (A, B, sc) in adapters["code"].items()
    }
    with pytest.raises(ValueError, match="different bases"):
        merging.merge_adapters([adapters["sql"], other_base], [1, 1], "cat")
    with pytest.raises(ValueError, match="one weight per adapter"):
        merging.merge_adapters([adapters["sql"], adapters["code"]], [1], "linear")
    serving.attach_adapters(model, adapters)
    with pytest.raises(ValueError, match="unknown adapter"):
        with serving.use_rows(model, ["sql", "zzz"]):
            pass


def _gpt_with_lora():
    from lorakit.lora import inject_lora

    gpt = tiny_gpt()
    inject_lora(gpt, targets=["q_proj", "v_proj"], r=2, alpha=4)
    return gpt


@pytest.mark.parametrize("fmt", ["Q8_0", "Q4_0"])
def test_quantizers_equal_gguf_bytes(fmt):
    gguf = pytest.importorskip("gguf")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 256, generator=g) * 0.05
    x[0, :32] = 0.0  # an all-zero block (scale 0)
    x[1, 3], x[2, 40] = 3.0, -2.0  # one outlier of each sign
    x[3, :32] = torch.arange(32) / 31 - 0.5  # exact ties at halves
    qtype = gguf.GGMLQuantizationType[fmt]
    theirs = gguf.quants.quantize(x.numpy(), qtype)
    ours = (export.quantize_q8_0 if fmt == "Q8_0" else export.quantize_q4_0)(x)
    assert ours.dtype == torch.uint8 and np.array_equal(ours.numpy(), theirs), (
        f"{fmt} bytes differ from gguf's"
    )
    deq = (export.dequantize_q8_0 if fmt == "Q8_0" else export.dequantize_q4_0)(ours)
    assert np.array_equal(deq.numpy(), gguf.quants.dequantize(theirs, qtype))
    assert ours.shape[-1] * 8 / x.shape[-1] == export.bits_per_weight(fmt)


def test_gguf_round_trip(tmp_path):
    pytest.importorskip("gguf")
    model = tiny_llama(num_key_value_heads=2, tie_word_embeddings=True)
    path = export.write_gguf(model, tmp_path / "tiny.gguf", "Q4_0")
    keys, tensors, types = export.read_gguf(path)
    cfg = model.config
    assert (
        keys["general.architecture"] == "llama"
        and keys["llama.block_count"] == cfg.num_hidden_layers
    )
    assert keys["llama.attention.head_count_kv"] == cfg.num_key_value_heads
    state = model.state_dict()
    assert len(tensors) == len(state) - 1, "every tensor once (the tied head is the embedding)"
    q = tensors[export.gguf_name("model.layers.1.self_attn.q_proj.weight", 2)]
    assert types["blk.1.attn_q.weight"] == "Q4_0" and types["token_embd.weight"] == "F32"
    assert torch.equal(q, export.roundtrip(state["model.layers.1.self_attn.q_proj.weight"], "Q4_0"))
    assert torch.equal(
        tensors["blk.0.attn_norm.weight"], state["model.layers.0.input_layernorm.weight"]
    )


def test_update_survival_and_bad_formats():
    base = tiny_gpt(d_model=64)
    merged = copy.deepcopy(base)
    layer = merged.get_submodule("blocks.0.attn.q_proj")
    with torch.no_grad():
        layer.weight += 0.2 * torch.randn_like(layer.weight) * layer.weight.abs().mean()
    big = export.update_survival(base, merged, "Q8_0")
    assert big["layers"] == 1 and 0.9 < big["projection"] < 1.1
    # a tiny update added to the already quantized base is rounded away; 8 bits keep it
    tiny = copy.deepcopy(base)
    with torch.no_grad():
        tiny.get_submodule("blocks.0.attn.q_proj").weight += (
            1e-3 * layer.weight.abs().mean() * torch.randn_like(layer.weight)
        )
    assert export.update_survival(base, tiny, "Q4_0", into_quantized=True)["projection"] < 0.2
    assert export.update_survival(base, tiny, "Q8_0", into_quantized=True)["projection"] < 0.5
    path = "blocks.0.attn.q_proj"
    q4_into = export.quantized_copy(tiny, "Q4_0", into=base).get_submodule(path).weight
    W_q = export.roundtrip(base.get_submodule(path).weight, "Q4_0")
    meant = tiny.get_submodule(path).weight - base.get_submodule(path).weight
    assert torch.equal(q4_into, export.roundtrip(W_q + meant, "Q4_0")), (
        "into= adds the update to the quantized base"
    )
    with pytest.raises(ValueError, match="fmt must be one of"):
        export.roundtrip(layer.weight, "Q5_K")
    with pytest.raises(ValueError, match="multiple of 32"):
        export.quantize_q8_0(torch.zeros(3, 40))
    with pytest.raises(ValueError, match="no update"):
        export.update_survival(base, copy.deepcopy(base), "Q4_0")
    with pytest.raises(ValueError, match="lacks"):
        export.quantized_copy(base, "Q4_0", keep={"nope": "Q8_0"})
    assert isinstance(
        export.quantized_copy(base, "Q4_0").get_submodule("blocks.0.attn.q_proj"), nn.Linear
    )
