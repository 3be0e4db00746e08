"""lorakit.qlora: the 4-bit layer and its backward, prepare_qlora, merging, bad inputs, and
equality with PEFT + bitsandbytes on a tiny Llama built from a config."""

import copy
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from lorakit import qlora
from lorakit.lora import LoRALinear, inject_lora, lora_layers
from lorakit.model import GPT, GPTConfig
from lorakit.qlora import (
    Linear4bit,
    check_compute_dtype,
    choose_compute_dtype,
    merge_into_4bit,
    merge_into_16bit,
    prepare_qlora,
    storage_report,
)
from lorakit.quant import dequantize_4bit, quantize_4bit

ROOT = Path(__file__).resolve().parents[1]


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(context=16, n_layer=2, n_head=2, d_model=64))


def tokens(seed=0, batch=2, T=16):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (batch, T), generator=g)
    return x, torch.roll(x, -1, 1)


# ---------------------------------------------------------------- the layer


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("double_quant", [True, False])
@pytest.mark.parametrize("shape, bias", [((96, 64), False), ((33, 17), True)])
def test_forward_and_input_gradient_equal_a_linear_holding_the_dequantized_weight(
    quant_type, double_quant, shape, bias
):
    torch.manual_seed(0)
    lin = nn.Linear(shape[1], shape[0], bias=bias)
    q4 = Linear4bit.from_linear(lin, quant_type=quant_type, double_quant=double_quant)
    W = dequantize_4bit(
        quantize_4bit(lin.weight.detach(), quant_type=quant_type, double_quant=double_quant)
    )
    ref = nn.Linear(shape[1], shape[0], bias=bias)
    with torch.no_grad():
        ref.weight.copy_(W)
        if bias:
            ref.bias.copy_(lin.bias)
    x = torch.randn(3, 5, shape[1], requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    y, y_ref = q4(x), ref(x_ref)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-6)


def test_no_weight_gradient_and_nothing_dequantized_is_kept_for_backward(monkeypatch):
    torch.manual_seed(0)
    q4 = Linear4bit.from_linear(nn.Linear(128, 64, bias=False))
    assert not any(p.requires_grad for p in q4.parameters()), "the 4-bit base is frozen"
    assert all(not b.is_floating_point() or b.numel() < 128 * 64 // 8 for b in q4.buffers()), (
        "no float copy of the weight is stored"
    )
    calls = []
    real = qlora.dequantize_4bit
    monkeypatch.setattr(
        qlora, "dequantize_4bit", lambda q, dtype=None: calls.append(1) or real(q, dtype)
    )
    saved = []
    x = torch.randn(4, 128, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = q4(x)
    assert saved == [], (
        f"the 4-bit function saves no tensor for backward, saved {[t.shape for t in saved]}"
    )
    assert len(calls) == 1
    y.sum().backward()
    assert len(calls) == 2, "backward dequantizes the weight again instead of keeping it"
    assert x.grad is not None and x.grad.shape == x.shape


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_layer_weight_equals_bitsandbytes_to_the_bit(quant_type, dtype):
    """Linear4bit dequantizes with quant.dequantize_4bit: bitsandbytes' bytes and values exactly."""
    bnb = pytest.importorskip("bitsandbytes.functional")
    torch.manual_seed(0)
    lin = nn.Linear(70, 33, bias=False).to(dtype)  # 2310 weights: a partial last block
    q4 = Linear4bit.from_linear(lin, quant_type=quant_type, double_quant=False, compute_dtype=dtype)
    packed, state = bnb.quantize_4bit(lin.weight.detach(), blocksize=64, quant_type=quant_type)
    assert torch.equal(q4.packed, packed.reshape(-1)) and torch.equal(q4.absmax, state.absmax)
    assert torch.equal(q4.dequantized_weight(dtype), bnb.dequantize_4bit(packed, state))


def test_stored_bytes_are_4_127_bits_per_parameter():
    torch.manual_seed(0)
    q4 = Linear4bit.from_linear(nn.Linear(1024, 1024, bias=False), double_quant=True)
    assert q4.nbytes * 8 / (1024 * 1024) == pytest.approx(4.127, abs=2e-3)
    plain = Linear4bit.from_linear(nn.Linear(1024, 1024, bias=False), double_quant=False)
    assert plain.nbytes * 8 / (1024 * 1024) == pytest.approx(4.5, abs=1e-3)
    state = q4.state_dict()
    assert sum(t.numel() * t.element_size() for t in state.values()) == pytest.approx(
        q4.nbytes, rel=0.01
    )


def test_compute_dtype_bfloat16_on_cpu():
    torch.manual_seed(0)
    lin = nn.Linear(64, 32, bias=False)
    q4 = Linear4bit.from_linear(lin, compute_dtype=torch.bfloat16)
    x = torch.randn(2, 64)
    y = q4(x)
    assert y.dtype == torch.float32, "the output comes back in the input's dtype"
    W = q4.dequantized_weight(torch.float32)
    torch.testing.assert_close(y, x @ W.t(), rtol=3e-2, atol=3e-2)


# ---------------------------------------------------------------- prepare_qlora on the course GPT


def test_prepare_qlora_on_the_course_gpt():
    model = tiny_gpt()
    reference = copy.deepcopy(model)
    prepare_qlora(model, "all-linear", r=4, alpha=8)
    assert isinstance(model.lm_head, nn.Linear), "the output head stays 16/32-bit"
    for block in model.blocks:
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            layer = getattr(block.attn, name)
            assert isinstance(layer, LoRALinear) and isinstance(layer.base, Linear4bit)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith((".A", ".B")) for n in trainable)
    expected = sum(4 * (m.in_features + m.out_features) for m in lora_layers(model).values())
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected
    # at init (B = 0) the model equals the original with every linear weight dequantized
    with torch.no_grad():
        for name, layer in lora_layers(model).items():
            reference.get_submodule(name).weight.copy_(layer.base.dequantized_weight(torch.float32))
    x, y = tokens()
    torch.testing.assert_close(model(x)[0], reference(x)[0], rtol=1e-4, atol=1e-5)
    report = storage_report(model)
    assert report["layers"] == 12 and report["bits_per_parameter"] == pytest.approx(4.127, abs=0.01)


def test_training_moves_only_the_adapter_and_checkpointing_gives_the_same_gradients():
    plain = prepare_qlora(tiny_gpt(), ["q_proj", "v_proj"], r=4, alpha=8)
    ckpt = prepare_qlora(
        tiny_gpt(), ["q_proj", "v_proj"], r=4, alpha=8, gradient_checkpointing=True
    )
    assert all(b.checkpoint for b in ckpt.blocks)
    with torch.no_grad():  # give B a value so every path carries gradient
        for m in (plain, ckpt):
            for layer in lora_layers(m).values():
                layer.B.copy_(torch.linspace(-0.1, 0.1, layer.B.numel()).view_as(layer.B))
    x, y = tokens()
    for m in (plain, ckpt):
        m.train()
        m(x, y)[1].backward()
    for (n, p), (_, q) in zip(plain.named_parameters(), ckpt.named_parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=f"gradient of {n}")
    frozen = {n: t.clone() for n, t in plain.state_dict().items() if not n.endswith((".A", ".B"))}
    opt = torch.optim.AdamW([p for p in plain.parameters() if p.requires_grad], lr=1e-2)
    opt.step()
    for n, t in plain.state_dict().items():
        if n in frozen:
            assert torch.equal(t, frozen[n]), f"{n} is frozen and must not change"


def test_prepare_qlora_frees_each_16bit_linear_as_it_is_replaced():
    import weakref

    model = tiny_gpt()
    originals = [
        weakref.ref(m)
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and n != "lm_head"
    ]
    prepare_qlora(model, "all-linear", r=4, alpha=8)
    assert all(r() is None for r in originals), (
        "no original 16-bit Linear may outlive the preparation"
    )


# ---------------------------------------------------------------- merging


def test_merge_into_16bit_is_16bit_base_plus_adapter_not_the_trained_model_and_4bit_moves_outputs():
    base = tiny_gpt()
    model = prepare_qlora(copy.deepcopy(base), "all-linear", r=4, alpha=8)
    torch.manual_seed(1)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.B.normal_(0, 0.02)
    x, _ = tokens()
    with torch.no_grad():
        trained = model(x)[0]
        # 16-bit base + the same adapter, unmerged: what merging into 16 bits must equal
        unmerged16 = copy.deepcopy(base)
        inject_lora(unmerged16, "all-linear", r=4, alpha=8)
        for name, layer in lora_layers(model).items():
            lora_layers(unmerged16)[name].A.copy_(layer.A)
            lora_layers(unmerged16)[name].B.copy_(layer.B)
        merged16 = merge_into_16bit(model, base)
        torch.testing.assert_close(merged16(x)[0], unmerged16(x)[0], rtol=1e-5, atol=1e-5)
        off16 = (merged16(x)[0] - trained).abs().max().item()
        assert all(
            isinstance(m, nn.Linear) for n, m in merged16.named_modules() if n.endswith("proj")
        )
        merged4 = copy.deepcopy(model)
        names = merge_into_4bit(merged4)
        assert len(names) == 12 and not lora_layers(merged4)
        moved = (merged4(x)[0] - trained).abs().max().item()
    assert moved > 1e-4, "requantizing W + dW changes the outputs"
    assert off16 > 1e-3, (
        "the adapter was trained against Ŵ: on the 16-bit base it is a different model"
    )
    assert storage_report(merged4)["bits_per_parameter"] == pytest.approx(4.127, abs=0.01)
    with pytest.raises(ValueError, match="no LoRA layers on a 4-bit base"):
        merge_into_4bit(merged4)
    with pytest.raises(ValueError, match="not the model the adapter was trained on"):
        merge_into_16bit(model, GPT(GPTConfig(context=16, n_layer=2, n_head=2, d_model=32)))


# ---------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_before_anything_changes():
    model = tiny_gpt()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="match no linear layer"):
        prepare_qlora(model, ["query"], r=4, alpha=8)
    with pytest.raises(ValueError, match="match no linear layer"):
        prepare_qlora(model, ["lm_head"], r=4, alpha=8)
    with pytest.raises(ValueError, match="compute_dtype"):
        prepare_qlora(model, "all-linear", r=4, alpha=8, compute_dtype=torch.int8)
    with pytest.raises(ValueError, match="quant_type"):
        prepare_qlora(model, "all-linear", r=4, alpha=8, quant_type="int8")
    with pytest.raises(ValueError, match="targets is empty"):
        prepare_qlora(model, [], r=4, alpha=8)
    with pytest.raises(ValueError, match="alpha must be"):
        prepare_qlora(model, "all-linear", r=4, alpha=0)
    assert all(isinstance(b.attn.q_proj, nn.Linear) for b in model.blocks)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    prepare_qlora(model, "all-linear", r=4, alpha=8)
    with pytest.raises(ValueError, match="quantizing twice"):
        prepare_qlora(model, "all-linear", r=4, alpha=8)
    with pytest.raises(TypeError, match="already a Linear4bit"):
        Linear4bit.from_linear(model.blocks[0].attn.q_proj.base)
    with pytest.raises(ValueError, match="no nn.Linear layers"):
        prepare_qlora(
            nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4)), "all-linear", r=1, alpha=1
        )
    with pytest.raises(TypeError):
        prepare_qlora("gpt", "all-linear", r=4, alpha=8)
    with pytest.raises(ValueError, match="compute_dtype"):
        check_compute_dtype(torch.float64, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_on_a_gpu_without_it_is_refused():
    # native support only: with its defaults is_bf16_supported() says True on a T4 (emulation)
    ok = choose_compute_dtype("cuda") == torch.bfloat16
    if ok:
        assert check_compute_dtype(torch.bfloat16, "cuda") == torch.bfloat16
    else:
        with pytest.raises(ValueError, match="bfloat16"):
            check_compute_dtype(torch.bfloat16, "cuda")


# ---------------------------------------------------------------- Hugging Face, PEFT, bitsandbytes

LLAMA = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
)


def tiny_llama(seed=0):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA)).eval()


def test_prepare_qlora_on_a_hugging_face_llama_with_checkpointing():
    model = prepare_qlora(tiny_llama(), "all-linear", r=4, alpha=8, gradient_checkpointing=True)
    assert isinstance(model.lm_head, nn.Linear)
    assert len(lora_layers(model)) == 2 * 7
    model.train()
    x, _ = tokens(T=12)
    out = model(input_ids=x, labels=x)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)


def _bnb_peft_model(base, tmp_path, r, alpha):
    """PEFT LoRA on a bitsandbytes 4-bit (nf4, double quant, fp32 compute) copy of ``base``.

    The ecosystem's own path (save, then from_pretrained with BitsAndBytesConfig) when it works
    on this machine; otherwise replace each Linear by bnb's Linear4bit by hand.
    """
    bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed")
    peft = pytest.importorskip("peft", reason="peft is not installed")
    import transformers

    try:
        base.save_pretrained(tmp_path)
        config = transformers.BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        )
        ref = transformers.LlamaForCausalLM.from_pretrained(
            tmp_path, quantization_config=config, dtype=torch.float32, device_map="cpu"
        )
    except Exception:  # noqa: BLE001 - fall back to building the same layers by hand
        ref = copy.deepcopy(base)
        for name, m in list(ref.named_modules()):
            if isinstance(m, nn.Linear) and not name.endswith("lm_head"):
                layer = bnb.nn.Linear4bit(
                    m.in_features,
                    m.out_features,
                    bias=False,
                    compute_dtype=torch.float32,
                    compress_statistics=True,
                    quant_type="nf4",
                )
                layer.weight = bnb.nn.Params4bit(
                    m.weight.data.clone(),
                    requires_grad=False,
                    compress_statistics=True,
                    quant_type="nf4",
                )
                parent, _, child = name.rpartition(".")
                setattr(ref.get_submodule(parent), child, layer.to("cpu"))
    assert isinstance(ref.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear")
    return peft.get_peft_model(ref, config).eval()


def test_equals_peft_and_bitsandbytes_on_a_tiny_llama(tmp_path):
    base = tiny_llama()
    ours = prepare_qlora(copy.deepcopy(base), "all-linear", r=4, alpha=8).eval()
    ref = _bnb_peft_model(base, tmp_path, r=4, alpha=8)
    import bitsandbytes.functional as bnb_functional

    torch.manual_seed(2)
    peft_layers = {
        n: m
        for n, m in ref.named_modules()
        if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})
    }
    assert len(peft_layers) == len(lora_layers(ours)) == 14
    with torch.no_grad():
        for name, layer in lora_layers(ours).items():
            layer.B.normal_(0, 0.05)  # a non-zero adapter, so the LoRA path is compared too
            theirs = peft_layers["base_model.model." + name]
            theirs.lora_A["default"].weight.copy_(layer.A.t())
            theirs.lora_B["default"].weight.copy_(layer.B.t())
            # the same 4-bit codes: packed bytes are computed from the exact absmax in both
            packed = theirs.base_layer.weight.data.reshape(-1)
            assert torch.equal(packed, layer.base.packed.reshape(-1)), (
                f"{name}: packed bytes differ"
            )
            W_bnb = bnb_functional.dequantize_4bit(
                theirs.base_layer.weight.data, theirs.base_layer.weight.quant_state
            )
            # double-quantized constants may round one 8-bit code apart (bnb's CPU lookup table)
            torch.testing.assert_close(
                layer.base.dequantized_weight(torch.float32),
                W_bnb.float(),
                rtol=0,
                atol=2e-2 * W_bnb.abs().max().item(),
            )
        x, _ = tokens(T=12)
        ours_logits = ours(input_ids=x).logits
        ref_logits = ref(input_ids=x).logits
    scale = ref_logits.abs().max().item()
    err = (ours_logits - ref_logits).abs().max().item()
    assert err < 1e-2 * scale, (
        f"lorakit QLoRA vs PEFT + bitsandbytes: max |Δlogit| {err:.3g} (scale {scale:.3g})"
    )


# ---------------------------------------------------------------- the GPU benchmark's CPU smoke size


def test_bench_smoke_runs_on_cpu():
    bench = _load_bench()
    results = bench.main(["--smoke"])
    assert results["device"]
    runs = results["runs"]
    assert "lorakit_qlora" in runs and "bf16_lora" in runs
    for name, run in runs.items():
        if run.get("skipped"):
            continue
        assert run["loss"] == pytest.approx(runs["bf16_lora"]["loss"], rel=0.2), name
        assert run["peak_bytes"] > 0 and run["step_seconds"] > 0


def _load_bench():
    spec = importlib.util.spec_from_file_location(
        "bench_qlora_gpu", ROOT / "bench" / "bench_qlora_gpu.py"
    )
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_qlora_gpu"] = bench
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.parametrize(
    "gpu, native_bf16, expected",
    [("Tesla T4", False, torch.float32), ("NVIDIA A100-SXM4-80GB", True, torch.bfloat16)],
)
def test_bench_compute_dtype_on_a_simulated_gpu(monkeypatch, gpu, native_bf16, expected):
    """A T4 emulates bfloat16, so is_bf16_supported() says True by default: the bench must not use it."""
    bench = _load_bench()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: gpu)
    monkeypatch.setattr(
        torch.cuda,
        "is_bf16_supported",
        lambda including_emulation=True: native_bf16 or including_emulation,
    )
    device, dtype, shape, name = bench.settings(bench.parse([]))
    assert device.type == "cuda" and name == gpu and shape["hidden_size"] == 4096
    assert dtype == expected


def test_bench_peft_setup_frees_each_16bit_linear_as_it_is_replaced():
    """No reference to the replaced 16-bit layers survives the preparation (weakrefs die at once)."""
    pytest.importorskip("bitsandbytes")
    pytest.importorskip("peft")
    import gc
    import weakref

    bench = _load_bench()
    model = bench.build_llama(bench.SMOKE_SHAPE, torch.device("cpu"), torch.float32, seed=0)
    alive = []
    originals = [
        weakref.ref(m)
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and "lm_head" not in n
    ]
    real_setattr = nn.Module.__setattr__

    def spy(
        self, name, value
    ):  # at each swap: the layer being replaced is alive, earlier ones are not
        real_setattr(self, name, value)
        if type(value).__name__ == "Linear4bit":  # reference counting frees at once: no gc needed
            alive.append(sum(r() is not None for r in originals))

    args = bench.parse(["--smoke"])
    nn.Module.__setattr__ = spy
    try:
        bench.setup_peft_bnb(model, args, torch.float32)
    finally:
        nn.Module.__setattr__ = real_setattr
    n = len(originals)
    assert alive[:n] == list(range(n, 0, -1)), f"16-bit layers alive at each swap: {alive[:n]}"
    gc.collect()
    assert all(r() is None for r in originals), "no 16-bit layer survives the preparation"
