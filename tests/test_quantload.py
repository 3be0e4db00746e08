"""Quantize on load (notebook 09 §10): shard by shard, equal to load-then-``prepare_qlora``."""

import json

import pytest
import torch

pytest.importorskip("transformers", reason="transformers is not installed")

from safetensors.torch import load_file, save_file  # noqa: E402

from lorakit import hf, quantload  # noqa: E402
from lorakit.qlora import Linear4bit, prepare_qlora  # noqa: E402
from lorakit.train import set_seed  # noqa: E402


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """The tiny Llama saved in several shards (as a Hub model of billions of parameters is)."""
    tiny = hf.build_tiny_llama(tmp_path_factory.mktemp("tiny"))
    folder = tmp_path_factory.mktemp("sharded")
    model = hf.load_model(tiny, local_only=True)
    model.save_pretrained(folder, max_shard_size="40KB")
    return tiny, folder


def test_the_fixture_really_has_several_shards(sharded):
    _, folder = sharded
    assert len(quantload.shard_files(folder)) >= 3


def test_reading_one_tensor_at_a_time_equals_safetensors(tmp_path):
    tensors = {
        "a": torch.randn(3, 5),
        "b": torch.arange(7, dtype=torch.int64),
        "c": torch.randn(4, 4).to(torch.bfloat16),
        "empty": torch.zeros(0, 3),
    }
    save_file(tensors, str(tmp_path / "t.safetensors"), metadata={"format": "pt"})
    read = dict(quantload.iter_safetensors(tmp_path / "t.safetensors"))
    assert read.keys() == tensors.keys()
    for k, v in load_file(str(tmp_path / "t.safetensors")).items():
        assert read[k].dtype == v.dtype and torch.equal(read[k], v)


def test_a_broken_file_is_refused_clearly(tmp_path):
    save_file({"a": torch.randn(64, 64)}, str(tmp_path / "t.safetensors"))
    data = (tmp_path / "t.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-100])
    with pytest.raises(ValueError, match="truncated"):
        list(quantload.iter_safetensors(tmp_path / "cut.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"\x80\x04junk" * 4)
    with pytest.raises(ValueError, match="not a safetensors file"):
        quantload.safetensors_header(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError, match="no safetensors weights"):
        quantload.shard_files(tmp_path / "nothing")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantize_on_load_equals_load_then_prepare_qlora(sharded, dtype):
    tiny, folder = sharded
    set_seed(0)
    today = prepare_qlora(
        hf.load_model(tiny, dtype, local_only=True), r=4, alpha=8, compute_dtype=dtype
    )
    set_seed(0)
    ours = quantload.load_qlora(folder, r=4, alpha=8, compute_dtype=dtype, local_only=True)
    a, b = today.state_dict(), ours.state_dict()
    assert a.keys() == b.keys()
    for key in a:  # packed codes, block constants, norms, embeddings, LoRA A and B: bit for bit
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    layers = [m for m in ours.modules() if isinstance(m, Linear4bit)]
    assert len(layers) == 14 and all(m.compute_dtype == dtype for m in layers)
    assert ours.lm_head.weight is ours.model.embed_tokens.weight, "the tied head is tied again"
    assert [n for n, p in ours.named_parameters() if p.requires_grad] == [
        n for n, p in today.named_parameters() if p.requires_grad
    ]
    ids = torch.randint(0, 500, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(ours(input_ids=ids).logits, today(input_ids=ids).logits)


def test_bias_arriving_in_any_order_is_attached(tmp_path):
    transformers = hf._transformers()
    cfg = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        attention_bias=True,
        tie_word_embeddings=False,
    )
    set_seed(1)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / quantload.INDEX).exists()
    ref = prepare_qlora(hf.load_model(tmp_path, local_only=True), r=2, alpha=2)
    ours = quantload.load_qlora(tmp_path, r=2, alpha=2, local_only=True)
    q = ours.model.layers[0].self_attn.q_proj.base
    assert q.bias is not None and torch.equal(
        q.bias, ref.model.layers[0].self_attn.q_proj.base.bias
    )
    assert ours.lm_head.weight is not ours.model.embed_tokens.weight
    assert torch.equal(ours.lm_head.weight, ref.lm_head.weight)


def test_a_checkpoint_missing_a_tensor_is_refused(sharded, tmp_path):
    tiny, _ = sharded
    state = load_file(str(tiny / "model.safetensors"))
    state.pop("model.layers.1.mlp.up_proj.weight")
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text((tiny / "config.json").read_text())
    with pytest.raises(ValueError, match="lacks"):
        quantload.load_quantized(tmp_path, local_only=True)


def test_bad_arguments_are_refused_before_loading(sharded):
    _, folder = sharded
    with pytest.raises(ValueError, match="quant_type"):
        quantload.load_qlora(folder, quant_type="nf5", local_only=True)
    with pytest.raises(ValueError, match="blocksize"):
        quantload.load_quantized(folder, blocksize=48, local_only=True)
    with pytest.raises(ValueError):
        quantload.load_qlora(folder, r=0, local_only=True)
    with pytest.raises(TypeError, match="targets"):
        quantload.load_qlora(folder, targets=3, local_only=True)


def test_parameters_on_meta_leaves_buffers_real():
    with quantload.parameters_on_meta():
        layer = torch.nn.Linear(1000, 1000)
        norm = torch.nn.BatchNorm1d(8)
    assert layer.weight.is_meta and layer.bias.is_meta
    assert not norm.running_mean.is_meta
    assert not torch.nn.Linear(2, 2).weight.is_meta, "the patch is undone on exit"


def test_the_index_lists_shards_in_order(sharded):
    _, folder = sharded
    index = json.loads((folder / quantload.INDEX).read_text())
    assert [p.name for p in quantload.shard_files(folder)] == sorted(
        set(index["weight_map"].values())
    )
