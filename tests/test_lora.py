"""Unit tests for lorakit.lora and lorakit.adapters: the config, the layer, injection, merging, adapter files, bad inputs, PEFT."""

import math
import warnings

import pytest
import torch
import torch.nn as nn
from tiny import tiny_gpt, tiny_llama

from lorakit.adapters import adapter_state, load_adapter, save_adapter
from lorakit.lora import (
    LoRAConfig,
    LoRALinear,
    inject_lora,
    lora_layers,
    merge_lora,
    parameter_report,
    remove_lora,
    unmerge_lora,
)
from lorakit.model import GPT, GPTConfig


def tokens(seed: int = 1, shape=(2, 16)) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed))


def randomize_B(model: nn.Module, seed: int = 3) -> None:
    """B starts at zero; give it values so the adapter actually changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.B.copy_(torch.randn(layer.B.shape, generator=gen) * 0.1)


# ---------------------------------------------------------------- the layer


def test_init_equals_base_exactly_and_shapes():
    torch.manual_seed(0)
    base = nn.Linear(20, 12, bias=True)
    layer = LoRALinear(base, LoRAConfig(r=4, alpha=8))
    x = torch.randn(3, 5, 20)
    assert torch.equal(layer(x), base(x))
    assert layer.A.shape == (20, 4) and layer.B.shape == (4, 12)
    assert torch.count_nonzero(layer.B) == 0
    assert layer.A.abs().max() <= 1 / math.sqrt(20) + 1e-7  # U(±1/sqrt(in)), PEFT's init
    assert layer.A.std() > 0.3 / math.sqrt(20)  # and not degenerate
    assert layer.scaling == 2.0 and not layer.merged


def test_forward_is_the_formula_and_rslora_scaling():
    torch.manual_seed(0)
    base = nn.Linear(16, 24, bias=False)
    for rslora, scale in ((False, 3 / 4), (True, 3 / 2)):
        layer = LoRALinear(base, LoRAConfig(r=4, alpha=3, rslora=rslora))
        with torch.no_grad():
            layer.B.normal_()
        x = torch.randn(7, 16)
        want = x @ base.weight.T + (x @ layer.A @ layer.B) * scale
        assert layer.scaling == pytest.approx(scale)
        torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-6)


def test_dropout_only_on_the_lora_path():
    torch.manual_seed(0)
    base = nn.Linear(8, 8, bias=False)
    layer = LoRALinear(base, LoRAConfig(r=2, alpha=2, dropout=0.5))
    x = torch.randn(4, 8)
    layer.train()
    assert torch.equal(layer(x), base(x))  # B = 0: the dropout branch adds exactly nothing
    with torch.no_grad():
        layer.B.normal_()
    layer.eval()
    torch.testing.assert_close(layer(x), base(x) + x @ layer.A @ layer.B * layer.scaling)


def test_dtype_follows_base_or_keyword():
    base16 = nn.Linear(8, 8, bias=False).to(torch.bfloat16)
    assert LoRALinear(base16, LoRAConfig(r=2, alpha=2)).A.dtype == torch.bfloat16

    class Packed(nn.Module):  # stands in for a 4-bit layer: uint8 weight, float forward
        in_features, out_features = 8, 6

        def __init__(self):
            super().__init__()
            self.register_buffer("weight", torch.zeros(24, dtype=torch.uint8))

        def forward(self, x):
            return torch.zeros(*x.shape[:-1], 6, dtype=x.dtype)

    layer = LoRALinear(Packed(), LoRAConfig(r=2, alpha=4))
    assert layer.A.dtype == torch.get_default_dtype()
    assert (
        LoRALinear(Packed(), LoRAConfig(r=2, alpha=4), dtype=torch.float64).B.dtype == torch.float64
    )
    x = torch.randn(3, 8)
    assert torch.equal(layer(x), torch.zeros(3, 6))


def test_only_A_and_B_are_trainable():
    model = tiny_gpt()
    before = parameter_report(model)
    names = inject_lora(model, ["q_proj", "v_proj"], r=4, alpha=8)
    assert names == [f"blocks.{i}.attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.{ab}" for n in names for ab in "AB"}
    after = parameter_report(model)
    assert after["trainable"] == 4 * 4 * (32 + 32)
    assert after["total"] == before["total"] + after["trainable"]
    # a training step changes A and B only
    model.train()
    x = tokens()
    _, loss = model(x, x)
    loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)


def test_all_linear_skips_lm_head_and_full_path_targets():
    model = tiny_gpt()
    names = inject_lora(model, "all-linear", r=2, alpha=2)
    assert "lm_head" not in names and len(names) == 2 * 6
    model = tiny_gpt()
    assert inject_lora(model, ["blocks.1.mlp.up_proj"], r=2, alpha=2) == ["blocks.1.mlp.up_proj"]


def test_merge_unmerge_round_trip_and_remove():
    model = tiny_gpt()
    W0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    inject_lora(model, ["q_proj", "v_proj", "down_proj"], r=4, alpha=16)
    randomize_B(model)
    x = tokens()
    y_lora = model(x)[0]
    merge_lora(model)
    assert all(layer.merged for layer in lora_layers(model).values())
    torch.testing.assert_close(model(x)[0], y_lora, rtol=1e-5, atol=1e-5)
    layer = model.blocks[0].attn.q_proj
    w_merged = W0["blocks.0.attn.q_proj.weight"] + layer.scaling * (layer.A @ layer.B).T
    torch.testing.assert_close(layer.base.weight, w_merged)
    unmerge_lora(model)
    torch.testing.assert_close(model(x)[0], y_lora, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        layer.base.weight, W0["blocks.0.attn.q_proj.weight"], rtol=0, atol=1e-7
    )
    remove_lora(model)
    assert not lora_layers(model)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p, W0[n], rtol=0, atol=1e-7)


def test_remove_with_merge_keeps_the_update():
    model = tiny_gpt()
    inject_lora(model, ["q_proj"], r=2, alpha=2)
    randomize_B(model)
    x = tokens()
    y = model(x)[0]
    remove_lora(model, merge=True)
    assert isinstance(model.blocks[0].attn.q_proj, nn.Linear)
    torch.testing.assert_close(model(x)[0], y, rtol=1e-5, atol=1e-5)


def test_save_load_bit_exact_into_fresh_base(tmp_path):
    model = tiny_gpt()
    inject_lora(model, ["q_proj", "v_proj"], r=4, alpha=8, rslora=True)
    randomize_B(model)
    path = save_adapter(model, tmp_path / "a.safetensors")
    fresh = tiny_gpt()  # same base weights, no LoRA yet: load_adapter injects
    load_adapter(fresh, path)
    a, b = adapter_state(model), adapter_state(fresh)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (
        fresh.blocks[0].attn.q_proj.config.rslora and fresh.blocks[0].attn.q_proj.scaling == 8 / 2
    )
    x = tokens()
    assert torch.equal(model(x)[0], fresh(x)[0])
    # loading into an already injected model (switching adapters) is also bit-exact
    other = tiny_gpt()
    inject_lora(other, ["q_proj", "v_proj"], r=4, alpha=8, rslora=True)
    load_adapter(other, path)
    assert torch.equal(model(x)[0], other(x)[0])


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "kw, exc, words",
    [
        (dict(r=0, alpha=1), ValueError, ["r must be an integer >= 1", "got 0"]),
        (dict(r=True, alpha=1), TypeError, ["r must be an int", "bool"]),
        (dict(r=-2, alpha=1), ValueError, ["got -2"]),
        (dict(r=9, alpha=1), ValueError, ["min(in, out) = 8", "got 9"]),
        (dict(r=2.5, alpha=1), TypeError, ["r must be an int"]),
        (dict(r=2, alpha=0), ValueError, ["alpha must be", "got 0"]),
        (dict(r=2, alpha=-1.0), ValueError, ["alpha", "-1.0"]),
        (dict(r=2, alpha=float("nan")), ValueError, ["alpha", "nan"]),
        (
            dict(r=2, alpha=1, dropout=1.0),
            ValueError,
            ["dropout must be a finite number >= 0 and < 1", "1.0"],
        ),
        (dict(r=2, alpha=1, rslora=1), TypeError, ["rslora must be True or False"]),
        (dict(r=2, alpha=1, dropout=-0.1), ValueError, ["dropout", "-0.1"]),
    ],
)
def test_bad_hyperparameters(kw, exc, words):
    class One(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(8, 16)

    model = One()
    with pytest.raises(exc) as e:
        inject_lora(model, ["proj"], **kw)
    assert isinstance(model.proj, nn.Linear), "a refused call must leave the model unchanged"
    for w in words:
        assert w in str(e.value)


def test_config_is_one_validated_record_the_layers_share():
    config = LoRAConfig(r=4, alpha=8, targets=["q_proj"])
    assert config.targets == ("q_proj",) and config.scaling == 2.0
    assert LoRAConfig(r=16, alpha=8, rslora=True).scaling == 2.0
    with pytest.raises(AttributeError):
        config.r = 8  # frozen: a layer's settings cannot drift from its file's
    model = tiny_gpt()
    inject_lora(model, config=config)
    assert all(layer.config is config for layer in lora_layers(model).values())
    keywords = tiny_gpt()
    inject_lora(keywords, ["q_proj"], r=4, alpha=8)
    assert {layer.config for layer in lora_layers(keywords).values()} == {config}
    assert LoRALinear(nn.Linear(8, 16), config=config).config is config
    with pytest.raises(TypeError, match="either one LoRAConfig as config"):
        inject_lora(tiny_gpt(), r=2, config=config)
    with pytest.raises(TypeError, match="either one LoRAConfig as config"):
        inject_lora(tiny_gpt(), config=dict(r=2))
    with pytest.raises(ValueError, match="targets is empty"):
        LoRAConfig(targets=[])


def test_bad_base():
    class Act(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.ReLU()

    with pytest.raises(TypeError, match="in_features and out_features"):
        inject_lora(Act(), ["act"], r=2, alpha=2, layer_types=(nn.ReLU,))


def test_target_matching_nothing_lists_linears_and_changes_nothing():
    model = tiny_gpt()
    with pytest.raises(ValueError) as e:
        inject_lora(model, ["query"], r=2, alpha=2)
    assert "query" in str(e.value) and "blocks.0.attn.q_proj" in str(e.value)
    assert all(p.requires_grad for p in model.parameters())  # not frozen: nothing changed
    with pytest.raises(ValueError, match="match no linear layer"):
        inject_lora(model, ["q_proj", "qq_proj"], r=2, alpha=2)  # one bad name is enough
    with pytest.raises(ValueError, match="targets is empty"):
        inject_lora(model, [], r=2, alpha=2)
    with pytest.raises(TypeError, match="targets must be"):
        inject_lora(model, [3], r=2, alpha=2)
    assert not lora_layers(model)


def test_r_too_big_for_one_layer_changes_nothing():
    model = tiny_gpt()
    with pytest.raises(ValueError, match="min\\(in, out\\) = 32"):
        inject_lora(model, ["q_proj"], r=33, alpha=2)
    assert not lora_layers(model) and all(p.requires_grad for p in model.parameters())


def test_inject_twice_merge_twice_unmerge_unmerged():
    model = tiny_gpt()
    with pytest.raises(ValueError, match="no LoRA layers"):
        merge_lora(model)
    inject_lora(model, ["q_proj"], r=2, alpha=2)
    with pytest.raises(ValueError, match="injecting twice"):
        inject_lora(model, ["v_proj"], r=2, alpha=2)
    with pytest.raises(ValueError, match="not merged"):
        unmerge_lora(model)
    merge_lora(model)
    W = model.blocks[0].attn.q_proj.base.weight.clone()
    with pytest.raises(ValueError, match="already merged"):
        merge_lora(model)
    assert torch.equal(model.blocks[0].attn.q_proj.base.weight, W)


def test_merge_needs_a_linear_base():
    class Odd(nn.Module):
        in_features = out_features = 4

        def forward(self, x):
            return x

    model = nn.Sequential(LoRALinear(Odd(), LoRAConfig(r=2, alpha=2)))
    with pytest.raises(TypeError, match="nn.Linear base"):
        merge_lora(model)


def test_load_adapter_bad_files(tmp_path):
    model = tiny_gpt()
    inject_lora(model, ["q_proj", "v_proj"], r=4, alpha=8)
    randomize_B(model)
    good = save_adapter(model, tmp_path / "good.safetensors")
    target = tiny_gpt(seed=5)
    inject_lora(target, ["q_proj", "v_proj"], r=4, alpha=8)
    before = adapter_state(target)

    pickle_file = tmp_path / "evil.bin"
    torch.save({"x": torch.zeros(2)}, pickle_file)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_adapter(target, pickle_file)
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(ValueError, match="safetensors"):
        load_adapter(target, truncated)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_adapter(target, tmp_path / "nope.safetensors")

    small = tiny_gpt()
    inject_lora(small, ["q_proj"], r=4, alpha=8)
    with pytest.raises(ValueError) as e:
        load_adapter(small, good)
    assert "unexpected keys" in str(e.value) and "blocks.0.attn.v_proj.A" in str(e.value)

    other_r = tiny_gpt()
    inject_lora(other_r, ["q_proj", "v_proj"], r=2, alpha=8)
    with pytest.raises(ValueError, match="r=2 in the model vs 4 in the file"):
        load_adapter(other_r, good)
    other_alpha = tiny_gpt()
    inject_lora(other_alpha, ["q_proj", "v_proj"], r=4, alpha=4)
    with pytest.raises(ValueError, match="alpha"):
        load_adapter(other_alpha, good)

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(good), "pt") as f:
        meta = f.metadata()
    state = load_file(str(good))
    del state["blocks.1.attn.q_proj.B"]
    save_file(state, str(tmp_path / "missing.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match=r"missing keys \['blocks.1.attn.q_proj.B'\]"):
        load_adapter(target, tmp_path / "missing.safetensors")
    state = load_file(str(good))
    state["blocks.0.attn.q_proj.A"] = torch.zeros(32, 3)
    save_file(state, str(tmp_path / "shape.safetensors"), metadata=meta)
    with pytest.raises(
        ValueError, match=r"blocks.0.attn.q_proj.A: file \(32, 3\) vs model \(32, 4\)"
    ):
        load_adapter(target, tmp_path / "shape.safetensors")
    save_file(load_file(str(good)), str(tmp_path / "nometa.safetensors"))
    with pytest.raises(ValueError, match="not a lorakit adapter"):
        load_adapter(target, tmp_path / "nometa.safetensors")
    # a fresh model with different shapes: refused before injecting
    wide = GPT(GPTConfig(context=16, n_layer=2, n_head=2, d_model=48))
    with pytest.raises(ValueError, match="wrong shapes"):
        load_adapter(wide, good)
    assert not lora_layers(wide)

    after = adapter_state(target)
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing was half-loaded
    merge_lora(target)
    with pytest.raises(ValueError, match="unmerge_lora"):
        load_adapter(target, good)


# ---------------------------------------------------------------- Hugging Face and PEFT


def test_works_on_tiny_llama(tmp_path):
    model = tiny_llama()
    ids = tokens(shape=(2, 12))
    y0 = model(ids).logits
    names = inject_lora(model, ["q_proj", "v_proj"], r=4, alpha=8)
    assert names == [
        f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")
    ]
    assert torch.equal(model(ids).logits, y0)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        f"{n}.{ab}" for n in names for ab in "AB"
    }
    randomize_B(model)
    y1 = model(ids).logits
    assert (y1 - y0).abs().max() > 1e-3
    merge_lora(model)
    torch.testing.assert_close(model(ids).logits, y1, rtol=1e-4, atol=1e-5)
    unmerge_lora(model)
    save_adapter(model, tmp_path / "llama.safetensors")
    fresh = tiny_llama()
    load_adapter(fresh, tmp_path / "llama.safetensors")
    # (model's W0 went through merge/unmerge, so equal only up to float rounding)
    torch.testing.assert_close(fresh(ids).logits, y1, rtol=0, atol=1e-6)


def test_equals_peft_on_tiny_llama():
    peft = pytest.importorskip("peft")
    ours = tiny_llama()
    inject_lora(ours, ["q_proj", "v_proj"], r=4, alpha=8)
    randomize_B(ours)
    ref = tiny_llama()  # same seed: same base weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = peft.get_peft_model(
            ref,
            peft.LoraConfig(
                r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0
            ),
        )
    copied = 0
    with torch.no_grad():
        for name, layer in lora_layers(ours).items():
            peft_layer = ref.base_model.model.get_submodule(name)
            assert peft_layer.scaling["default"] == layer.scaling
            peft_layer.lora_A["default"].weight.copy_(layer.A.T)  # lora_A.weight = Aᵀ (r×in)
            peft_layer.lora_B["default"].weight.copy_(layer.B.T)  # lora_B.weight = Bᵀ (out×r)
            copied += 1
    assert copied == 4
    ids = tokens(shape=(2, 12))
    torch.testing.assert_close(ours(ids).logits, ref(ids).logits, rtol=0, atol=1e-6)


def test_peft_equality_on_the_course_gpt():
    peft = pytest.importorskip("peft")
    ours, ref = tiny_gpt(), tiny_gpt()
    inject_lora(ours, ["q_proj", "v_proj", "up_proj"], r=4, alpha=4, rslora=True)
    randomize_B(ours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = peft.get_peft_model(
            ref,
            peft.LoraConfig(
                r=4, lora_alpha=4, use_rslora=True, target_modules=["q_proj", "v_proj", "up_proj"]
            ),
        )
    with torch.no_grad():
        for name, layer in lora_layers(ours).items():
            peft_layer = ref.base_model.model.get_submodule(name)
            peft_layer.lora_A["default"].weight.copy_(layer.A.T)
            peft_layer.lora_B["default"].weight.copy_(layer.B.T)
    x = tokens()
    torch.testing.assert_close(ours(x)[0], ref(x)[0], rtol=0, atol=1e-6)


# ---------------------------------------------------------------- the benchmark script


def test_bench_lora_smoke(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "bench_lora.py"
    spec = importlib.util.spec_from_file_location("bench_lora", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    assert "lorakit / PEFT" in out and "merged / plain" in out


def test_the_adapter_file_stores_the_config(tmp_path):
    import json

    from safetensors import safe_open

    model = tiny_gpt()
    inject_lora(model, ["q_proj", "v_proj"], r=4, alpha=8, dropout=0.1, rslora=True)
    path = save_adapter(model, tmp_path / "a.safetensors")
    with safe_open(str(path), framework="pt") as f:
        stored = LoRAConfig(**json.loads(f.metadata()["lora_config"]))
    assert stored == LoRAConfig(
        r=4, alpha=8, dropout=0.1, rslora=True, targets=list(lora_layers(model))
    )
    fresh = tiny_gpt(seed=3)
    load_adapter(fresh, path)
    assert {layer.config for layer in lora_layers(fresh).values()} == {stored}
