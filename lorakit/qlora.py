"""QLoRA: a frozen 4-bit base with its own backward, plus LoRA (notebook 08).

The pieces, each derived in notebook 08:

- ``Linear4bit``: an ``nn.Linear`` whose weight is stored **only** as packed 4-bit codes and
  (double-quantized) block constants (``lorakit.quant``). ``forward`` dequantizes the weight to
  ``compute_dtype`` and multiplies: ``y = x Wᵀ`` with ``W`` out×in, as ``nn.Linear`` stores it.
- ``Linear4bitFunction``: its autograd rule. The base is frozen, so backward needs only the
  gradient for the input, ``grad_x = grad_y W`` (QLoRA's "no weight gradient"). It keeps
  nothing but the 4-bit weight between forward and backward, and dequantizes again in backward
  (with ``lorakit.quant.dequantize_4bit``, the package's one dequantizer): a little more
  compute for never holding a 16-bit copy of the weights.
- ``prepare_qlora``: quantize every linear layer but the output head, freeze everything, put
  LoRA (A, B in ``compute_dtype``) on the targets, optionally turn on gradient checkpointing.
  Works on the course GPT and on Hugging Face models (module names as in Llama).
- ``choose_compute_dtype``: bfloat16 where the device computes it natively (Ampere or newer),
  float32 elsewhere (a T4, a CPU). The adapters train in float32 whatever the compute dtype.
- Merging, three ways (notebook 08 §6 measures them): ``merge_into_dequantized`` adds
  ``scaling·(AB)ᵀ`` to the dequantized weights Ŵ the adapter was trained against (exact: the
  deployable model); ``merge_into_16bit`` adds it to the original 16-bit weights W16 (a different
  model, off by the base's own 4-bit rounding error); ``merge_into_4bit`` requantizes
  Ŵ + scaling·(AB)ᵀ (small, but rounded a second time: an update large next to the 4-bit step
  survives on average with added noise, one much smaller than the step is rounded away).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from .lora import LoRAConfig, LoRALinear, inject_lora, lora_layers
from .model import Block
from .quant import (
    FLOAT_DTYPES,
    TABLES,
    Quantized4bit,
    bits_per_parameter,
    dequantize_4bit,
    dequantize_absmax,
    quantize_4bit,
)
from .targets import replace_module, resolve_targets

# ---------------------------------------------------------------- the 4-bit layer and its backward


class Linear4bitFunction(torch.autograd.Function):  # notebook 08 §2
    """``y = x Ŵᵀ`` with ``Ŵ`` dequantized on the fly; backward returns only ``grad_x = grad_y Ŵ``.

    Notebook 08 §2 builds this very class. ``q`` (the layer's ``Quantized4bit``) travels on
    ``ctx``: its packed codes exist anyway. No dequantized weight and not even ``x`` is saved,
    because the frozen weight needs no gradient and ``grad_x`` does not depend on ``x``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, q: Quantized4bit) -> torch.Tensor:
        ctx.q = q  # the 4-bit weight: it exists anyway
        W_hat = dequantize_4bit(q, x.dtype)  # out×in, freed when forward returns
        return x @ W_hat.t()

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        W_hat = dequantize_4bit(ctx.q, grad_y.dtype)  # dequantize again instead of storing it
        return grad_y @ W_hat, None  # grad for x; none for the 4-bit weight


class Linear4bit(nn.Module):  # notebook 08 §2
    """A frozen linear layer stored as 4-bit codes + block constants; computes in ``compute_dtype``.

    Notebook 08 §2. Build it with ``Linear4bit.from_linear(linear, ...)``. The tensors of the
    ``Quantized4bit`` are its buffers (no float copy of the weight exists); it dequantizes with
    ``lorakit.quant.dequantize_4bit``, like everything else (speed-ups: ``lorakit.fast``).
    """

    def __init__(self, q: Quantized4bit, bias: torch.Tensor | None, compute_dtype: torch.dtype):
        super().__init__()
        self.out_features, self.in_features = int(q.shape[0]), int(q.shape[1])
        self.compute_dtype = compute_dtype
        # the stored weight: its tensors are buffers, so .to(device) and state_dict() carry them
        # (a buffer set to None, e.g. absmax under double quantization, is simply not stored) …
        for name in ("packed", "absmax", "absmax_codes", "absmax2", "offset"):
            self.register_buffer(name, getattr(q, name))
        # … and the rest are plain attributes
        self.weight_shape, self.weight_dtype = q.shape, q.dtype
        self.quant_type, self.blocksize, self.blocksize2 = q.quant_type, q.blocksize, q.blocksize2
        self.bias = (
            None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        )

    @classmethod
    @torch.no_grad()
    def from_linear(
        cls,
        linear: nn.Module,
        quant_type: str = "nf4",
        blocksize: int = 64,
        double_quant: bool = True,
        compute_dtype: torch.dtype | None = None,
    ) -> Linear4bit:
        """Quantize ``linear.weight`` (out×in, blocks over the flattened weight, as bitsandbytes)."""
        if isinstance(linear, (Linear4bit, LoRALinear)):
            raise TypeError(
                f"this layer is already a {type(linear).__name__}: quantizing twice would "
                "add a second rounding error; start from the original nn.Linear"
            )
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear needs an nn.Linear, got {type(linear).__name__}")
        W = linear.weight
        compute_dtype = check_compute_dtype(compute_dtype or W.dtype, W.device)
        q = quantize_4bit(
            W.detach(), quant_type=quant_type, blocksize=blocksize, double_quant=double_quant
        )
        return cls(q, linear.bias, compute_dtype)

    @property
    def quantized(self) -> Quantized4bit:
        """The stored weight as a ``Quantized4bit`` (its tensors are this module's buffers)."""
        return Quantized4bit(
            self.packed,
            self.weight_shape,
            self.weight_dtype,
            self.blocksize,
            self.quant_type,
            self.absmax,
            self.absmax_codes,
            self.absmax2,
            self.offset,
            self.blocksize2,
        )

    @property
    def double_quant(self) -> bool:
        return self.absmax is None

    def block_absmax(self) -> torch.Tensor:
        """float32 absmax per block; with double quantization, rebuilt from its 8-bit codes."""
        return dequantize_absmax(self.quantized).float()

    def dequantized_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The weight ``Ŵ`` (out×in) in ``dtype`` (default: ``compute_dtype``), made on demand."""
        return dequantize_4bit(self.quantized, dtype or self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = Linear4bitFunction.apply(x.to(self.compute_dtype), self.quantized)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.to(x.dtype)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored weight: packed codes plus quantization constants."""
        return int(self.quantized.nbytes)

    def bits_per_parameter(self) -> float:
        return float(bits_per_parameter(self.quantized))

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, quant_type={self.quant_type}, "
            f"blocksize={self.blocksize}, double_quant={self.double_quant}, "
            f"compute_dtype={self.compute_dtype}, bias={self.bias is not None}"
        )


def native_bf16() -> bool:  # notebook 09 §5
    """Whether the CUDA device computes bfloat16 natively (Ampere or newer), emulation not counted."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.3 has no including_emulation and never counted emulation
        return torch.cuda.is_bf16_supported()


def choose_compute_dtype(device: torch.device | str) -> torch.dtype:  # notebook 09 §5
    """The compute dtype for QLoRA on ``device``: bfloat16 only where it is native, else float32.

    ``torch.cuda.is_bf16_supported()`` answers True on a T4 (sm_75) because bfloat16 can be
    *emulated* there; QLoRA needs it native, so ask with ``including_emulation=False``. Without
    native bfloat16 (T4, V100, CPU, MPS) this course computes in float32: it always runs and needs
    no loss scaler; float16 would be faster on a T4's tensor cores but overflows without one (the
    QLoRA authors found fp16 training unstable). The 4-bit storage is the same either way.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if native_bf16() else torch.float32
    return torch.float32


def check_compute_dtype(
    dtype: torch.dtype, device: torch.device | str
) -> torch.dtype:  # notebook 09 §5
    """Raise a clear ValueError if ``dtype`` cannot be used for matmuls on ``device``.

    bfloat16 needs Ampere or newer on CUDA (a T4 has no native bf16: use float32, or float16
    with care — the QLoRA authors found fp16 training unstable).
    """
    device = torch.device(device)
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"compute_dtype must be one of {FLOAT_DTYPES}, got {dtype}")
    if device.type == "cuda" and dtype == torch.bfloat16:
        if not native_bf16():
            name = torch.cuda.get_device_name(device)
            raise ValueError(
                f"compute_dtype torch.bfloat16 is not supported natively on {name}; "
                "use torch.float32 (safe) or torch.float16 (fast, less stable)"
            )
    try:
        a = torch.ones(2, 2, dtype=dtype, device=device)
        (a @ a).sum().item()
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"compute_dtype {dtype} cannot multiply matrices on {device}: {e}") from e
    return dtype


# ---------------------------------------------------------------- preparing a model


def _checkpointable(model: nn.Module) -> bool:
    """Whether ``enable_gradient_checkpointing`` knows this model: Hugging Face, or the course GPT."""
    hf = any(
        hasattr(model, f"{s}_enable")
        for s in ("activation_checkpointing", "gradient_checkpointing")
    )
    blocks = getattr(model, "blocks", None)
    return hf or (blocks is not None and all(isinstance(b, Block) for b in blocks))


def enable_gradient_checkpointing(model: nn.Module) -> nn.Module:  # notebook 09 §10
    """Recompute each transformer block in backward: memory for activations drops to one block's.

    Hugging Face models use their own switch (``activation_checkpointing_enable`` in transformers
    5, ``gradient_checkpointing_enable`` before; non-reentrant);
    the course GPT sets each ``Block.checkpoint`` flag.
    """
    if not _checkpointable(model):
        raise ValueError(
            "gradient checkpointing needs a course GPT (model.blocks of lorakit Blocks) "
            f"or a Hugging Face model; got {type(model).__name__}"
        )
    for switch in ("activation_checkpointing", "gradient_checkpointing"):  # transformers >= 5, < 5
        if hasattr(model, f"{switch}_enable"):
            getattr(model, f"{switch}_enable")(**{f"{switch}_kwargs": {"use_reentrant": False}})
            if getattr(getattr(model, "config", None), "use_cache", None):
                model.config.use_cache = (
                    False  # a KV cache is useless (and refused) while checkpointing
                )
            return model
    for block in model.blocks:
        block.checkpoint = True
    return model


# notebook 08 §3
def prepare_qlora(
    model: nn.Module,
    targets="all-linear",
    r: int = 64,
    alpha: float = 16,
    quant_type: str = "nf4",
    double_quant: bool = True,
    compute_dtype: torch.dtype | None = None,
    gradient_checkpointing: bool = False,
    dropout: float = 0.0,
    blocksize: int = 64,
    adapter_dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Turn ``model`` into a QLoRA model, in place, and return it.

    1. Every ``nn.Linear`` except the output head becomes a ``Linear4bit`` (as QLoRA loads the
       base; the head, embeddings and norms stay as they are, frozen).
    2. LoRA (``A``, ``B`` in ``adapter_dtype``, float32 as in PEFT, scaling ``alpha / r``) goes on ``targets``:
       ``"all-linear"`` (QLoRA's choice) or a list of module names (``["q_proj", "v_proj"]``).
    3. Only ``A`` and ``B`` train (``inject_lora`` freezes the rest). ``gradient_checkpointing=True`` recomputes blocks in backward.

    ``compute_dtype`` defaults to the weights' dtype (float32 on a CPU); bfloat16 is QLoRA's
    choice on a GPU that supports it natively (``choose_compute_dtype``). Small updates to
    ``A``, ``B`` would round away in 16 bits, so they stay float32 and the LoRA path casts.
    Every input is checked before the model is changed.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    already = [n for n, m in model.named_modules() if isinstance(m, (Linear4bit, LoRALinear))]
    if already:
        raise ValueError(
            f"the model already has 4-bit or LoRA layers ({already[:3]}): quantizing twice "
            "would add a second rounding error; start again from the 16-bit model"
        )
    linear = resolve_targets(
        model, "all-linear"
    )  # what QLoRA quantizes: every linear layer but the head
    names = resolve_targets(model, targets, head_allowed=False)
    config = LoRAConfig(r=r, alpha=alpha, dropout=dropout, targets=tuple(names))
    if quant_type not in TABLES:
        raise ValueError(f"quant_type must be one of {sorted(TABLES)}, got {quant_type!r}")
    if adapter_dtype not in FLOAT_DTYPES:
        raise ValueError(f"adapter_dtype must be one of {FLOAT_DTYPES}, got {adapter_dtype}")
    first = model.get_submodule(linear[0]).weight
    compute_dtype = check_compute_dtype(compute_dtype or first.dtype, first.device)
    del first  # hold no 16-bit weight: each one is freed as soon as its layer is replaced below
    if gradient_checkpointing and not _checkpointable(model):
        raise ValueError(
            f"gradient checkpointing is supported for the course GPT and Hugging Face models, "
            f"not {type(model).__name__}"
        )

    for path in linear:  # paths, not modules: the replaced 16-bit layer is freed at once
        replace_module(
            model,
            path,
            Linear4bit.from_linear(
                model.get_submodule(path), quant_type, blocksize, double_quant, compute_dtype
            ),
        )
    inject_lora(model, config=config, layer_types=(Linear4bit,), dtype=adapter_dtype)
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model


def storage_report(model: nn.Module) -> dict:  # notebook 08 §3
    """What the 4-bit layers store: parameters, bytes, bits per parameter (≈ 4.127 for NF4 + DQ;
    notebook 08 §3)."""
    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    n = sum(m.in_features * m.out_features for m in layers)
    nbytes = sum(m.nbytes for m in layers)
    return dict(
        layers=len(layers), parameters=n, bytes=nbytes, bits_per_parameter=8 * nbytes / max(n, 1)
    )


# ---------------------------------------------------------------- merging


def _qlora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    layers = {n: m for n, m in lora_layers(model).items() if isinstance(m.base, Linear4bit)}
    if not layers:
        raise ValueError("the model has no LoRA layers on a 4-bit base: call prepare_qlora first")
    return layers


def _merged_linear(layer: LoRALinear, dtype: torch.dtype) -> nn.Linear:
    """A frozen ``nn.Linear`` in ``dtype`` holding ``Ŵ + scaling·(AB)ᵀ`` (out×in) and the base's bias."""
    base: Linear4bit = layer.base
    W = base.dequantized_weight(torch.float32) + layer.delta().t().float()  # out×in
    merged = nn.Linear(
        base.in_features,
        base.out_features,
        bias=base.bias is not None,
        device=W.device,
        dtype=dtype,
    )
    merged.weight.copy_(W)
    if base.bias is not None:
        merged.bias.copy_(base.bias)
    return merged.requires_grad_(False)


@torch.no_grad()  # notebook 08 §6
def merge_into_4bit(model: nn.Module) -> list[str]:
    """Fold each adapter into its 4-bit base: dequantize, add ``scaling·(AB)ᵀ``, quantize again.

    In place; each LoRA layer becomes a plain ``Linear4bit`` (what PEFT's ``merge_and_unload``
    does on a bitsandbytes 4-bit model, with a warning). The result is small, but NOT the model
    that was trained: Ŵ sits on the 4-bit grid, so the sum is rounded to it a second time.
    Notebook 08 §6 measures the realized change against the intended one: an update of about
    one NF4 step survives on average with added noise; one much smaller than the step is rounded
    away. Measure before shipping it; ``merge_into_dequantized`` is the exact alternative.
    """
    layers = _qlora_layers(model)
    for name, layer in layers.items():
        base: Linear4bit = layer.base
        replace_module(
            model,
            name,
            Linear4bit.from_linear(
                _merged_linear(layer, base.weight_dtype),
                base.quant_type,
                base.blocksize,
                base.double_quant,
                base.compute_dtype,
            ),
        )
    return list(layers)


@torch.no_grad()  # notebook 08 §6
def merge_into_dequantized(model: nn.Module, dtype: torch.dtype = torch.float32) -> list[str]:
    """Replace each QLoRA layer by an ``nn.Linear`` holding ``Ŵ + scale·(AB)ᵀ`` in ``dtype``; in place.

    The adapter was trained against the dequantized weights Ŵ, not the original W16, so this is
    the merge that computes what was trained: in float32 the merged model equals the trained
    QLoRA model up to float rounding (notebook 08 measures ~1e-6 on logits). In bfloat16/float16
    the file is half the size, and the sum is rounded once more to 16 bits (notebook 09 measures
    what that costs). The result is a plain model again: ``save_pretrained`` works on it.
    Returns the merged module paths.
    """
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {FLOAT_DTYPES}, got {dtype}")
    layers = _qlora_layers(model)
    for name, layer in layers.items():
        replace_module(model, name, _merged_linear(layer, dtype))
    return list(layers)


@torch.no_grad()  # notebook 08 §6
def merge_into_16bit(model: nn.Module, base_model: nn.Module) -> nn.Module:
    """A copy of the original (16- or 32-bit) ``base_model`` with the adapters of ``model`` added.

    ``W16 + scaling·(AB)ᵀ``: common practice, and it computes exactly what "16-bit base + adapter"
    computes — but that is **not** the trained model. The adapter was trained against the
    dequantized weights Ŵ, so this model is off by ``W16 − Ŵ``, the base's own 4-bit rounding
    error, which the adapter had learned to live with. Notebook 08 §6 measures it: the logits
    move by about as much as quantizing the base moves them, and its validation loss is the
    worst of the three merges, while ``merge_into_dequantized`` stays at float rounding. Use
    this function to *compare*; to deploy the trained model, use ``merge_into_dequantized``.
    """
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers: nothing to merge")
    merged = copy.deepcopy(base_model)
    targets = {}
    for name, layer in layers.items():
        try:
            target = merged.get_submodule(name)
        except AttributeError:
            target = None
        if not isinstance(target, nn.Linear) or target.weight.shape != (
            layer.out_features,
            layer.in_features,
        ):
            raise ValueError(
                f"base_model has no nn.Linear {name} of shape ({layer.out_features}, "
                f"{layer.in_features}): it is not the model the adapter was trained on"
            )
        targets[name] = target
    for name, layer in layers.items():
        W = targets[name].weight
        W.add_(layer.delta().t().to(device=W.device, dtype=W.dtype))
    return merged
