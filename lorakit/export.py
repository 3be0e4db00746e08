"""Exporting a fine-tune to llama.cpp's quantized formats, by hand (notebook 12 §3).

llama.cpp stores a weight matrix row by row in blocks of 32 consecutive weights (``nn.Linear``'s
out×in layout, blocks along ``in``):

- **Q8_0**: per block an fp16 scale ``d = absmax / 127`` and 32 int8 values ``round(x / d)``
  (halves rounded away from zero): 34 bytes per 32 weights, 8.5 bits per weight.
- **Q4_0**: per block the value of largest magnitude ``m`` (with its sign), ``d = m / −8``, and
  32 4-bit codes ``q = trunc(x / d + 8.5)`` clipped to 0..15, dequantized as ``(q − 8)·d``;
  weights 0–15 go in the low nibbles, 16–31 in the high ones: 18 bytes per 32 weights, 4.5 bits.

Both compute the codes with the float32 scale and store it as fp16 (the dequantized value uses
the fp16 scale). The functions here return the same bytes as ``gguf.quants.quantize`` (the
``gguf`` package, pure Python, bit-exact with ggml-quants.c); a test checks it.

The fine-tune to export is the exact merge (notebook 08/09): the update added to the weights the
adapter was trained against. ``update_survival`` measures how much of that update each format
keeps (notebook 08 §6's projection).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
import torch.nn as nn

from .quant import dequantize_4bit, quantize_4bit
from .targets import output_head

QK = 32  # weights per block in Q8_0 and Q4_0 (ggml's QK8_0 = QK4_0 = 32)
FORMATS = ("F32", "Q8_0", "Q4_0", "NF4")
BYTES_PER_BLOCK = {"Q8_0": 2 + QK, "Q4_0": 2 + QK // 2}


def _blocks(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {type(x).__name__}")
    if x.ndim == 0 or x.shape[-1] % QK:
        raise ValueError(
            f"the last dimension must be a multiple of {QK} (llama.cpp's block), got shape {tuple(x.shape)}"
        )
    return x.detach().float().cpu().reshape(-1, QK)


def _fp16_bytes(d: torch.Tensor) -> torch.Tensor:
    return (
        d.to(torch.float16).contiguous().view(torch.uint8)
    )  # (n, 1) fp16 -> (n, 2) bytes, little-endian


def _round_away(v: torch.Tensor) -> torch.Tensor:
    """Round halves away from zero (C's ``roundf``; torch.round rounds halves to even)."""
    return torch.sign(v) * torch.floor(v.abs() + 0.5)


def quantize_q8_0(x: torch.Tensor) -> torch.Tensor:  # notebook 12 §3
    """Q8_0 bytes, shape ``(*x.shape[:-1], x.shape[-1] // 32 * 34)`` (gguf's layout)."""
    b = _blocks(x)
    d = b.abs().amax(dim=1, keepdim=True) / 127
    inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    q = _round_away(b * inv).to(torch.int8).view(torch.uint8)
    return torch.cat([_fp16_bytes(d), q], dim=1).reshape(*x.shape[:-1], -1)


def dequantize_q8_0(data: torch.Tensor) -> torch.Tensor:  # notebook 12 §3
    """float32 values of Q8_0 bytes: ``d · q``."""
    blocks = data.reshape(-1, BYTES_PER_BLOCK["Q8_0"])
    d = blocks[:, :2].contiguous().view(torch.float16).float()
    q = blocks[:, 2:].contiguous().view(torch.int8).float()
    return (d * q).reshape(*data.shape[:-1], -1)


def quantize_q4_0(x: torch.Tensor) -> torch.Tensor:  # notebook 12 §3
    """Q4_0 bytes, shape ``(*x.shape[:-1], x.shape[-1] // 32 * 18)`` (gguf's layout)."""
    b = _blocks(x)
    m = b.gather(1, b.abs().argmax(dim=1, keepdim=True))  # the signed value of largest magnitude
    d = m / -8
    inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    q = torch.trunc(b * inv + 8.5).clamp(0, 15).to(torch.uint8)
    packed = q[:, : QK // 2] | (
        q[:, QK // 2 :] << 4
    )  # weight j low nibble, weight j+16 high nibble
    return torch.cat([_fp16_bytes(d), packed], dim=1).reshape(*x.shape[:-1], -1)


def dequantize_q4_0(data: torch.Tensor) -> torch.Tensor:  # notebook 12 §3
    """float32 values of Q4_0 bytes: ``(q − 8) · d``."""
    blocks = data.reshape(-1, BYTES_PER_BLOCK["Q4_0"])
    d = blocks[:, :2].contiguous().view(torch.float16).float()
    packed = blocks[:, 2:]
    q = torch.cat([packed & 0x0F, packed >> 4], dim=1).float() - 8
    return (d * q).reshape(*data.shape[:-1], -1)


def roundtrip(W: torch.Tensor, fmt: str) -> torch.Tensor:  # notebook 12 §3
    """``W`` stored in ``fmt`` and read back (float32): what the runtime computes with."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    W = W.detach().float()
    if fmt == "F32":
        return W.clone()
    if fmt == "Q8_0":
        return dequantize_q8_0(quantize_q8_0(W))
    if fmt == "Q4_0":
        return dequantize_q4_0(quantize_q4_0(W))
    return dequantize_4bit(quantize_4bit(W, "nf4", 64)).reshape(
        W.shape
    )  # NF4, bitsandbytes' blocks of 64


def bits_per_weight(fmt: str) -> float:  # notebook 12 §3
    """Storage per weight: 32, 8.5, 4.5; NF4 with a float32 absmax per 64: 4.5."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    return {"F32": 32.0, "NF4": 4 + 32 / 64}.get(fmt) or BYTES_PER_BLOCK[fmt] * 8 / QK


def _linears(model: nn.Module) -> dict[str, nn.Linear]:
    head = output_head(model)
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and m is not head}


@torch.no_grad()
def quantized_copy(
    model: nn.Module, fmt: str, keep: dict[str, str] | None = None, into: nn.Module | None = None
) -> nn.Module:  # notebook 12 §3
    """A copy of ``model`` whose linear layers (not the output head) hold ``roundtrip(W, fmt)``.

    ``keep`` maps module paths to another format (e.g. ``{"...q_proj": "Q8_0"}``): llama.cpp's
    mixed-precision types keep sensitive layers in more bits the same way. ``into`` (the base
    ``model`` was fine-tuned from) merges the update into the *quantized* base instead:
    ``roundtrip(roundtrip(W_into) + (W − W_into))``, what adding an update to a quantized file does.
    """
    keep = dict(keep or {})
    linears = _linears(model)
    unknown = sorted(set(keep) - set(linears))
    if unknown:
        raise ValueError(f"keep names layers the model lacks: {unknown[:3]}")
    for path, f in {**{p: fmt for p in linears}, **keep}.items():
        if f not in FORMATS:
            raise ValueError(f"format for {path!r} must be one of {FORMATS}, got {f!r}")
    bases = _linears(into) if into is not None else {}
    if into is not None and set(bases) != set(linears):
        raise ValueError(
            "into must have the same linear layers as model (the base it was fine-tuned from)"
        )
    out = copy.deepcopy(model)
    for path, layer in _linears(out).items():
        f = keep.get(path, fmt)
        w = layer.weight
        if into is not None:
            base_q = roundtrip(bases[path].weight, f)
            w = base_q + (w.float() - bases[path].weight.float())
        layer.weight.copy_(roundtrip(w, f).to(layer.weight.dtype))
    return out


@torch.no_grad()
def update_survival(
    base: nn.Module,
    merged: nn.Module,
    fmt: str,
    keep: dict[str, str] | None = None,
    paths: list[str] | None = None,
    into_quantized: bool = False,
) -> dict:  # notebook 12 §3 (08 §6)
    """How much of the merged update ``Δ = W_merged − W_base`` survives storing it in ``fmt``.

    ``Δ_real = Q(W_merged) − Q(W_base)``: the change a user of the exported files gets, when the
    merge was made in 16/32 bits and then quantized (from scratch). With ``into_quantized`` the
    update is added to the already quantized base instead, ``Q(Q(W_base) + Δ) − Q(W_base)``
    (merging into a quantized file, as notebook 08 §6's requantization). Returns
    ``projection = ⟨Δ_real, Δ⟩ / ‖Δ‖²`` (1: survives on average; 0: rounded away) and
    ``noise = ‖Δ_real − Δ‖ / ‖Δ‖``, summed over ``paths`` (default: every layer that changed).
    """
    keep = keep or {}
    b, m = _linears(base), _linears(merged)
    if set(b) != set(m):
        raise ValueError("base and merged must have the same linear layers")
    if paths is None:
        paths = [p for p in b if not torch.equal(b[p].weight, m[p].weight)]
    if not paths:
        raise ValueError("merged equals base on every layer: there is no update to measure")
    dot = meant_sq = noise_sq = 0.0
    for p in paths:
        f = keep.get(p, fmt)
        meant = (m[p].weight - b[p].weight).float()
        base_q = roundtrip(b[p].weight, f)
        real = roundtrip((base_q + meant) if into_quantized else m[p].weight, f) - base_q
        dot += (real * meant).sum().item()
        meant_sq += meant.pow(2).sum().item()
        noise_sq += (real - meant).pow(2).sum().item()
    return dict(projection=dot / meant_sq, noise=(noise_sq / meant_sq) ** 0.5, layers=len(paths))


# ---------------------------------------------------------------- a GGUF file


def _gguf():
    try:
        import gguf
    except ImportError as error:  # pragma: no cover - gguf is in requirements.txt
        raise ImportError(
            "the gguf package is needed here: pip install gguf (see requirements.txt)"
        ) from error
    return gguf


def gguf_name(hf_name: str, n_layers: int) -> str:  # notebook 12 §3
    """The GGUF tensor name llama.cpp uses for a Hugging Face Llama parameter (``blk.0.attn_q.weight``)."""
    gguf = _gguf()
    name = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers).get_name(
        hf_name, try_suffixes=(".weight", ".bias")
    )
    if name is None:
        raise ValueError(f"no GGUF name for {hf_name!r} in gguf's Llama table")
    return name


@torch.no_grad()
def write_gguf(
    model: nn.Module, path: str | os.PathLike, fmt: str = "Q8_0"
) -> Path:  # notebook 12 §3
    """Write a Hugging Face Llama's weights and architecture keys to a GGUF file with ``gguf.GGUFWriter``.

    Linear weights (not the tied embedding) in ``fmt`` (``"Q8_0"``, ``"Q4_0"`` or ``"F32"``), by
    our own quantizer; norms and the embedding in F32. What ``convert_hf_to_gguf.py`` adds and we
    leave out: the tokenizer, and the row permutation of q_proj/k_proj for llama.cpp's RoPE.
    """
    if fmt not in ("F32", "Q8_0", "Q4_0"):
        raise ValueError(f"fmt must be 'F32', 'Q8_0' or 'Q4_0' (GGUF types), got {fmt!r}")
    gguf = _gguf()
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("lorakit tiny llama")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    linears = {f"{n}.weight" for n in _linears(model)}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue  # tied: the embedding is the head
        t = tensor.detach().float().cpu()
        if name in linears and fmt != "F32":
            data = (quantize_q8_0 if fmt == "Q8_0" else quantize_q4_0)(t).numpy()
            writer.add_tensor(
                gguf_name(name, cfg.num_hidden_layers),
                data,
                raw_dtype=gguf.GGMLQuantizationType[fmt],
            )
        else:
            writer.add_tensor(gguf_name(name, cfg.num_hidden_layers), t.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def read_gguf(
    path: str | os.PathLike,
) -> tuple[dict, dict[str, torch.Tensor], dict[str, str]]:  # notebook 12 §3
    """Read a GGUF file with ``gguf.GGUFReader``: (architecture keys, float32 tensors in PyTorch's
    shape, each tensor's type name). Quantized tensors are dequantized by ``gguf`` itself."""
    gguf = _gguf()
    reader = gguf.GGUFReader(str(path))
    keys = {}
    for name, field in reader.fields.items():
        if name.startswith(("llama.", "general.architecture")):
            keys[name] = field.contents()
    tensors, types = {}, {}
    for t in reader.tensors:
        shape = tuple(int(s) for s in reversed(t.shape))  # GGUF lists dims fastest-first
        values = gguf.quants.dequantize(t.data, t.tensor_type)
        tensors[t.name] = torch.from_numpy(values.copy()).float().reshape(shape)
        types[t.name] = t.tensor_type.name
    return keys, tensors, types
