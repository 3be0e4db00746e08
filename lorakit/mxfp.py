"""MXFP4 and NVFP4 by hand: 4-bit floats (E2M1) with one shared scale per small block
(notebook 06 §9, "After NF4: MXFP4 and NVFP4").

Both formats store every weight as an **E2M1** code: 1 sign bit, 2 exponent bits, 1 mantissa
bit, the 8 magnitudes ``0, 0.5, 1, 1.5, 2, 3, 4, 6`` (no infinities, no NaN). They differ in the
block and in how the block's scale is stored:

- **MXFP4** (OCP Microscaling spec v1.0): blocks of 32 values share one **E8M0** scale, an
  8-bit biased exponent: the scale is a power of two, ``2^(e − 127)``. The spec's scale rule:
  ``e = floor(log2(absmax)) − 2`` (2 = the exponent of E2M1's largest power of two, 4), so
  ``absmax / scale`` lands in [4, 8) and values above 6 saturate to ±6. Stored:
  4 + 8/32 = **4.25 bits per parameter**.
- **NVFP4** (NVIDIA, Blackwell): blocks of 16 values share one **FP8 E4M3** scale, and the
  whole tensor one **FP32** scale: ``tensor_scale = absmax(tensor) / (448·6)`` so the block
  scales use E4M3's whole range up to 448; ``block_scale = e4m3(absmax(block) / 6 / tensor_scale)``.
  Stored: 4 + 8/16 + 32/numel ≈ **4.5 bits per parameter**.

Rounding to E2M1 is to the nearest value with ties to the even code (IEEE style), unlike
bitsandbytes' NF4/FP4, whose ties go to the lower code (``lorakit.quant``). Two codes per byte,
the **first element in the LOW nibble** (torchao and the gpt-oss checkpoints), again the reverse
of bitsandbytes' order. Blocks run along the last dimension (each row of an ``nn.Linear``
weight is cut into blocks), so its size must be a multiple of the block size.

Checked against torchao's prototypes (``torchao.prototype.mx_formats``: ``to_mx`` and
``nvfp4_quantize``), byte for byte, in ``tests/test_mxfp.py``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn as nn

__all__ = [
    "E2M1",
    "E2M1_MAX",
    "E4M3_MAX",
    "FORMATS",
    "MXQuantized",
    "e2m1_codes",
    "pack_low_first",
    "unpack_low_first",
    "quantize_mxfp4",
    "quantize_nvfp4",
    "dequantize_mx",
    "bits_per_parameter",
    "roundtrip",
    "quantize_model_linears",
]

#: E2M1, index = bit pattern (bit 3 = sign, bits 2-1 = exponent, bit 0 = mantissa). Sorted
#: within each sign: code 1 is the subnormal 0.5, codes 2-7 are 2^(e−1)·(1 + m/2).
E2M1 = torch.tensor(
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
    dtype=torch.float32,
)
E2M1_MAX = 6.0
#: the largest finite FP8 E4M3 (``float8_e4m3fn``) value: NVFP4's block scales live in [2^-9, 448]
E4M3_MAX = 448.0
#: (block size, name of the scale format) per format
FORMATS = {"mxfp4": (32, "E8M0"), "nvfp4": (16, "E4M3")}


def e2m1_codes(scaled: torch.Tensor) -> torch.Tensor:  # notebook 06 §9
    """The E2M1 code (uint8, 0-15) of each scaled value: nearest magnitude, ties to the even code,
    values beyond ±6 saturated to ±6, the sign bit copied from the input (so −0.1 → code 8, −0)."""
    magnitudes = E2M1[:8].to(scaled.device)
    mids = (magnitudes[:-1] + magnitudes[1:]) / 2  # 0.25, 0.75, …, 5
    mag = scaled.float().abs().clamp(max=E2M1_MAX)
    code = torch.bucketize(mag, mids)  # a value on a midpoint: the lower code …
    tie = (code < 7) & (mag == mids[code.clamp(max=6)])
    code = code + (tie & (code % 2 == 1)).long()  # … unless that one is odd: ties to even
    return (code + 8 * torch.signbit(scaled).long()).to(torch.uint8)


def pack_low_first(codes: torch.Tensor) -> torch.Tensor:  # notebook 06 §9
    """Two 4-bit codes per byte, the FIRST in the LOW nibble (the MX/torchao/gpt-oss order)."""
    codes = codes.reshape(-1).to(torch.uint8)
    if codes.numel() % 2:
        raise ValueError(f"pack_low_first needs an even number of codes, got {codes.numel()}")
    return codes[0::2] | (codes[1::2] << 4)


def unpack_low_first(packed: torch.Tensor) -> torch.Tensor:  # notebook 06 §9
    """The inverse of ``pack_low_first``: 2·len(packed) codes."""
    return torch.stack([packed & 0xF, packed >> 4], dim=-1).reshape(-1)


@dataclass
class MXQuantized:  # notebook 06 §9
    """A tensor in MXFP4 or NVFP4: packed E2M1 codes plus the scales that undo the blocks.

    ``scales``: uint8, one per block: the biased E8M0 exponent (MXFP4) or the raw bits of an FP8
    E4M3 number (NVFP4). ``tensor_scale``: NVFP4's float32 per-tensor scale (None for MXFP4)."""

    packed: torch.Tensor
    scales: torch.Tensor
    shape: torch.Size
    dtype: torch.dtype
    fmt: str
    tensor_scale: torch.Tensor | None = None

    @property
    def blocksize(self) -> int:
        return FORMATS[self.fmt][0]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes stored: packed codes + block scales (+ NVFP4's one float32)."""
        tensors = [self.packed, self.scales, self.tensor_scale]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def bits_per_parameter(q: MXQuantized) -> float:  # notebook 06 §9
    """8·stored bytes / numel: 4.25 for MXFP4, 4.5 + 32/numel for NVFP4 (measured, not assumed)."""
    return 8.0 * q.nbytes / q.numel


def _blocks(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """Refuse bad input, then the float32 values as (number of blocks, blocksize)."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {sorted(FORMATS)}, got {fmt!r}")
    blocksize = FORMATS[fmt][0]
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError(
            f"x must be a floating torch.Tensor, got {type(x).__name__} {getattr(x, 'dtype', '')}"
        )
    if x.dim() == 0 or x.shape[-1] % blocksize:
        raise ValueError(
            f"{fmt} cuts the last dimension into blocks of {blocksize}: its size must be a "
            f"multiple of {blocksize}, got shape {tuple(x.shape)}"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"x must be finite to quantize to {fmt}")
    return x.detach().float().reshape(-1, blocksize)


def quantize_mxfp4(x: torch.Tensor) -> MXQuantized:  # notebook 06 §9
    """MXFP4: E2M1 codes, one power-of-two E8M0 scale per 32 values (OCP MX v1.0, §6.3's rule).

    ``scale = 2^(floor(log2 absmax) − 2)``; the exponent is clamped to E8M0's [-127, 127] and stored
    biased by 127 (255 means NaN and is never produced here)."""
    blocks = _blocks(x, "mxfp4")
    absmax = blocks.abs().amax(dim=1)
    mantissa, exponent = torch.frexp(absmax)  # absmax = m·2^e, m in [0.5, 1)
    floor_log2 = torch.where(absmax > 0, exponent - 1, torch.full_like(exponent, -127))
    scale_exp = (floor_log2 - 2).clamp(-127, 127)  # 2 = floor(log2 6), E2M1's top exponent
    # an all-zero (or subnormal) block: torchao divides by the smallest normal float32, 2^-126
    scale = torch.exp2(scale_exp.float()).clamp(min=2.0**-126)
    codes = e2m1_codes(blocks / scale.unsqueeze(1))
    return MXQuantized(
        packed=pack_low_first(codes),
        scales=(scale_exp + 127).to(torch.uint8),
        shape=x.shape,
        dtype=x.dtype,
        fmt="mxfp4",
    )


def quantize_nvfp4(x: torch.Tensor) -> MXQuantized:  # notebook 06 §9
    """NVFP4: E2M1 codes, one FP8 E4M3 scale per 16 values, one FP32 scale for the whole tensor.

    ``tensor_scale = absmax / (448·6)``; per block ``e4m3(absmax_block / 6 / tensor_scale)``
    (clamped to E4M3's [2^-6, 448], rounded by torch's ``float8_e4m3fn`` cast); the values are
    multiplied by ``(1 / tensor_scale) / block_scale`` and rounded to E2M1 (as torchao does)."""
    blocks = _blocks(x, "nvfp4")
    tensor_absmax = blocks.abs().max()
    if tensor_absmax == 0:
        raise ValueError(
            "NVFP4's per-tensor scale is absmax / (448·6): an all-zero tensor has none"
        )
    tensor_scale = tensor_absmax / (E4M3_MAX * E2M1_MAX)
    block_scale = blocks.abs().amax(dim=1) / E2M1_MAX / tensor_scale
    tiny = torch.finfo(torch.float8_e4m3fn).tiny
    block_e4m3 = block_scale.clamp(min=tiny, max=E4M3_MAX).to(torch.float8_e4m3fn)
    reciprocal = (1.0 / tensor_scale) / block_e4m3.float()
    codes = e2m1_codes((blocks * reciprocal.unsqueeze(1)).clamp(-E2M1_MAX, E2M1_MAX))
    return MXQuantized(
        packed=pack_low_first(codes),
        scales=block_e4m3.view(torch.uint8),
        shape=x.shape,
        dtype=x.dtype,
        fmt="nvfp4",
        tensor_scale=tensor_scale.reshape(1),
    )


def block_scales(q: MXQuantized) -> torch.Tensor:  # notebook 06 §9
    """The float32 scale of each block: ``2^(e − 127)`` (MXFP4) or ``e4m3 · tensor_scale`` (NVFP4)."""
    if q.fmt == "mxfp4":
        return torch.exp2(q.scales.float() - 127.0)
    return q.scales.view(torch.float8_e4m3fn).float() * q.tensor_scale


def dequantize_mx(
    q: MXQuantized, dtype: torch.dtype | None = None
) -> torch.Tensor:  # notebook 06 §9
    """``E2M1[code] · block scale`` in float32, cast to ``q.dtype`` (or ``dtype``), in ``q.shape``."""
    if not isinstance(q, MXQuantized):
        raise TypeError(
            f"q must be an MXQuantized (from quantize_mxfp4/quantize_nvfp4), got {type(q).__name__}"
        )
    values = E2M1.to(q.packed.device)[unpack_low_first(q.packed).long()].view(-1, q.blocksize)
    out = values * block_scales(q).unsqueeze(1)
    return out.to(q.dtype if dtype is None else dtype).view(q.shape)


def roundtrip(x: torch.Tensor, fmt: str) -> torch.Tensor:  # notebook 06 §9
    """``x`` quantized to ``fmt`` ("mxfp4" or "nvfp4") and back: what a model in that format computes with."""
    quantize = {"mxfp4": quantize_mxfp4, "nvfp4": quantize_nvfp4}
    if fmt not in quantize:
        raise ValueError(f"fmt must be one of {sorted(quantize)}, got {fmt!r}")
    return dequantize_mx(quantize[fmt](x))


@torch.no_grad()
def quantize_model_linears(
    model: nn.Module, fmt: str, skip: tuple[str, ...] = ("lm_head",)
) -> nn.Module:  # notebook 06 §9
    """A deep copy of ``model`` whose ``nn.Linear`` weights went through ``fmt`` and back (as
    ``lorakit.quant.quantize_model_linears`` does for NF4/FP4/INT4): its loss is the format's damage."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {sorted(FORMATS)}, got {fmt!r}")
    copied = copy.deepcopy(model)
    for name, module in copied.named_modules():
        if isinstance(module, nn.Linear) and not name.endswith(tuple(skip)):
            module.weight.copy_(roundtrip(module.weight, fmt))
    return copied
