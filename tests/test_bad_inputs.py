"""Reliability: a table of bad inputs across the public API, and files that try to run code.

Each row calls one public function with one wrong argument and expects a specific exception type
whose message names the problem. None may return a silent wrong result or a NaN.
"""

import math
import os
import pickle

import pytest
import torch
import torch.nn as nn

from lorakit import adapters, data, lora, lowrank, memory, qlora, quant, train
from lorakit.model import GPT, GPTConfig

CFG = GPTConfig(context=16, n_layer=1, n_head=2, d_model=16)
W = torch.randn(8, 6)
GEN = torch.Generator().manual_seed(0)
U8 = torch.zeros(100, dtype=torch.uint8)


def gpt():
    torch.manual_seed(0)
    return GPT(CFG)


def gpt_with_lora(**kw):
    m = gpt()
    lora.inject_lora(m, ["q_proj", "v_proj"], r=2, alpha=4, **kw)
    return m


def merged():
    m = gpt_with_lora()
    lora.merge_lora(m)
    return m


def nan_at(shape, index):
    x = torch.randn(shape)
    x[index] = float("nan")
    return x


class OneLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 4)


class NoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 2, 1)


CASES = [
    # data
    ("unknown corpus", lambda: data.load_corpus("wiki"), ValueError, r"unknown corpus 'wiki'"),
    (
        "max_bytes 0",
        lambda: data.load_corpus("code", 0),
        ValueError,
        r"max_bytes \(or None\) must be an integer >= 1",
    ),
    (
        "batch_size 0",
        lambda: data.get_batch(U8, 0, 4, GEN),
        ValueError,
        r"batch_size must be an integer >= 1",
    ),
    (
        "context 0",
        lambda: data.get_batch(U8, 2, 0, GEN),
        ValueError,
        r"context must be an integer >= 1",
    ),
    (
        "context too long",
        lambda: data.get_batch(U8, 2, 200, GEN),
        ValueError,
        r"fewer than context",
    ),
    (
        "val_fraction 0",
        lambda: data.train_val_split(U8, 0.0),
        ValueError,
        r"val_fraction must be between 0 and 1",
    ),
    # model and train
    (
        "config context 0",
        lambda: GPTConfig(context=0),
        ValueError,
        r"GPTConfig.context must be an integer >= 1",
    ),
    (
        "heads do not divide",
        lambda: GPTConfig(d_model=10, n_head=3),
        ValueError,
        r"divisible by n_head",
    ),
    (
        "steps 0",
        lambda: train.train(gpt(), U8, steps=0),
        ValueError,
        r"steps must be an integer >= 1",
    ),
    (
        "lr negative",
        lambda: train.train(gpt(), U8, steps=1, lr=-1.0),
        ValueError,
        r"lr must be a finite number > 0",
    ),
    (
        "eval n_batches 0",
        lambda: train.evaluate(gpt(), U8, n_batches=0),
        ValueError,
        r"n_batches must be an integer >= 1",
    ),
    (
        "nothing trainable",
        lambda: train.train(gpt().requires_grad_(False), U8, steps=1),
        ValueError,
        r"no trainable parameters",
    ),
    (
        "unknown base setting",
        lambda: train.base_model(epochs=1),
        ValueError,
        r"unknown base_model settings \['epochs'\]",
    ),
    # lowrank
    (
        "truncate r 0",
        lambda: lowrank.truncate(W, 0),
        ValueError,
        r"r \(at most min\(m, n\) = 6 for a 8×6 matrix\) must be an integer in 1\.\.6",
    ),
    (
        "truncate r too big",
        lambda: lowrank.truncate(W, 7),
        ValueError,
        r"r \(at most min\(m, n\) = 6 for a 8×6 matrix\) must be an integer in 1\.\.6, got 7",
    ),
    (
        "truncate 1-D",
        lambda: lowrank.truncate(torch.randn(5), 1),
        ValueError,
        r"must be a 2-D matrix",
    ),
    (
        "truncate not a tensor",
        lambda: lowrank.truncate([[1.0]], 1),
        TypeError,
        r"must be a torch.Tensor",
    ),
    (
        "tail_error bad norm",
        lambda: lowrank.tail_error(torch.tensor([2.0, 1.0]), 1, norm="nuclear"),
        ValueError,
        r"norm must be 'fro' or 'spectral'",
    ),
    (
        "energy of zero",
        lambda: lowrank.energy(torch.zeros(3, 3), 1),
        ValueError,
        r"undefined for the zero matrix",
    ),
    (
        "phi i out of range",
        lambda: lowrank.subspace_similarity(torch.randn(10, 4), torch.randn(10, 4), 5, 1),
        ValueError,
        r"i \(at most the rank of A1, 4\) must be an integer in 1\.\.4",
    ),
    (
        "phi shapes differ",
        lambda: lowrank.subspace_similarity(torch.randn(10, 4), torch.randn(12, 4), 1, 1),
        ValueError,
        r"same input size",
    ),
    # lora
    # (checked where a user hands them over: LoRAConfig and inject_lora; the layer itself is bare)
    (
        "LoRA r 0",
        lambda: lora.inject_lora(OneLinear(), ["proj"], r=0, alpha=1),
        ValueError,
        r"r must be",
    ),
    (
        "LoRA r > min(in,out)",
        lambda: lora.inject_lora(OneLinear(), ["proj"], r=5, alpha=1),
        ValueError,
        r"min\(in, out\) = 4",
    ),
    ("LoRA alpha 0", lambda: lora.LoRAConfig(r=2, alpha=0), ValueError, r"alpha must be"),
    (
        "LoRA alpha NaN",
        lambda: lora.LoRAConfig(r=2, alpha=math.nan),
        ValueError,
        r"alpha must be a finite",
    ),
    (
        "LoRA dropout 1",
        lambda: lora.inject_lora(OneLinear(), ["proj"], r=2, alpha=1, dropout=1.0),
        ValueError,
        r"dropout must be a finite number >= 0 and < 1",
    ),
    ("LoRA r float", lambda: lora.LoRAConfig(r=2.5, alpha=1), TypeError, r"r must be an int"),
    (
        "targets match nothing",
        lambda: lora.inject_lora(gpt(), ["query"], r=2, alpha=1),
        ValueError,
        r"q_proj",
    ),
    (
        "targets empty",
        lambda: lora.inject_lora(gpt(), [], r=2, alpha=1),
        ValueError,
        r"targets is empty",
    ),
    (
        "inject twice",
        lambda: lora.inject_lora(gpt_with_lora(), ["q_proj"], r=2, alpha=1),
        ValueError,
        r"(?i)already",
    ),
    ("merge twice", lambda: lora.merge_lora(merged()), ValueError, r"already merged"),
    ("unmerge unmerged", lambda: lora.unmerge_lora(gpt_with_lora()), ValueError, r"not merged"),
    ("merge without LoRA", lambda: lora.merge_lora(gpt()), ValueError, r"no LoRA layers"),
    (
        "save without LoRA",
        lambda: adapters.save_adapter(gpt(), "/tmp/never.safetensors"),
        ValueError,
        r"no LoRA layers",
    ),
    (
        "load missing file",
        lambda: adapters.load_adapter(gpt_with_lora(), "/nonexistent/a.safetensors"),
        FileNotFoundError,
        r"does not exist",
    ),
    # quant
    (
        "quantize int tensor",
        lambda: quant.quantize_4bit(torch.ones(64, dtype=torch.int32)),
        TypeError,
        r"float32, bfloat16 or float16",
    ),
    (
        "quantize NaN",
        lambda: quant.quantize_4bit(nan_at((4, 64), (2, 37))),
        ValueError,
        r"(?i)nan at index \(2, 37\)",
    ),
    (
        "quantize Inf",
        lambda: quant.quantize_4bit(torch.tensor([1.0, math.inf])),
        ValueError,
        r"(?i)inf",
    ),
    (
        "blocksize 48",
        lambda: quant.quantize_4bit(torch.randn(64), blocksize=48),
        ValueError,
        r"positive power of two.*48",
    ),
    (
        "blocksize 0",
        lambda: quant.quantize_4bit(torch.randn(64), blocksize=0),
        ValueError,
        r"positive power of two",
    ),
    ("empty tensor", lambda: quant.quantize_4bit(torch.empty(0)), ValueError, r"empty tensor"),
    (
        "unknown quant_type",
        lambda: quant.quantize_4bit(torch.randn(64), quant_type="nf3"),
        ValueError,
        r"quant_type must be one of",
    ),
    (
        "dequantize a tensor",
        lambda: quant.dequantize_4bit(torch.randn(4)),
        TypeError,
        r"Quantized4bit",
    ),
    # qlora
    (
        "qlora targets nothing",
        lambda: qlora.prepare_qlora(gpt(), ["nope"], r=2, alpha=4),
        ValueError,
        r"match no linear layer",
    ),
    (
        "qlora no Linear",
        lambda: qlora.prepare_qlora(NoLinear(), r=2, alpha=4),
        ValueError,
        r"no nn.Linear layers",
    ),
    (
        "qlora twice",
        lambda: qlora.prepare_qlora(qlora.prepare_qlora(gpt(), r=2, alpha=4), r=2, alpha=4),
        ValueError,
        r"quantizing twice",
    ),
    (
        "qlora bad quant_type",
        lambda: qlora.prepare_qlora(gpt(), r=2, alpha=4, quant_type="int3"),
        ValueError,
        r"quant_type must be one of",
    ),
    (
        "qlora int compute dtype",
        lambda: qlora.prepare_qlora(gpt(), r=2, alpha=4, compute_dtype=torch.int8),
        ValueError,
        r"compute_dtype must be one of",
    ),
    (
        "Linear4bit twice",
        lambda: qlora.Linear4bit.from_linear(qlora.Linear4bit.from_linear(nn.Linear(64, 8))),
        TypeError,
        r"quantizing twice",
    ),
    # memory
    (
        "memory unknown model",
        lambda: memory.estimate_memory("8B", "qlora"),
        ValueError,
        r"model must be one of",
    ),
    (
        "memory unknown method",
        lambda: memory.estimate_memory("7B", "adapter"),
        ValueError,
        r"method must be one of",
    ),
    (
        "memory r 0",
        lambda: memory.estimate_memory("7B", "lora", r=0),
        ValueError,
        r"r \(at most .*\) must be an integer in 1\.\.",
    ),
]


def test_the_table_is_broad():
    assert len(CASES) >= 40
    modules = {c[1].__code__.co_names[0] for c in CASES}
    assert {"data", "train", "lowrank", "lora", "quant", "qlora"} <= modules, modules


@pytest.mark.parametrize("name, call, exc, match", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_a_clear_error(name, call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_failed_inject_leaves_the_model_unchanged():
    m = gpt()
    before = [type(mod).__name__ for mod in m.modules()]
    with pytest.raises(ValueError):
        lora.inject_lora(m, ["q_proj", "no_such_layer"], r=2, alpha=1)
    assert [type(mod).__name__ for mod in m.modules()] == before
    assert all(p.requires_grad for p in m.parameters())


def test_failed_qlora_leaves_the_model_unchanged():
    m = gpt()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError):
        qlora.prepare_qlora(m, ["q_proj", "nope"], r=2, alpha=4)
    assert not any(isinstance(mod, qlora.Linear4bit) for mod in m.modules())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_adapter_with_wrong_shapes_is_refused_before_any_change(tmp_path):
    small = gpt_with_lora()
    adapters.save_adapter(small, tmp_path / "a.safetensors")
    torch.manual_seed(1)
    other = GPT(GPTConfig(context=16, n_layer=1, n_head=2, d_model=32))
    lora.inject_lora(other, ["q_proj", "v_proj"], r=2, alpha=4)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError, match=r"q_proj"):
        adapters.load_adapter(other, tmp_path / "a.safetensors")
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())


# ------------------------------------------------------------------ files that try to run code


class _Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_file(path, marker):
    with open(path, "wb") as f:
        pickle.dump({"blocks.0.attn.q_proj.A": _Payload(marker)}, f)


@pytest.mark.parametrize("loader", ["load_adapter", "load_model", "load_weights"])
def test_a_pickle_payload_is_never_executed(tmp_path, loader):
    path, marker = tmp_path / "adapter.safetensors", tmp_path / "PWNED"
    _evil_file(path, marker)
    call = {
        "load_adapter": lambda: adapters.load_adapter(gpt_with_lora(), path),
        "load_model": lambda: train.load_model(path),
        "load_weights": lambda: train.load_weights(gpt(), path),
    }[loader]
    with pytest.raises(ValueError, match="safetensors"):
        call()
    assert not marker.exists(), "loading the file executed code from it"


def test_a_truncated_adapter_gives_a_clear_error(tmp_path):
    m = gpt_with_lora()
    path = adapters.save_adapter(m, tmp_path / "a.safetensors") or tmp_path / "a.safetensors"
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="safetensors"):
        adapters.load_adapter(gpt_with_lora(), path)


def test_a_truncated_cached_model_gives_a_clear_error(tmp_path):
    train.save_model(gpt(), tmp_path / "m.safetensors")
    raw = open(tmp_path / "m.safetensors", "rb").read()
    open(tmp_path / "m.safetensors", "wb").write(raw[:100])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        train.load_model(tmp_path / "m.safetensors")


def test_no_bad_input_produces_nan():
    """Edge inputs that are allowed give finite results: an all-zero block, a constant matrix."""
    q = quant.quantize_4bit(torch.zeros(130))
    assert torch.equal(quant.dequantize_4bit(q), torch.zeros(130))
    assert math.isfinite(lowrank.truncation_error(torch.ones(5, 5), 1))
    layer = lora.LoRALinear(nn.Linear(4, 4), lora.LoRAConfig(r=1, alpha=1))
    assert torch.isfinite(layer(torch.zeros(2, 4))).all()
