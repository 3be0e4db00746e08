"""Unit tests for lorakit.siblings: serial adapters, prompt tuning, P-tuning v1, prefix tuning,
P-tuning v2 — shapes, start-equal-to-base, gradients only on the method's parameters, save/load
through safetensors, bad inputs, and equality with PEFT on a tiny Llama."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from tiny import tiny_gpt, tiny_llama

from lorakit import siblings as S
from lorakit.model import GPT, GPTConfig
from lorakit.quiet import quiet_import


def tokens(seed: int = 1, shape=(3, 12)) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed))


BUILDERS = {
    "adapter": lambda m: S.add_adapters(m, 4),
    "prompt_tuning": lambda m: S.add_prompt_tuning(m, 3),
    "p_tuning_mlp": lambda m: S.add_p_tuning(m, 3, hidden=8),
    "p_tuning_lstm": lambda m: S.add_p_tuning(m, 3, hidden=8, encoder="lstm"),
    "prefix_tuning": lambda m: S.add_prefix_tuning(m, 3, hidden=8),
    "p_tuning_v2": lambda m: S.add_p_tuning_v2(m, 3),
    "ia3": lambda m: S.add_ia3(m),
}


def perturb(model, seed=5):
    """Move every trainable parameter off its init, so a test sees the method actually act."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)


# ---------------------------------------------------------------- the GPT's forward from embeddings


def test_forward_from_embeddings_equals_gpt_forward_bit_for_bit():
    gpt, idx = tiny_gpt(), tokens()
    assert torch.equal(S.gpt_logits_from_embeddings(gpt, gpt.tok_emb(idx)), gpt(idx)[0])


# ---------------------------------------------------------------- shapes, start, gradients


@pytest.mark.parametrize("name", BUILDERS)
def test_shapes_and_gradients_only_on_the_method(name):
    base = tiny_gpt()
    model = BUILDERS[name](copy.deepcopy(base))
    idx = tokens()
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 12, 256) and loss.ndim == 0
    loss.backward()
    base_names = set(dict(base.named_parameters()))
    for n, p in model.named_parameters():
        plain = n.replace("base.", "", 1) if n.startswith("base.") else n
        plain = plain.replace(".base.", ".")
        if plain in base_names:
            assert not p.requires_grad and p.grad is None, (
                f"{n} belongs to the base and must stay frozen"
            )
        else:
            assert p.requires_grad and p.grad is not None, (
                f"{n} belongs to the method and must get a gradient"
            )
    assert S.trainable_state(model), "the method must have trainable parameters"


def test_adapters_start_equal_to_the_base_exactly_and_count_parameters():
    base, idx = tiny_gpt(), tokens()
    model = S.add_adapters(copy.deepcopy(base), 4)
    assert torch.equal(model(idx)[0], base(idx)[0]), "up = 0: a fresh adapter is the identity"
    d, b, L = 32, 4, 2
    assert sum(t.numel() for t in S.trainable_state(model).values()) == L * 2 * (
        d * b + b + b * d + d
    )
    assert len(S.trainable_state(S.add_adapters(tiny_gpt(), 4, where=("mlp",)))) == L * 4


def test_adapter_is_the_hand_computation():
    gpt = tiny_gpt()
    model = S.add_adapters(copy.deepcopy(gpt), 4)
    perturb(model)
    block = model.blocks[0]
    x = torch.randn(2, 5, 32)
    h = block.attn.base(x)
    Wd, bd, Wu, bu = (
        block.attn.down.weight,
        block.attn.down.bias,
        block.attn.up.weight,
        block.attn.up.bias,
    )
    want = h + F.gelu(h @ Wd.T + bd) @ Wu.T + bu  # h + up(gelu(down(h)))
    assert torch.allclose(block.attn(x), want, atol=1e-6)


@pytest.mark.parametrize("name", ["prompt_tuning", "p_tuning_mlp", "prefix_tuning", "p_tuning_v2"])
def test_virtual_token_methods_do_not_start_equal_and_leave_the_base_intact(name):
    """Virtual tokens take attention mass from the start: unlike adapters/LoRA they cannot start
    exactly at the base. The base's own weights are untouched by adding them."""
    base, idx = tiny_gpt(), tokens()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = BUILDERS[name](copy.deepcopy(base))
    assert not torch.allclose(model(idx)[0], base(idx)[0])
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())


def test_virtual_tokens_take_positions():
    gpt = tiny_gpt()
    assert S.add_prompt_tuning(copy.deepcopy(gpt), 5).cfg.context == 16 - 5
    assert S.add_p_tuning_v2(copy.deepcopy(gpt), 5).cfg.context == 16 - 5
    for model in (
        S.add_prompt_tuning(copy.deepcopy(gpt), 5),
        S.add_p_tuning_v2(copy.deepcopy(gpt), 5),
    ):
        with pytest.raises(ValueError, match="context"):
            model(tokens(shape=(1, 12)))


@pytest.mark.parametrize("hidden", [None, 4])
def test_prefix_from_real_text_is_that_text_as_context(hidden):
    """Li & Liang's init: the base's own keys/values for P real tokens. Then the prefixed model
    computes exactly what the base computes on [those tokens; text] at the text's positions."""
    gpt, idx = tiny_gpt(), tokens(shape=(2, 10))
    text = tokens(seed=9, shape=(4,))
    model = S.add_prefix_tuning(copy.deepcopy(gpt), 4, hidden=hidden, init_tokens=text)
    with torch.no_grad():
        want = gpt(torch.cat([text.expand(2, -1), idx], dim=1))[0][:, 4:]
        assert torch.allclose(model(idx)[0], want, atol=1e-4)
    with pytest.raises(ValueError, match="init_tokens"):
        S.add_p_tuning_v2(tiny_gpt(), 4, init_tokens=text[:3])


def test_prefix_attention_is_the_hand_computation():
    torch.manual_seed(0)
    B, H, T, P, hd = 2, 3, 5, 4, 8
    q, k, v = torch.randn(B, H, T, hd), torch.randn(B, H, T, hd), torch.randn(B, H, T, hd)
    pk, pv = torch.randn(B, H, P, hd), torch.randn(B, H, P, hd)
    K, V = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
    scores = q @ K.transpose(-1, -2) / math.sqrt(hd)
    blocked = torch.ones(T, P + T, dtype=torch.bool).triu(P + 1)  # row t sees columns <= P + t
    want = scores.masked_fill(blocked, -float("inf")).softmax(-1) @ V
    assert torch.allclose(S.prefix_attention(q, k, v, pk, pv), want, atol=1e-5)


def test_one_batch_can_serve_several_tasks():
    """Row i with its own prompt / prefix gives what row i alone with that prompt gives."""
    gpt, idx = tiny_gpt(), tokens(shape=(2, 10))
    pt = S.add_prompt_tuning(copy.deepcopy(gpt), 3)
    prompts = torch.randn(2, 3, 32) * 0.05
    mixed = pt(idx, prompts=prompts)[0]
    for i in range(2):
        with torch.no_grad():
            pt.prompt.embedding.weight.copy_(prompts[i])
        assert torch.allclose(mixed[i], pt(idx[i : i + 1])[0][0], atol=1e-5)
    pre = S.add_p_tuning_v2(copy.deepcopy(gpt), 3)
    kv = pre.prefix_encoder().detach()
    rows = torch.stack([kv, kv * 0.5])  # (B, L, 2, H, P, hd)
    mixed = pre(idx, prefix=rows)[0]
    assert torch.allclose(mixed[0], pre(idx[:1])[0][0], atol=1e-5)
    with torch.no_grad():
        pre.prefix_encoder.embedding.weight.mul_(0.5)
    assert torch.allclose(mixed[1], pre(idx[1:])[0][0], atol=1e-5)


# ---------------------------------------------------------------- save / load


@pytest.mark.parametrize("name", BUILDERS)
def test_save_load_round_trip(name, tmp_path):
    model = BUILDERS[name](tiny_gpt())
    perturb(model)
    path = S.save_sibling(model, tmp_path / f"{name}.safetensors")
    back = S.load_sibling(tiny_gpt(), path)
    idx = tokens()
    assert torch.equal(back(idx)[0], model(idx)[0])
    assert type(back) is type(model)


def test_load_refuses_a_file_for_another_base_and_leaves_it_unchanged(tmp_path):
    path = S.save_sibling(S.add_p_tuning_v2(tiny_gpt(), 3), tmp_path / "a.safetensors")
    torch.manual_seed(0)
    other = GPT(GPTConfig(context=16, n_layer=3, n_head=2, d_model=32))
    before = copy.deepcopy(other.state_dict())
    with pytest.raises(ValueError, match="does not fit"):
        S.load_sibling(other, path)
    assert not any(isinstance(m, S.PrefixAttention) for m in other.modules())
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
    with pytest.raises(ValueError, match="not a lorakit sibling"):
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(1)}, str(tmp_path / "b.safetensors"))
        S.load_sibling(tiny_gpt(), tmp_path / "b.safetensors")


# ---------------------------------------------------------------- bad inputs, raised before any change


@pytest.mark.parametrize(
    "call, err, words",
    [
        (lambda m: S.add_adapters(m, 0), ValueError, "bottleneck"),
        (lambda m: S.add_adapters(m, -3), ValueError, "bottleneck"),
        (lambda m: S.add_adapters(m, 2.0), TypeError, "bottleneck"),
        (lambda m: S.add_adapters(m, True), TypeError, "bottleneck"),
        (lambda m: S.add_adapters(m, 4, where=("ffn",)), ValueError, "where"),
        (lambda m: S.add_prefix_tuning(m, 0), ValueError, "n_virtual"),
        (lambda m: S.add_p_tuning_v2(m, -1), ValueError, "n_virtual"),
        (lambda m: S.add_prefix_tuning(m, 4, hidden=0), ValueError, "hidden"),
        (lambda m: S.add_p_tuning_v2(m, 16), ValueError, "context"),
        (lambda m: S.add_prompt_tuning(m, 16), ValueError, "context"),
        (lambda m: S.add_prompt_tuning(m, 0), ValueError, "n_virtual"),
        (lambda m: S.add_p_tuning(m, 4, hidden=8, encoder="gru"), ValueError, "encoder"),
        (lambda m: S.add_p_tuning(m, 40, hidden=8), ValueError, "context"),
        (lambda m: S.add_prompt_tuning(m, 3, init=torch.zeros(2, 32)), ValueError, "init"),
    ],
)
def test_bad_input_raises_before_the_model_changes(call, err, words):
    gpt = tiny_gpt()
    before = copy.deepcopy(gpt.state_dict())
    with pytest.raises(err, match=words):
        call(gpt)
    assert all(p.requires_grad for p in gpt.parameters()), "nothing may be frozen by a failed call"
    assert all(torch.equal(before[k], v) for k, v in gpt.state_dict().items())
    assert not any(isinstance(m, (S.SerialAdapter, S.PrefixAttention)) for m in gpt.modules())


def test_wrong_model_type_and_double_application():
    with pytest.raises(TypeError, match="GPT"):
        S.add_adapters(torch.nn.Linear(3, 3), 2)
    with pytest.raises(TypeError, match="GPT"):
        S.add_prompt_tuning(torch.nn.Linear(3, 3), 2)
    gpt = S.add_adapters(tiny_gpt(), 2)
    with pytest.raises(ValueError, match="already"):
        S.add_p_tuning_v2(gpt, 2)
    with pytest.raises(ValueError, match="no sibling"):
        S.save_sibling(tiny_gpt(), "unused.safetensors")


# ---------------------------------------------------------------- equality with PEFT on a tiny Llama


def _peft_pair(config, build_ours):
    """(ours, PEFT's) on two copies of one tiny Llama, with PEFT's virtual-token parameters copied
    into ours by name (the parameter modules use PEFT's names)."""
    peft = quiet_import("peft")
    llama = tiny_llama()
    theirs = peft.get_peft_model(copy.deepcopy(llama), config).eval()
    ours = build_ours(copy.deepcopy(llama)).eval()
    encoder = theirs.prompt_encoder["default"]
    own = ours.prompt if isinstance(ours, S.PromptTuned) else ours.prefix_encoder
    perturb(theirs)  # move off the init so that the comparison is not between zeros
    missing, unexpected = own.load_state_dict(encoder.state_dict(), strict=True)
    assert not missing and not unexpected
    return ours, theirs


def test_prompt_tuning_equals_peft():
    peft = quiet_import("peft")
    cfg = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5)
    ours, theirs = _peft_pair(cfg, lambda m: S.add_prompt_tuning(m, 5))
    idx = tokens(shape=(2, 9))
    with torch.no_grad():
        want = theirs(input_ids=idx, attention_mask=torch.ones_like(idx)).logits[:, 5:]
        got = ours(idx)[0]
    assert got.shape == want.shape == (2, 9, 256)
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("encoder", ["MLP", "LSTM"])
def test_p_tuning_equals_peft(encoder):
    peft = quiet_import("peft")
    cfg = peft.PromptEncoderConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=4,
        encoder_hidden_size=16,
        encoder_reparameterization_type=encoder,
    )
    ours, theirs = _peft_pair(
        cfg, lambda m: S.add_p_tuning(m, 4, hidden=16, encoder=encoder.lower())
    )
    idx = tokens(shape=(2, 9))
    with torch.no_grad():
        want = theirs(input_ids=idx, attention_mask=torch.ones_like(idx)).logits[:, 4:]
        got = ours(idx)[0]
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("hidden", [None, 24])
def test_prefix_tuning_equals_peft(hidden):
    peft = quiet_import("peft")
    cfg = peft.PrefixTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=6,
        prefix_projection=hidden is not None,
        encoder_hidden_size=hidden or 64,
    )
    ours, theirs = _peft_pair(cfg, lambda m: S.add_prefix_tuning(m, 6, hidden=hidden))
    idx = tokens(shape=(2, 9))
    with torch.no_grad():
        want = theirs(input_ids=idx, attention_mask=torch.ones_like(idx)).logits
        got = ours(idx)[0]
    assert got.shape == want.shape == (2, 9, 256)
    assert torch.allclose(got, want, atol=1e-5)


def test_gpt_prefix_equals_hf_style_cache_math():
    """The GPT path (PrefixAttention) and the Llama path (DynamicCache) share PrefixEncoder: on the
    GPT, a prefix is the same as keys/values placed before the sequence with the hand mask."""
    gpt = tiny_gpt()
    model = S.add_p_tuning_v2(copy.deepcopy(gpt), 3)
    perturb(model)
    kv = model.prefix_encoder()  # (L, 2, H, P, hd)
    assert kv.shape == (2, 2, 2, 3, 16)
    x = torch.randn(2, 7, 32)
    attn = model.base.blocks[0].attn
    attn.prefix = (kv[0, 0], kv[0, 1])
    got = attn(x)
    attn.prefix = None
    a = attn.base
    heads = lambda t: t.view(2, 7, 2, 16).transpose(1, 2)  # noqa: E731
    q, k, v = heads(a.q_proj(x)), heads(a.k_proj(x)), heads(a.v_proj(x))
    y = S.prefix_attention(q, k, v, kv[0, 0].expand(2, -1, -1, -1), kv[0, 1].expand(2, -1, -1, -1))
    assert torch.allclose(got, a.o_proj(y.transpose(1, 2).reshape(2, 7, 32)), atol=1e-6)
    with pytest.raises(RuntimeError, match="without a prefix"):
        attn(x)


@pytest.mark.parametrize("hidden", [None, 24])
def test_prefix_tuning_on_grouped_query_attention_equals_peft(hidden):
    """Issue 27 (12c): SmolLM2, Llama 3, Mistral and Qwen share key/value heads between query
    heads; the prefix is sized by num_key_value_heads × head_dim, as PEFT's PrefixTuningConfig."""
    peft, transformers = quiet_import("peft"), quiet_import("transformers")
    cfg = transformers.LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    llama = transformers.LlamaForCausalLM(cfg).eval()
    config = peft.PrefixTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=6,
        prefix_projection=hidden is not None,
        encoder_hidden_size=hidden or 64,
    )
    theirs = peft.get_peft_model(copy.deepcopy(llama), config).eval()
    ours = S.add_prefix_tuning(copy.deepcopy(llama), 6, hidden=hidden).eval()
    encoder = theirs.prompt_encoder["default"]
    assert {n: p.shape for n, p in ours.prefix_encoder.named_parameters()} == {
        n: p.shape for n, p in encoder.named_parameters()
    }, "the same table, sized by the KV heads"
    d_kv = 2 * 16  # 2 key/value heads × head_dim 16, not d_model = 64
    width = 2 * 2 * d_kv  # layers × (key, value) × d_kv
    assert ours.prefix_encoder.embedding.weight.shape == (
        (6, width) if hidden is None else (6, d_kv)
    )
    assert ours.prefix_encoder().shape == (2, 2, 2, 6, 16)  # (L, 2, H_kv, P, head_dim)
    perturb(theirs)
    ours.prefix_encoder.load_state_dict(encoder.state_dict(), strict=True)
    idx = tokens(shape=(2, 9))
    with torch.no_grad():
        want = theirs(input_ids=idx, attention_mask=torch.ones_like(idx)).logits
        got = ours(idx)[0]
    assert torch.allclose(got, want, atol=1e-5)


def test_hf_prefix_follows_an_explicit_head_dim():
    """Some configs set head_dim apart from hidden_size / heads (Qwen3, Gemma): K/V follow head_dim."""
    transformers = quiet_import("transformers")
    cfg = transformers.LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
    )
    llama = transformers.LlamaForCausalLM(cfg).eval()
    model = S.add_p_tuning_v2(llama, 3)
    assert model.prefix_encoder().shape == (1, 2, 2, 3, 8)
    assert model(tokens(shape=(2, 5)))[0].shape == (2, 5, 256)


def test_compare_latency_times_under_inference_mode():
    """Issue 27 (12a): with autograd on, a trainable base records a graph that a frozen merged copy
    does not; every timed call must run with autograd off (inference mode)."""
    seen = []

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))  # trainable, as the base is in a notebook

        def forward(self, idx):
            seen.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))
            return idx.float() * self.w

    S.compare_latency({"probe": Probe()}, 1, 4, repeats=2, calls=3)
    assert len(seen) == 1 + 2 * 3, "one warm-up call, then repeats × calls"
    assert all(inference and not grad for inference, grad in seen)


def test_compare_latency_returns_a_median_per_model():
    gpt = tiny_gpt()
    out = S.compare_latency(
        {"base": gpt, "adapter": S.add_adapters(copy.deepcopy(gpt), 2)}, 2, 8, repeats=2, calls=1
    )
    assert set(out) == {"base", "adapter"} and all(t > 0 for t in out.values())
    with pytest.raises(ValueError, match="batch_size"):
        S.compare_latency({"base": gpt}, 0, 8)


# ---------------------------------------------------------------- (IA)³, the mergeable bonus


def test_ia3_starts_equal_merges_exactly_and_counts():
    base, idx = tiny_gpt(), tokens()
    model = S.add_ia3(copy.deepcopy(base))
    assert torch.equal(model(idx)[0], base(idx)[0]), "l = 1: (IA)³ starts at the base exactly"
    assert sum(t.numel() for t in S.trainable_state(model).values()) == 2 * (32 + 32 + 4 * 32)
    perturb(model)
    x = torch.randn(2, 5, 32)
    k = model.blocks[0].attn.k_proj
    assert torch.allclose(k(x), (x @ k.base.weight.T) * k.l, atol=1e-6)
    down = model.blocks[0].mlp.down_proj
    h = torch.randn(2, 5, 128)
    assert torch.allclose(down(h), (h * down.l) @ down.base.weight.T, atol=1e-6)
    with torch.no_grad():
        before = model(idx)[0]
    S.merge_ia3(model)
    assert not any(isinstance(m, S.IA3Linear) for m in model.modules())
    assert torch.allclose(model(idx)[0], before, atol=1e-5)
    assert S.forward_flops(model, 8) == S.forward_flops(base, 8), (
        "merged (IA)³ does the base's arithmetic"
    )
    with pytest.raises(ValueError, match="no"):
        S.merge_ia3(model)
    with pytest.raises(ValueError, match="subset"):
        S.add_ia3(tiny_gpt(), targets=("k_proj",), feedforward=("down_proj",))
    with pytest.raises(ValueError, match="match no linear"):
        S.add_ia3(tiny_gpt(), targets=("w_q",), feedforward=())


def test_ia3_equals_peft():
    peft = quiet_import("peft")
    llama = tiny_llama()
    theirs = peft.get_peft_model(
        copy.deepcopy(llama),
        peft.IA3Config(
            task_type="CAUSAL_LM",
            target_modules=["k_proj", "v_proj", "down_proj"],
            feedforward_modules=["down_proj"],
        ),
    )
    ours = S.add_ia3(copy.deepcopy(llama))
    perturb(theirs)
    with torch.no_grad():
        for name, layer in ours.named_modules():
            if isinstance(layer, S.IA3Linear):
                layer.l.copy_(
                    theirs.base_model.model.get_submodule(name).ia3_l["default"].flatten()
                )
    idx = tokens(shape=(2, 9))
    with torch.no_grad():
        assert torch.allclose(ours(idx).logits, theirs(input_ids=idx).logits, atol=1e-5)
