"""Memory: estimates for real model shapes, and measured peaks (notebooks 07 and 08).

Two questions, kept apart on purpose:

- **How much would it take?** ``estimate_memory("65B", "qlora")`` adds up bytes per parameter
  for the weights, the LoRA matrices, the gradients, the optimizer states and the activations of
  a LLaMA-shaped model (``MODEL_SHAPES``), with the course's dtypes by default (float32 A, B and
  compute, as on a T4). With the paper's 16-bit ones (``PAPER_DTYPES``) it reproduces the QLoRA
  paper's headline: fine-tuning LLaMA-65B needs > 780 GB with 16-bit full fine-tuning and
  < 48 GB with QLoRA.
- **How much did it take?** ``peak_memory(fn)`` (or the ``track_peak`` context manager) runs
  code and reports the peak it measured. On CUDA: the caching allocator's peak **plus the paged
  optimizer states**, which the allocator never sees (``paged_state_bytes``). On a CPU, where
  torch keeps no peak counter: the bytes of parameters, buffers, gradients and optimizer states
  at their largest (activations are not counted there, and the result says so).

Why the paged states need their own line: bitsandbytes' paged optimizers (``PagedAdamW32bit``,
QLoRA's choice) allocate each large state tensor with ``cudaMallocManaged`` and wrap it as a
*CPU* tensor marked ``is_paged``. It lives in GPU memory while there is room (the driver pages it
to CPU RAM only under pressure), but ``torch.cuda.max_memory_allocated`` counts only what torch's
allocator handed out, so it misses them: ≈ 1.3 GB for LoRA r = 64 on every linear layer of a 7B
model (160 M parameters × 8 bytes). ``track_peak`` finds the optimizers through torch's global
optimizer-step hook and adds the bytes of their paged states; it also samples the device's used
memory (``torch.cuda.mem_get_info``) after each step, as a cross-check that sees everything on
the GPU (other processes and the CUDA context included).

Sizes are in decimal gigabytes (1 GB = 1e9 bytes), as the papers write them.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable, Iterator, Mapping

import torch
import torch.nn as nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from .lowrank import lora_params
from .quant import constants_bits
from .validate import positive_int

GB = 1e9

# The one model-shape table of the course, with the key names of a Hugging Face ``config.json``
# (``LlamaConfig``). LLaMA (1) shapes; "70B" is Llama 2 70B (grouped-query attention: 8 key/value
# heads). Notebook 01 counts LLaMA-7B from it, notebooks 07, 08 and 10 estimate memory with it.
MODEL_SHAPES: dict[str, dict[str, int]] = {
    "7B": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
    ),
    "13B": dict(
        hidden_size=5120,
        intermediate_size=13824,
        num_hidden_layers=40,
        num_attention_heads=40,
        num_key_value_heads=40,
        vocab_size=32000,
    ),
    "33B": dict(
        hidden_size=6656,
        intermediate_size=17920,
        num_hidden_layers=60,
        num_attention_heads=52,
        num_key_value_heads=52,
        vocab_size=32000,
    ),
    "65B": dict(
        hidden_size=8192,
        intermediate_size=22016,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=64,
        vocab_size=32000,
    ),
    "70B": dict(
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
        vocab_size=32000,
    ),
}

# Published config.json shapes (REFERENCE.md) as LlamaConfig arguments: a model with random weights
# and exactly these shapes runs 09's path at real size with no download (``build_tiny_llama(shape=...)``).
REAL_SHAPES: dict[str, dict] = {
    "SmolLM2-135M": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        rope_theta=100000.0,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
    ),
    "SmolLM2-360M": dict(
        hidden_size=960,
        intermediate_size=2560,
        num_hidden_layers=32,
        num_attention_heads=15,
        num_key_value_heads=5,
        vocab_size=49152,
        rope_theta=100000.0,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
    ),
}

METHODS = ("full", "lora", "qlora")
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# ---------------------------------------------------------------- shapes and parameter counts


def shape_of(model: str | Mapping[str, int]) -> dict[str, int]:  # notebook 07 §7
    """The shape dict of ``model``: a name from ``MODEL_SHAPES`` or a dict with the same keys
    (a Hugging Face config's ``to_dict()`` works: extra keys are ignored)."""
    if isinstance(model, str):
        if model not in MODEL_SHAPES:
            raise ValueError(
                f"model must be one of {sorted(MODEL_SHAPES)} or a shape dict, got {model!r}"
            )
        return dict(MODEL_SHAPES[model])
    if isinstance(model, Mapping):
        missing = sorted(set(MODEL_SHAPES["7B"]) - set(model))
        if missing:
            raise ValueError(
                f"a shape dict needs the keys {sorted(MODEL_SHAPES['7B'])}; missing {missing}"
            )
        return {k: int(model[k]) for k in MODEL_SHAPES["7B"]}
    raise TypeError(f"model must be a name like '65B' or a shape dict, got {type(model).__name__}")


def linear_shapes(
    model: str | Mapping[str, int],
) -> dict[str, tuple[int, int]]:  # notebook 01 §5, 07 §7
    """(in, out) of each linear layer in one LLaMA decoder layer (the LoRA targets)."""
    s = shape_of(model)
    h, i = s["hidden_size"], s["intermediate_size"]
    kv = h // s["num_attention_heads"] * s["num_key_value_heads"]
    return {
        "q_proj": (h, h),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (h, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
    }


def parameter_counts(model: str | Mapping[str, int]) -> dict[str, int]:  # notebook 01 §5, 07 §7
    """Parameters in the decoder layers' linear layers, and everything else (embeddings, head, norms).

    The split matters because QLoRA quantizes only the first group: the embedding, the output
    head and the norms stay in 16 bits. LLaMA-7B comes out at 6.74 B, 65B at 65.29 B.
    """
    s = shape_of(model)
    per_layer = sum(m * n for m, n in linear_shapes(s).values())
    linear = s["num_hidden_layers"] * per_layer
    norms = (2 * s["num_hidden_layers"] + 1) * s["hidden_size"]
    other = 2 * s["vocab_size"] * s["hidden_size"] + norms  # embedding + lm_head (untied) + norms
    return {"linear": linear, "other": other, "total": linear + other}


def lora_parameter_count(
    model: str | Mapping[str, int], r: int, targets="all-linear"
) -> int:  # notebook 07 §7
    """``lowrank.lora_params`` = r·(in + out) summed over the adapted layers of every decoder layer."""
    shapes = linear_shapes(model)
    names = list(shapes) if targets == "all-linear" else list(targets)
    unknown = sorted(set(names) - set(shapes))
    if unknown:
        raise ValueError(
            f"targets must be 'all-linear' or names from {list(shapes)}, got unknown {unknown}"
        )
    return shape_of(model)["num_hidden_layers"] * sum(lora_params(*shapes[n], r) for n in names)


def quantized_bits_per_parameter(
    blocksize: int = 64, double_quant: bool = True
) -> float:  # notebook 07 §6
    """Stored bits per weight for blockwise 4-bit quantization: 4.127 for NF4 + double quant.

    4 bits of code plus the constants' bits, ``lorakit.quant.constants_bits`` (notebook 07 §6).
    """
    return 4 + constants_bits(blocksize, double_quant)


# ---------------------------------------------------------------- estimates


def activation_bytes(  # notebook 07 §7
    model: str | Mapping[str, int],
    batch_size: int = 1,
    seq_len: int = 512,
    gradient_checkpointing: bool = True,
    bytes_per_value: int = 2,
) -> int:
    """Activations kept for the backward pass (an estimate; the assumptions are below).

    Per decoder layer, with fused attention (no seq×seq matrix stored), backward needs the
    inputs of every matrix product and nonlinearity: the two norm outputs, q, k, v, the
    attention output (6 vectors of size hidden) and gate, up, act(gate), act(gate)·up (4 of
    size intermediate): ``b·s·(6h + 4i)`` values. LoRA adds only ``b·s·r`` per layer (ignored).
    With gradient checkpointing only each layer's input (``b·s·h``) is kept, plus one layer's
    full set while it is recomputed. Both add the logits in float32 and their gradient
    (``2·b·s·vocab·4`` bytes), which is often the largest single tensor at small batch sizes.
    """
    s = shape_of(model)
    tokens = batch_size * seq_len
    per_layer = tokens * (6 * s["hidden_size"] + 4 * s["intermediate_size"]) * bytes_per_value
    logits = 2 * tokens * s["vocab_size"] * 4
    if gradient_checkpointing:
        kept = s["num_hidden_layers"] * tokens * s["hidden_size"] * bytes_per_value
        return kept + per_layer + logits
    return s["num_hidden_layers"] * per_layer + logits


FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
PAPER_DTYPES = dict(
    adapter_dtype=torch.bfloat16, compute_dtype=torch.bfloat16
)  # QLoRA paper, Answer.AI


def estimate_memory(  # notebook 07 §7
    model: str | Mapping[str, int],
    method: str,
    r: int = 64,
    batch_size: int = 1,
    seq_len: int = 512,
    gradient_checkpointing: bool = True,
    targets="all-linear",
    blocksize: int = 64,
    double_quant: bool = True,
    adapter_dtype: torch.dtype = torch.float32,
    compute_dtype: torch.dtype = torch.float32,
) -> dict[str, float]:
    """GB needed to fine-tune a LLaMA-shaped ``model`` ("7B" … "70B" or a shape dict).

    Returns a dict with "weights", "lora", "gradients", "optimizer", "activations", "total" (GB).
    Assumptions (those of the QLoRA paper's comparison):

    - ``"full"``: 16-bit weights (2 bytes), 16-bit gradients (2 bytes) and AdamW's two 32-bit
      states (2 × 4 bytes) for every parameter: 12 bytes/param, so 65B → 783 GB ("> 780 GB").
      No separate 32-bit master copy (mixed precision with one would add 4 bytes/param).
    - ``"lora"``: frozen 16-bit base; LoRA A, B in ``adapter_dtype`` on ``targets`` (rank ``r``),
      their gradients in the same dtype and 32-bit AdamW states. No gradients or states for the base.
    - ``"qlora"``: as "lora", but the decoder's linear layers are stored in 4 bits with their
      quantization constants (``quantized_bits_per_parameter``: 4.127 bits/param for NF4 with
      double quantization, blocksize 64); embeddings, output head and norms stay 16-bit. The
      paged 32-bit AdamW holds states for the LoRA parameters only → 65B fits in < 48 GB.
    - Activations: ``activation_bytes`` in ``compute_dtype`` (fused attention, with or without
      checkpointing).

    The dtypes default to what the course trains with (notebooks 08 and 09): A and B in float32
    (a small update added to a 16-bit number rounds away), and float32 compute where the GPU has
    no native bfloat16 (a T4). The QLoRA paper's comparison uses 16-bit adapters and activations:
    pass ``**PAPER_DTYPES``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        positive_int(value, name)
    for name, value in (("adapter_dtype", adapter_dtype), ("compute_dtype", compute_dtype)):
        if value not in FLOAT_DTYPES:
            raise ValueError(f"{name} must be one of {FLOAT_DTYPES}, got {value!r}")
    adapter_bytes = adapter_dtype.itemsize
    counts = parameter_counts(model)
    if method == "full":
        n_lora, trainable = 0, counts["total"]
        weights = 2 * counts["total"]
    else:
        n_lora = lora_parameter_count(model, r, targets)
        trainable = n_lora
        if method == "lora":
            weights = 2 * counts["total"]
        else:
            bits = quantized_bits_per_parameter(blocksize, double_quant)
            weights = counts["linear"] * bits / 8 + 2 * counts["other"]
    parts = {
        "weights": weights,
        "lora": adapter_bytes * n_lora,
        "gradients": (2 if method == "full" else adapter_bytes) * trainable,
        "optimizer": 8 * trainable,
        "activations": activation_bytes(
            model, batch_size, seq_len, gradient_checkpointing, compute_dtype.itemsize
        ),
    }
    out = {k: v / GB for k, v in parts.items()}
    out["total"] = sum(out.values())
    return out


# ---------------------------------------------------------------- measured peaks


def _tensor_bytes(tensors) -> int:
    """Bytes of distinct storages (a tensor and its views are counted once)."""
    seen, total = set(), 0
    for t in tensors:
        if t is None or not isinstance(t, torch.Tensor) or t.device.type == "meta":
            continue
        storage = t.untyped_storage()
        key = (t.device.type, storage.data_ptr())
        if key in seen:
            continue
        seen.add(key)
        total += storage.nbytes()
    return total


def _state_tensors(optimizers) -> list[torch.Tensor]:
    """Every tensor in the states of ``optimizers`` (AdamW: ``exp_avg``, ``exp_avg_sq``, ``step``)."""
    return [
        v
        for opt in optimizers
        for state in opt.state.values()
        for v in state.values()
        if isinstance(v, torch.Tensor)
    ]


def paged_state_bytes(optimizers) -> int:  # notebook 07 §8
    """Bytes of optimizer states held in CUDA unified memory, which torch's allocator never sees.

    bitsandbytes' paged optimizers allocate each state of a large parameter (≥ 1e5 elements) with
    ``cudaMallocManaged`` and wrap it as a CPU tensor with ``is_paged = True``
    (``bitsandbytes.functional.get_paged``); smaller states are ordinary CUDA tensors, which
    ``torch.cuda.max_memory_allocated`` already counts. So: the bytes of the ``is_paged`` ones.
    """
    return _tensor_bytes(t for t in _state_tensors(optimizers) if getattr(t, "is_paged", False))


def _static_bytes(model: nn.Module | None, optimizers) -> int:
    """Parameters + buffers of ``model``, gradients, and the states of ``optimizers``, now."""
    tensors: list = []
    params: list = []
    if model is not None:
        params += list(model.parameters())
        tensors += list(model.buffers())
    for opt in optimizers:
        for group in opt.param_groups:
            params += list(group["params"])
    tensors += _state_tensors(optimizers)
    tensors += params + [p.grad for p in params]
    return _tensor_bytes(tensors)


def _device(device, model) -> torch.device:
    if device is not None:
        return torch.device(device)
    if model is not None:
        for t in list(model.parameters()) + list(model.buffers()):
            return t.device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager  # notebook 08 §4
def track_peak(
    device: torch.device | str | None = None, model: nn.Module | None = None
) -> Iterator[dict]:
    """Measure the peak memory of the code inside the ``with`` block.

    Yields a dict that is filled in on exit with ``peak_bytes``, ``peak_gb``, ``method``,
    ``device`` and ``seconds``. Every optimizer that steps inside the block is found through
    torch's global optimizer-step hook (bitsandbytes' optimizers included).

    - CUDA: ``peak_bytes`` = the caching allocator's peak (``torch.cuda.max_memory_allocated``:
      every tensor torch held at the worst moment, activations included) **plus** the paged
      optimizer states (``paged_state_bytes``, largest seen after any step), which live in
      unified memory outside the allocator. The paged states exist from the first step on, so
      in a training loop they are there at the allocator's peak; if the peak came before the
      first step, the sum is an upper bound. Also filled in: ``allocator_peak_bytes``,
      ``paged_bytes`` and ``device_used_bytes`` (the most the device reported in use, from
      ``torch.cuda.mem_get_info`` after each step: CUDA context and other processes included).
    - CPU (and MPS): torch keeps no peak counter, so we count what we can see: the parameters
      and buffers of ``model`` (pass it), plus, after every optimizer step, all gradients and
      optimizer states. The peak of that sum is reported; activations are not included, and
      ``method`` says so.
    """
    dev = _device(device, model)
    result: dict = {"device": str(dev)}
    start = time.perf_counter()
    optimizers: weakref.WeakSet = weakref.WeakSet()
    cuda = dev.type == "cuda"
    most = {"paged": 0, "device_used": 0, "static": 0 if cuda else _static_bytes(model, [])}

    def after_step(opt, args, kwargs):  # every optimizer step inside the block, bitsandbytes' too
        optimizers.add(opt)
        if cuda:
            most["paged"] = max(most["paged"], paged_state_bytes(optimizers))
            free, total = torch.cuda.mem_get_info(dev)
            most["device_used"] = max(most["device_used"], total - free)
        else:
            most["static"] = max(most["static"], _static_bytes(model, optimizers))

    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    handle = register_optimizer_step_post_hook(after_step)
    try:
        yield result
    finally:
        handle.remove()
    if cuda:
        torch.cuda.synchronize(dev)
        allocator = torch.cuda.max_memory_allocated(dev)
        paged_bytes = max(most["paged"], paged_state_bytes(optimizers))
        peak = allocator + paged_bytes
        result.update(
            allocator_peak_bytes=int(allocator),
            paged_bytes=int(paged_bytes),
            device_used_bytes=int(most["device_used"]),
        )
        result["method"] = (
            "cuda: allocator peak (torch.cuda.max_memory_allocated, activations included) "
            "+ paged optimizer states (unified memory, invisible to the allocator)"
        )
    else:
        peak = max(most["static"], _static_bytes(model, optimizers))
        result["method"] = (
            f"{dev.type}: bytes of parameters + buffers + gradients + optimizer states "
            "(activations not counted)"
        )
    result["peak_bytes"] = int(peak)
    result["peak_gb"] = peak / GB
    result["seconds"] = time.perf_counter() - start


def peak_memory(
    fn: Callable,
    *args,
    device: torch.device | str | None = None,  # notebook 08 §4
    model: nn.Module | None = None,
    **kwargs,
) -> dict:
    """Run ``fn(*args, **kwargs)`` under ``track_peak``; the dict also holds its ``result``."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    with track_peak(device=device, model=model) as measured:
        measured["result"] = fn(*args, **kwargs)
    return measured
