"""Quantize on load: a Hugging Face model straight from its safetensors shards to 4 bits (notebook 09 §10).

``hf.load_model`` + ``prepare_qlora`` first materialises the whole model in the compute dtype and
only then quantizes it: for a 7B model in float32 (a T4 has no native bfloat16) that is ≈ 27 GB
of host memory before a single byte is saved, and a free Colab has ≈ 12.7 GB. QLoRA's own stack
never holds that copy: bitsandbytes quantizes each weight while ``from_pretrained`` loads it. This
file does the same for lorakit's NF4, in three readable steps:

1. **An empty model.** Build the architecture from its ``config.json`` with every *parameter* on
   PyTorch's ``meta`` device (shapes, no storage), while buffers computed at construction (the
   rotary ``inv_freq``) stay real: ``parameters_on_meta``, what ``accelerate``'s
   ``init_empty_weights(include_buffers=False)`` does.
2. **One tensor at a time.** A safetensors file is an 8-byte header length, a JSON header
   (name → dtype, shape, byte range) and the raw bytes. ``iter_safetensors`` reads the header,
   then each tensor's bytes with one ``readinto`` — no memory map, no pickle, nothing else of
   the shard in memory — shard after shard (``shard_files``).
3. **Quantize as it arrives.** A weight of a linear layer that QLoRA quantizes (every linear layer
   but the output head) is cast to the compute dtype, moved to the device and replaced at once by
   a ``Linear4bit``; any other tensor (embeddings, norms, the head) is put in place in the compute
   dtype. The peak is the 4-bit model plus about one full-precision tensor.

The result equals ``prepare_qlora(hf.load_model(...))`` bit for bit: same packed codes, same
block constants, same logits (``tests/test_quantload.py``). ``load_qlora`` adds the adapters
exactly as ``prepare_qlora`` does.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn as nn

from .lora import LoRAConfig, inject_lora
from .qlora import Linear4bit, _checkpointable, check_compute_dtype, enable_gradient_checkpointing
from .quant import FLOAT_DTYPES, TABLES, quantize_4bit
from .targets import check_targets, replace_module, resolve_targets

#: safetensors' dtype names → torch dtypes (the ones model weights use)
SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


# ---------------------------------------------------------------- reading shards, one tensor at a time


def safetensors_header(path: str | os.PathLike) -> tuple[dict, int]:  # notebook 09 §8
    """``(header, data_start)``: the JSON header of a safetensors file and where its bytes begin.

    The header maps each tensor name to ``dtype``, ``shape`` and ``data_offsets`` (a byte range
    counted from ``data_start``); ``__metadata__``, if present, is free text. Nothing is executed.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(
                f"{path} is not a safetensors file (shorter than its 8-byte header length)"
            )
        (n,) = struct.unpack("<Q", head)
        if n > min(os.path.getsize(path) - 8, 100_000_000):
            raise ValueError(f"{path} is not a safetensors file (header length {n} is impossible)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} is not a safetensors file (header is not JSON: {e})") from e
    return header, 8 + n


def iter_safetensors(
    path: str | os.PathLike,
) -> Iterator[tuple[str, torch.Tensor]]:  # notebook 09 §8
    """Yield ``(name, tensor)`` for every tensor of a safetensors file, reading one at a time.

    Each tensor's bytes are read into a fresh CPU tensor with one ``readinto`` (no memory map: the
    pages of the rest of the shard never enter this process), in file order, which is the order
    ``save_pretrained`` wrote them.
    """
    header, start = safetensors_header(path)
    entries = sorted(
        ((k, v) for k, v in header.items() if k != "__metadata__"),
        key=lambda kv: kv[1]["data_offsets"][0],
    )
    with open(path, "rb") as f:
        for name, info in entries:
            if info["dtype"] not in SAFETENSORS_DTYPES:
                raise ValueError(
                    f"{path}: tensor {name!r} has dtype {info['dtype']}; "
                    f"supported: {sorted(SAFETENSORS_DTYPES)}"
                )
            dtype = SAFETENSORS_DTYPES[info["dtype"]]
            begin, end = info["data_offsets"]
            tensor = torch.empty(info["shape"], dtype=dtype)
            if tensor.numel() * tensor.element_size() != end - begin:
                raise ValueError(
                    f"{path}: tensor {name!r} has {end - begin} bytes, its shape and dtype need "
                    f"{tensor.numel() * tensor.element_size()}"
                )
            f.seek(start + begin)
            if (
                end > begin
                and f.readinto(memoryview(tensor.view(-1).view(torch.uint8).numpy())) != end - begin
            ):
                raise ValueError(f"{path} is truncated: tensor {name!r} is incomplete")
            yield name, tensor


def shard_files(folder: str | os.PathLike) -> list[Path]:  # notebook 09 §8
    """The safetensors shards of a saved model: those listed in ``model.safetensors.index.json``,
    in order, or the single ``model.safetensors``."""
    folder = Path(folder)
    if (folder / INDEX).is_file():
        weight_map = json.loads((folder / INDEX).read_text()).get("weight_map", {})
        names = list(dict.fromkeys(weight_map.values()))  # unique, in first-seen order
        return [folder / n for n in sorted(names)]
    if (folder / SINGLE).is_file():
        return [folder / SINGLE]
    raise FileNotFoundError(
        f"{folder} has neither {INDEX} nor {SINGLE}: no safetensors weights to load"
    )


def model_folder(model_id: str | os.PathLike, local_only: bool = False) -> Path:  # notebook 09 §8
    """A local folder holding ``config.json`` and the safetensors shards of ``model_id``.

    A local folder is used as it is; a Hub id is downloaded to the Hugging Face cache on disk
    (``huggingface_hub.snapshot_download``, only the JSON and safetensors files), not into memory.
    """
    folder = Path(model_id)
    if folder.is_dir():
        return folder
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(
            str(model_id), allow_patterns=["*.json", "*.safetensors"], local_files_only=local_only
        )
    )


# ---------------------------------------------------------------- an empty model


# notebook 09 §8
@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Inside the block, every parameter a module registers is moved to the ``meta`` device.

    A meta tensor has a shape and a dtype but no storage, so building a 7B model costs no memory
    and initialising its weights costs no time. Buffers (e.g. rotary frequencies, which are not in
    the checkpoint) are left real. ``accelerate.init_empty_weights(include_buffers=False)``
    does the same.
    """
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param):
        original(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = nn.Parameter(
                param.to("meta"), requires_grad=param.requires_grad
            )

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def empty_model(folder: str | os.PathLike, dtype: torch.dtype) -> nn.Module:  # notebook 09 §8
    """The causal LM of ``folder/config.json`` in ``dtype``, parameters on ``meta``, buffers real."""
    from .hf import _transformers

    transformers = _transformers()
    if transformers is None:
        raise ImportError("quantize-on-load needs transformers: pip install transformers")
    config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    with parameters_on_meta():
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model


def _put(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Put ``tensor`` in place of the parameter or buffer called ``name`` (frozen, like the base)."""
    path, _, leaf = name.rpartition(".")
    module = model.get_submodule(path)
    if leaf in module._parameters:
        module._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
    elif leaf in module._buffers:
        module._buffers[leaf] = tensor
    else:
        raise ValueError(f"the checkpoint holds {name!r}, which this model does not have")


# ---------------------------------------------------------------- quantize on load


def _check(quant_type: str, blocksize: int, compute_dtype: torch.dtype, device) -> None:
    if quant_type not in TABLES:
        raise ValueError(f"quant_type must be one of {sorted(TABLES)}, got {quant_type!r}")
    if not isinstance(blocksize, int) or blocksize < 2 or blocksize & (blocksize - 1):
        raise ValueError(f"blocksize must be a power of two >= 2, got {blocksize!r}")
    check_compute_dtype(compute_dtype, device)


@torch.no_grad()
def load_quantized(
    model_id: str | os.PathLike,
    compute_dtype: torch.dtype = torch.float32,  # notebook 09 §10
    device: torch.device | str = "cpu",
    quant_type: str = "nf4",
    blocksize: int = 64,
    double_quant: bool = True,
    local_only: bool = False,
) -> nn.Module:
    """A Hugging Face causal LM with every linear layer but the head stored as a ``Linear4bit``,
    built shard by shard: no full-precision copy of the model ever exists.

    Equal to ``hf.load_model(model_id, compute_dtype, device)`` followed by the quantization step
    of ``prepare_qlora``: each weight is cast to ``compute_dtype`` first, then quantized (the same
    bytes). Everything is frozen; the model is in eval mode, as ``hf.load_model`` returns it.
    """
    device = torch.device(device)
    _check(quant_type, blocksize, compute_dtype, device)
    folder = model_folder(model_id, local_only)
    shards = shard_files(folder)
    model = empty_model(folder, compute_dtype)
    linear = set(
        resolve_targets(model, "all-linear")
    )  # what QLoRA quantizes: every linear layer but the head
    biases: dict[str, torch.Tensor] = {}
    for shard in shards:
        for name, tensor in iter_safetensors(shard):
            path, _, leaf = name.rpartition(".")
            tensor = tensor.to(
                device=device, dtype=compute_dtype if tensor.is_floating_point() else tensor.dtype
            )
            if path in linear and leaf == "weight":
                q = quantize_4bit(
                    tensor, quant_type=quant_type, blocksize=blocksize, double_quant=double_quant
                )
                replace_module(model, path, Linear4bit(q, None, compute_dtype))
            elif path in linear and leaf == "bias":
                biases[path] = tensor  # attached below: the weight may come before or after it
            else:
                _put(model, name, tensor)
            del tensor  # the full-precision tensor is freed before the next one is read
    for path, bias in biases.items():
        layer = model.get_submodule(path)
        if not isinstance(layer, Linear4bit):
            raise ValueError(f"the checkpoint has {path}.bias but no {path}.weight")
        layer.bias = nn.Parameter(bias, requires_grad=False)
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()  # the head shares the embedding's (now loaded) weight
    missing = [
        n
        for n, t in list(model.named_parameters()) + list(model.named_buffers())
        if t.device.type == "meta"
    ]
    missing += [p for p in linear if not isinstance(model.get_submodule(p), Linear4bit)]
    if missing:
        raise ValueError(
            f"{folder}: the checkpoint lacks {len(missing)} tensors of this model: {missing[:5]}"
        )
    model.requires_grad_(False)
    return model.to(device).eval()


def load_qlora(
    model_id: str | os.PathLike,
    targets="all-linear",
    r: int = 64,
    alpha: float = 16,  # notebook 09 §10
    quant_type: str = "nf4",
    double_quant: bool = True,
    compute_dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    gradient_checkpointing: bool = False,
    dropout: float = 0.0,
    blocksize: int = 64,
    adapter_dtype: torch.dtype = torch.float32,
    local_only: bool = False,
) -> nn.Module:
    """``prepare_qlora(hf.load_model(model_id, compute_dtype, device), ...)`` without ever holding
    the full-precision model: ``load_quantized``, then LoRA on ``targets`` as ``prepare_qlora``
    puts it (``A``, ``B`` in ``adapter_dtype``, only they train). Same arguments, same result.
    Every argument is checked before anything is read.
    """
    check_targets(targets)
    LoRAConfig(
        r=r, alpha=alpha, dropout=dropout
    )  # checks r, alpha, dropout now, before the long load
    if adapter_dtype not in FLOAT_DTYPES:
        raise ValueError(f"adapter_dtype must be one of {FLOAT_DTYPES}, got {adapter_dtype}")
    _check(quant_type, blocksize, compute_dtype, torch.device(device))
    model = load_quantized(
        model_id, compute_dtype, device, quant_type, blocksize, double_quant, local_only
    )
    names = resolve_targets(model, targets, layer_types=(Linear4bit,), head_allowed=False)
    config = LoRAConfig(r=r, alpha=alpha, dropout=dropout, targets=tuple(names))
    inject_lora(model, config=config, layer_types=(Linear4bit,), dtype=adapter_dtype)
    if gradient_checkpointing:
        if not _checkpointable(model):
            raise ValueError(f"gradient checkpointing is not supported for {type(model).__name__}")
        enable_gradient_checkpointing(model)
    return model
