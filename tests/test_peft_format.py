"""Adapters in PEFT's format: lorakit -> PeftModel.from_pretrained and PEFT -> lorakit."""

import json
import warnings

import pytest
import torch
from tiny import tiny_llama

from lorakit.adapters import (
    PEFT_CONFIG,
    PEFT_WEIGHTS,
    adapter_state,
    load_peft_adapter,
    save_peft_adapter,
)
from lorakit.lora import inject_lora, lora_layers

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")


def ids():
    return torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))


def trained_like(model, seed=3):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.B.copy_(torch.randn(layer.B.shape, generator=gen) * 0.1)


def test_saved_folder_loads_in_peft_with_equal_outputs(tmp_path):
    ours = tiny_llama()
    inject_lora(ours, ["q_proj", "v_proj", "down_proj"], r=4, alpha=16, rslora=True)
    trained_like(ours)
    folder = save_peft_adapter(ours, tmp_path / "adapter", base_model_name_or_path="tiny-llama")
    cfg = json.loads((folder / PEFT_CONFIG).read_text())
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 16 and cfg["use_rslora"] is True
    assert cfg["base_model_name_or_path"] == "tiny-llama"
    from safetensors.torch import load_file

    state = load_file(str(folder / PEFT_WEIGHTS))
    key = "base_model.model.model.layers.0.self_attn.q_proj"
    assert state[f"{key}.lora_A.weight"].shape == (4, 64)  # Aᵀ: r×in
    assert state[f"{key}.lora_B.weight"].shape == (64, 4)  # Bᵀ: out×r
    assert torch.equal(state[f"{key}.lora_A.weight"], ours.model.layers[0].self_attn.q_proj.A.T)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = peft.PeftModel.from_pretrained(tiny_llama(), str(folder))
    ref.eval()
    n_lora = sum(1 for n, _ in ref.named_modules() if n.endswith("lora_A.default"))
    assert n_lora == 6
    torch.testing.assert_close(ref(ids()).logits, ours(ids()).logits, rtol=0, atol=1e-6)


def test_peft_saved_folder_loads_into_lorakit(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = peft.get_peft_model(
            tiny_llama(), peft.LoraConfig(r=8, lora_alpha=8, target_modules=["q_proj", "k_proj"])
        )
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    ref.eval()
    ref.save_pretrained(str(tmp_path / "from_peft"))

    ours = tiny_llama()
    names = load_peft_adapter(ours, tmp_path / "from_peft")  # injects, then copies
    assert sorted(names) == sorted(
        f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "k_proj")
    )
    assert ours.model.layers[1].self_attn.k_proj.config.r == 8
    torch.testing.assert_close(ours(ids()).logits, ref(ids()).logits, rtol=0, atol=1e-6)

    # round trip: lorakit -> PEFT format -> lorakit is bit-exact
    save_peft_adapter(ours, tmp_path / "again")
    back = tiny_llama()
    load_peft_adapter(back, tmp_path / "again")
    a, b = adapter_state(ours), adapter_state(back)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_course_gpt_round_trip_through_peft(tmp_path):
    from lorakit.model import GPT, GPTConfig

    torch.manual_seed(0)
    ours = GPT(GPTConfig(context=16, n_layer=2, n_head=2, d_model=32)).eval()
    base_state = {k: v.clone() for k, v in ours.state_dict().items()}
    inject_lora(ours, "all-linear", r=2, alpha=4)
    trained_like(ours)
    save_peft_adapter(ours, tmp_path / "gpt")
    plain = GPT(GPTConfig(context=16, n_layer=2, n_head=2, d_model=32))
    plain.load_state_dict(base_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = peft.PeftModel.from_pretrained(plain.eval(), str(tmp_path / "gpt"))
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ref(x)[0], ours(x)[0], rtol=0, atol=1e-6)


def test_bad_peft_folders(tmp_path):
    ours = tiny_llama()
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_peft_adapter(ours, tmp_path)
    inject_lora(ours, ["q_proj"], r=4, alpha=8)
    save_peft_adapter(ours, tmp_path / "a")
    cfg = json.loads((tmp_path / "a" / PEFT_CONFIG).read_text())
    target = tiny_llama()
    inject_lora(target, ["q_proj"], r=2, alpha=8)
    with pytest.raises(ValueError, match="r=2 in the model vs 4 in the file"):
        load_peft_adapter(target, tmp_path / "a")
    cfg["use_dora"] = True
    (tmp_path / "a" / PEFT_CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="use_dora"):
        load_peft_adapter(tiny_llama(), tmp_path / "a")
    cfg["use_dora"] = False
    (tmp_path / "a" / PEFT_CONFIG).write_text(json.dumps(cfg))
    (tmp_path / "a" / PEFT_WEIGHTS).write_bytes(b"not a safetensors file at all")
    fresh = tiny_llama()
    with pytest.raises(ValueError, match="safetensors"):
        load_peft_adapter(fresh, tmp_path / "a")
    assert not lora_layers(fresh)
    with pytest.raises(ValueError, match="no LoRA layers"):
        save_peft_adapter(fresh, tmp_path / "b")
