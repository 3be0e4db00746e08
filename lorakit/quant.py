"""4-bit blockwise quantization (NF4, FP4, INT4) and double quantization, bit-exact with
bitsandbytes (notebooks 06 and 07).

A 4-bit data type is nothing but a table of 16 numbers in [-1, 1]. To quantize a tensor we
cut its flattened values into blocks of ``blocksize``, divide each block by its absolute
maximum (``absmax``, kept in float32), and store for every value the 4-bit code of the nearest
table entry, two codes per byte (``packed``). Dequantizing is ``table[code] * absmax``.

Double quantization (QLoRA, notebook 07) then quantizes the float32 ``absmax`` constants
themselves: subtract their mean (``offset``), cut them into blocks of 256 and store each as an
8-bit code of bitsandbytes' signed *dynamic map*, with one float32 ``absmax2`` per 256 blocks.

Semantics match ``bitsandbytes.functional.quantize_4bit`` on the CPU byte for byte (checked in
``tests/test_quant.py``): flattened row-major blocks, multiply by ``1/absmax`` (the trailing
partial block is divided, as bitsandbytes does), nearest code by midpoints with ties going to
the lower code, first element in the HIGH nibble, an odd count padded with the value 0.0.
"""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass, replace
from functools import lru_cache

import torch
import torch.nn as nn

__all__ = [
    "NF4", "FP4", "INT4", "TABLES", "nf4_from_quantiles", "dynamic_map", "Quantized4bit",
    "quantize_4bit", "dequantize_4bit", "dequantize_absmax", "bits_per_parameter",
    "nearest_codes", "pack_nibbles", "unpack_nibbles", "quantize_blockwise_8bit",
    "absmax_int_roundtrip", "code_usage", "error_metrics", "constants_bits",
    "blocksize_tradeoff", "quantize_model_linears", "max_half_gap",
]

# ------------------------------------------------------------------------------- code books

#: NormalFloat4 (QLoRA): index = 4-bit code. 16 normal quantiles scaled to [-1, 1], with an
#: exact zero and one more positive level than negative ones. Derived in notebook 06 by
#: ``nf4_from_quantiles()``, which reproduces these float32 values bit for bit.
NF4 = torch.tensor(
    [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
     -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
     0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
     0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0],
    dtype=torch.float32,
)

#: bitsandbytes' FP4 (E2M1 without infinities): index = bit pattern, bit 3 is the sign, so the
#: table is NOT sorted. Values are the E2M1 numbers divided by their maximum, 12.
FP4 = torch.tensor(
    [0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, -0.0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0],
    dtype=torch.float32,
) / 12.0

#: Symmetric absmax INT4 written as a table: code k means (k - 8) / 7, i.e. round(7 x / absmax).
#: Code 0 (-8/7) lies outside [-1, 1] and is never chosen: INT4 really has 15 levels.
INT4 = (torch.arange(16, dtype=torch.float32) - 8.0) / 7.0

TABLES = {"nf4": NF4, "fp4": FP4, "int4": INT4}


def nf4_from_quantiles(offset: float = 0.9677083) -> torch.Tensor:
    """NF4 derived from normal quantiles (notebook 06): equal probability mass per code.

    8 positive levels ``Φ⁻¹(linspace(offset, 0.5, 9)[:-1])``, 7 negative levels
    ``-Φ⁻¹(linspace(offset, 0.5, 8)[:-1])`` and an exact 0, sorted and divided by the largest.
    The probabilities come from torch's float32 ``linspace`` (which fills half from each end);
    the quantiles are taken in float64 and rounded to float32, as bitsandbytes does with
    scipy. ``offset`` ≈ 1 − ½(1/30 + 1/32) keeps Φ⁻¹ finite at the ends.
    """
    if not 0.5 < offset < 1.0:
        raise ValueError(f"offset must be in (0.5, 1), got {offset}")
    positive = torch.special.ndtri(torch.linspace(offset, 0.5, 9)[:-1].double())
    negative = -torch.special.ndtri(torch.linspace(offset, 0.5, 8)[:-1].double())
    values = torch.cat([positive, torch.zeros(1, dtype=torch.float64), negative]).float()
    values = values.sort().values
    return values / values.max()


def dynamic_map(signed: bool = True) -> torch.Tensor:
    """bitsandbytes' 8-bit dynamic map, built by hand (notebook 07): 256 sorted float32 values.

    Not IEEE FP8: for each decade ``10^-6 … 10^0`` (exponent i = 0…6) it holds the midpoints of
    a linear grid on [0.1, 1] with ``2^i`` (signed) or ``2^(i+1)`` (unsigned) cells, scaled by
    ``10^(i-6)``: coarse for large values, ever finer towards zero. Plus 0 and 1.0. Signed maps
    mirror every level (254 + 2 = 256 values). Equal to ``create_dynamic_map(signed)``.
    """
    data = []
    for i in range(7):
        cells = 2**i if signed else 2 ** (i + 1)
        edges = torch.linspace(0.1, 1, cells + 1, dtype=torch.float32)
        means = (edges[:-1] + edges[1:]) / 2.0
        data += (10 ** (i - 6) * means).tolist()
        if signed:
            data += (-(10 ** (i - 6)) * means).tolist()
    data += [0.0, 1.0]
    return torch.tensor(sorted(data), dtype=torch.float32)


@lru_cache(maxsize=None)
def _dynamic_map_on(device: str) -> torch.Tensor:
    return dynamic_map(signed=True).to(device)


def max_half_gap(table: torch.Tensor) -> float:
    """Half the widest gap between neighbouring table values: the worst rounding error of a
    scaled value in [-1, 1] (×absmax for the original value). NF4: 0.152 (between -1 and code 1), FP4: 0.167."""
    values = table.sort().values
    return float((values[1:] - values[:-1]).max() / 2)


# ------------------------------------------------------------------------------- nearest code


def _midpoints(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(midpoints between sorted neighbours, order) with ``table[order]`` sorted."""
    order = torch.argsort(table)
    ordered = table[order]
    return (ordered[:-1] + ordered[1:]) / 2, order


def nearest_codes(scaled: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """The 4-bit code of the nearest table value for each scaled value (uint8), the readable way.

    The code is decided by the midpoints between neighbouring (sorted) values: ``bucketize``
    counts the midpoints strictly below each value, so a value exactly on a midpoint goes to the
    LOWER code, as in bitsandbytes. FP4's table is not sorted, so sorted positions are mapped
    back to its bit patterns. ``quantize_4bit`` uses a faster lookup with identical results.
    """
    table = table.to(scaled.device)
    mids, order = _midpoints(table)
    position = torch.bucketize(scaled.float(), mids)
    return order[position].to(torch.uint8)


@lru_cache(maxsize=None)
def _bucket_tables(quant_type: str, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Lookup tables over the top 16 bits of a float32: (code_low, threshold, order or None).

    All float32 numbers sharing their top 16 bits (sign, exponent, 7 mantissa bits) form a
    small interval; it is so narrow that at most one midpoint falls inside it. So the nearest
    code is ``code_low[h] + (value > threshold[h])``, where ``h`` is the top half of the value's
    bits: two table lookups and one comparison instead of a binary search. It is the same rule
    as ``nearest_codes`` (checked for every interval in the tests), about twice as fast.
    """
    mids, order = _midpoints(TABLES[quant_type])
    bits = torch.arange(65536, dtype=torch.int64) << 16
    low = _as_float32(bits)
    high = _as_float32(bits | 0xFFFF)
    start, end = torch.minimum(low, high), torch.maximum(low, high)
    finite = torch.isfinite(start) & torch.isfinite(end)  # NaN/Inf buckets: inputs never land here
    start, end = torch.where(finite, start, 0.0), torch.where(finite, end, 0.0)
    code_start, code_end = torch.bucketize(start, mids), torch.bucketize(end, mids)
    assert int((code_end - code_start).max()) <= 1, "a 16-bit bucket holds two midpoints"
    inside = mids[code_start.clamp(max=len(mids) - 1)]
    threshold = torch.where(code_end > code_start, inside, torch.tensor(float("inf")))
    is_sorted = bool(torch.equal(order, torch.arange(16)))
    return (code_start.to(torch.uint8).to(device), threshold.to(device),
            None if is_sorted else order.to(torch.uint8).to(device))


def _as_float32(bits: torch.Tensor) -> torch.Tensor:
    """Reinterpret 32-bit patterns held in int64 as float32."""
    signed = torch.where(bits >= 2**31, bits - 2**32, bits).to(torch.int32)
    return signed.view(torch.float32)


def _fast_codes(scaled: torch.Tensor, quant_type: str) -> torch.Tensor:
    """``nearest_codes`` for a contiguous float32 tensor, through ``_bucket_tables``."""
    if sys.byteorder != "little":  # the top half of a float32 is its second uint16 only there
        return nearest_codes(scaled, TABLES[quant_type])
    code_low, threshold, order = _bucket_tables(quant_type, str(scaled.device))
    top = scaled.view(torch.uint16)[1::2].int()
    codes = code_low.index_select(0, top)
    codes += scaled > threshold.index_select(0, top)
    return codes if order is None else order.index_select(0, codes.int())


# ------------------------------------------------------------------------------- packing


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes per byte, the first in the HIGH nibble: ``codes[0::2] << 4 | codes[1::2]``.

    ``codes`` must have an even length (``quantize_4bit`` pads an odd count with the code of 0.0).
    """
    if codes.numel() % 2:
        raise ValueError(f"pack_nibbles needs an even number of codes, got {codes.numel()}")
    codes = codes.reshape(-1).to(torch.uint8)
    return (codes[0::2] << 4) | codes[1::2]


def unpack_nibbles(packed: torch.Tensor, n: int | None = None) -> torch.Tensor:
    """The inverse of ``pack_nibbles``: uint8 codes (high nibble first), the first ``n`` kept."""
    codes = torch.stack([packed >> 4, packed & 0xF], dim=-1).reshape(-1)
    return codes if n is None else codes[:n]


@lru_cache(maxsize=None)
def _pair_table(quant_type: str, device: str) -> torch.Tensor:
    """For each of the 256 bytes, the two table values it encodes, as one int64 per byte.

    Dequantizing then needs a single gather per byte instead of unpack + two lookups.
    """
    table = TABLES[quant_type]
    pairs = torch.stack([table.repeat_interleave(16), table.repeat(16)], dim=1).contiguous()
    return pairs.view(torch.int64).reshape(256).to(device)


# ------------------------------------------------------------------------------- the container


@dataclass
class Quantized4bit:
    """A 4-bit quantized tensor: packed codes plus what is needed to undo the scaling.

    ``absmax`` holds one float32 per block, or is None when double-quantized; then
    ``absmax_codes`` (uint8, one per block), ``absmax2`` (float32, one per ``blocksize2`` blocks)
    and ``offset`` (float32 scalar, the mean subtracted first) describe it instead.
    """

    packed: torch.Tensor
    shape: torch.Size
    dtype: torch.dtype
    blocksize: int
    quant_type: str
    absmax: torch.Tensor | None = None
    absmax_codes: torch.Tensor | None = None
    absmax2: torch.Tensor | None = None
    offset: torch.Tensor | None = None
    blocksize2: int = 256

    @property
    def double_quant(self) -> bool:
        return self.absmax is None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes actually stored: packed codes + constants (the shared 16-entry table is not
        counted; it is one global constant, not part of each tensor)."""
        tensors = [self.packed, self.absmax, self.absmax_codes, self.absmax2, self.offset]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def to(self, device: torch.device | str) -> "Quantized4bit":
        """A copy with every tensor moved to ``device``."""
        moved = {k: getattr(self, k).to(device) for k in
                 ("packed", "absmax", "absmax_codes", "absmax2", "offset") if getattr(self, k) is not None}
        return replace(self, **moved)


def bits_per_parameter(q: Quantized4bit) -> float:
    """Storage cost per weight measured from the stored bytes: 8·nbytes / numel.

    4.5 at blocksize 64 (4 bits + 32/64 for the float32 absmax), ≈ 4.127 with double
    quantization (4 + 8/64 + 32/(64·256)).
    """
    return 8.0 * q.nbytes / q.numel


def constants_bits(blocksize: int = 64, double_quant: bool = False, blocksize2: int = 256) -> float:
    """Bits per parameter spent on the scaling constants, from the formula (notebook 07).

    Without double quantization a float32 per block: ``32 / blocksize``. With it: one byte per
    block plus a float32 per ``blocksize2`` blocks: ``8 / blocksize + 32 / (blocksize·blocksize2)``.
    """
    _check_blocksize(blocksize)
    if not double_quant:
        return 32.0 / blocksize
    _check_blocksize(blocksize2, "blocksize2")
    return 8.0 / blocksize + 32.0 / (blocksize * blocksize2)


# ------------------------------------------------------------------------------- input checks

_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _check_blocksize(blocksize: int, name: str = "blocksize") -> None:
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize <= 0 \
            or blocksize & (blocksize - 1):
        raise ValueError(f"{name} must be a positive power of two (e.g. 64), got {blocksize!r}")


def _check_input(x: torch.Tensor, quant_type: str, blocksize: int) -> None:
    """Every bad input is refused here, before any work is done."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x must be float32, bfloat16 or float16 (as in bitsandbytes), got {x.dtype}")
    if quant_type not in TABLES:
        raise ValueError(f"quant_type must be one of {sorted(TABLES)}, got {quant_type!r}")
    _check_blocksize(blocksize)
    if x.numel() == 0:
        raise ValueError(f"cannot quantize an empty tensor (shape {tuple(x.shape)})")


def _raise_if_not_finite(x: torch.Tensor) -> None:
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        where = tuple(int(i) for i in torch.nonzero(bad)[0])
        value = x[where].item()
        raise ValueError(
            f"x must be finite, but it holds {value} at index {where} "
            f"({int(bad.sum())} non-finite value(s) in total)"
        )


# ------------------------------------------------------------------------------- quantize


def _absmax_and_scaled(flat: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block float32 absmax, and the values scaled into [-1, 1] (float32, flat).

    Full blocks are multiplied by ``1/absmax``; the trailing partial block is divided by its
    absmax — exactly bitsandbytes' arithmetic, so codes on a midpoint come out the same. An
    absmax below 1e-38 (an all-zero block) is clamped for the scaling only, as bitsandbytes does
    (which also stores the clamped value for a trailing partial block).
    """
    n = flat.numel()
    full = n - n % blocksize
    blocks = flat[:full].view(-1, blocksize)
    absmax = torch.maximum(blocks.amax(dim=1), -blocks.amin(dim=1)).float()
    scaled = torch.empty(n, dtype=torch.float32, device=flat.device)
    torch.mul(blocks, (1.0 / absmax.clamp(min=1e-38)).unsqueeze(1), out=scaled[:full].view(-1, blocksize))
    if full < n:
        tail = flat[full:].float()
        tail_absmax = tail.abs().max().clamp(min=1e-38)
        torch.div(tail, tail_absmax, out=scaled[full:])
        absmax = torch.cat([absmax, tail_absmax.view(1)])
    return absmax, scaled


def quantize_blockwise_8bit(
    values: torch.Tensor, blocksize: int = 256, code: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """8-bit blockwise quantization with a 256-entry code (default: the signed dynamic map).

    Returns ``(codes uint8, absmax float32 per block)``. Codes are the exact nearest entries
    (midpoints, ties to the lower code). bitsandbytes' CPU kernel instead rounds through a
    65,536-entry lookup table, so ≈ 0.2 % of its codes differ from these (notebook 07 measures it).
    """
    _check_blocksize(blocksize)
    flat = values.reshape(-1).float()
    if flat.numel() == 0:
        raise ValueError("cannot quantize an empty tensor")
    code = _dynamic_map_on(str(flat.device)) if code is None else code.to(flat.device)
    if code.numel() != 256:
        raise ValueError(f"an 8-bit code must have 256 entries, got {code.numel()}")
    absmax, scaled = _absmax_and_scaled(flat, blocksize)
    mids, order = _midpoints(code)
    return order[torch.bucketize(scaled, mids)].to(torch.uint8), absmax


def quantize_4bit(
    x: torch.Tensor, quant_type: str = "nf4", blocksize: int = 64, double_quant: bool = False
) -> Quantized4bit:
    """Blockwise 4-bit quantization of ``x``, in bitsandbytes' exact format (notebook 06).

    ``x`` (float32/bfloat16/float16, any shape, finite) is flattened row-major, cut into blocks
    of ``blocksize``, scaled by each block's absmax and rounded to the nearest code of the
    ``quant_type`` table ("nf4", "fp4" or "int4"). With ``double_quant`` the float32 absmax are
    quantized again to 8 bits (notebook 07); the 4-bit codes do not change.
    """
    _check_input(x, quant_type, blocksize)
    flat = x.detach().reshape(-1)
    absmax, scaled = _absmax_and_scaled(flat, blocksize)
    if not bool(torch.isfinite(absmax).all()):  # cheap test first; locate only on failure
        _raise_if_not_finite(x.detach())
    if scaled.numel() % 2:  # pad with the value 0.0, as bitsandbytes does
        scaled = torch.cat([scaled, scaled.new_zeros(1)])
    codes = _fast_codes(scaled, quant_type)
    packed = ((codes[0::2] << 4) | codes[1::2])
    q = Quantized4bit(packed=packed, shape=x.shape, dtype=x.dtype, blocksize=blocksize,
                      quant_type=quant_type, absmax=absmax)
    if double_quant:
        offset = absmax.mean()
        q.absmax_codes, q.absmax2 = quantize_blockwise_8bit(absmax - offset, q.blocksize2)
        q.offset, q.absmax = offset, None
    return q


# ------------------------------------------------------------------------------- dequantize


def dequantize_absmax(q: Quantized4bit) -> torch.Tensor:
    """The float32 absmax per block: stored, or recovered as ``dynmap[code]·absmax2 + offset``."""
    if not q.double_quant:
        return q.absmax
    n = q.absmax_codes.numel()
    values = _dynamic_map_on(str(q.absmax_codes.device)).index_select(0, q.absmax_codes.int())
    scale = q.absmax2.repeat_interleave(q.blocksize2)[:n]
    return values * scale + q.offset


def dequantize_4bit(q: Quantized4bit, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``table[code] · absmax`` in float32, cast to ``q.dtype`` (or ``dtype``), in ``q.shape``.

    One gather per byte (both codes at once, see ``_pair_table``) and one multiply per value,
    written straight into the output dtype. Equal to bitsandbytes' ``dequantize_4bit``.
    """
    if not isinstance(q, Quantized4bit):
        raise TypeError(f"q must be a Quantized4bit (from quantize_4bit), got {type(q).__name__}")
    dtype = q.dtype if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch dtype, got {dtype!r}")
    absmax = dequantize_absmax(q)
    n, bs = q.numel, q.blocksize
    pairs = _pair_table(q.quant_type, str(q.packed.device))
    values = pairs.index_select(0, q.packed.int()).view(torch.float32)
    out = torch.empty(n, dtype=dtype, device=q.packed.device)
    full = n - n % bs
    torch.mul(values[:full].view(-1, bs), absmax[: full // bs].unsqueeze(1), out=out[:full].view(-1, bs))
    if full < n:
        torch.mul(values[full:n], absmax[-1], out=out[full:])
    return out.view(q.shape)


# ------------------------------------------------------------------------------- helpers for 06/07


def absmax_int_roundtrip(x: torch.Tensor, bits: int = 8, blocksize: int | None = None) -> torch.Tensor:
    """Symmetric absmax integer quantization and back: ``round(x·L/absmax)·absmax/L``, L = 2^(bits-1)−1.

    One absmax for the whole tensor (``blocksize=None``) or one per block of the flattened
    tensor. Notebook 06 uses it to show why a single outlier ruins a whole tensor's precision.
    """
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be between 2 and 16, got {bits}")
    levels = 2 ** (bits - 1) - 1
    flat = x.detach().reshape(-1).float()
    if blocksize is None:
        blocksize = flat.numel()
    elif isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize <= 0:
        raise ValueError(f"blocksize must be a positive integer or None, got {blocksize!r}")
    pad = (-flat.numel()) % blocksize
    blocks = torch.cat([flat, flat.new_zeros(pad)]).view(-1, blocksize)
    absmax = blocks.abs().amax(dim=1, keepdim=True).clamp(min=1e-38)
    out = torch.round(blocks * (levels / absmax)) * (absmax / levels)
    return out.reshape(-1)[: flat.numel()].view(x.shape).to(x.dtype)


def code_usage(q: Quantized4bit) -> torch.Tensor:
    """How often each of the 16 codes is used (int64 counts, padding excluded)."""
    return torch.bincount(unpack_nibbles(q.packed, q.numel).long(), minlength=16)


def error_metrics(x: torch.Tensor, x_hat: torch.Tensor) -> dict:
    """Mean absolute, mean relative (|x−x̂| / (|x| + 1e-8), as bitsandbytes' tests), RMS and max error."""
    if x.shape != x_hat.shape:
        raise ValueError(f"x and x_hat must have the same shape, got {tuple(x.shape)} and {tuple(x_hat.shape)}")
    err = (x.float() - x_hat.float()).abs()
    return {
        "mae": err.mean().item(),
        "mean_rel": (err / (x.float().abs() + 1e-8)).mean().item(),
        "rmse": err.pow(2).mean().sqrt().item(),
        "max": err.max().item(),
    }


def blocksize_tradeoff(
    x: torch.Tensor, blocksize: int, quant_type: str = "nf4", double_quant: bool = False
) -> tuple[float, float]:
    """(mean absolute error, overhead bits per parameter) of quantizing ``x`` at ``blocksize``.

    Smaller blocks track local scale better (less error) but store more constants (more bits):
    the trade-off behind the block-size slider of notebook 06. Overhead is measured from the
    stored bytes: ``bits_per_parameter − 4``.
    """
    q = quantize_4bit(x, quant_type, blocksize, double_quant)
    mae = error_metrics(x, dequantize_4bit(q))["mae"]
    return mae, 8.0 * (q.nbytes - q.packed.numel()) / q.numel


@torch.no_grad()
def quantize_model_linears(
    model: nn.Module,
    quant_type: str = "nf4",
    blocksize: int = 64,
    double_quant: bool = False,
    skip: tuple[str, ...] = ("lm_head",),
) -> nn.Module:
    """A deep copy of ``model`` whose ``nn.Linear`` weights went through quantize → dequantize.

    The copy computes exactly what a 4-bit model computes (weights = dequantized values), in
    ordinary float layers, so its loss measures the damage quantization does. Modules whose
    name ends with an entry of ``skip`` stay untouched (QLoRA/transformers keep ``lm_head``
    in 16 bits). ``quant_type="none"`` returns an untouched copy, for a baseline.
    """
    if quant_type != "none" and quant_type not in TABLES:
        raise ValueError(f"quant_type must be 'none' or one of {sorted(TABLES)}, got {quant_type!r}")
    _check_blocksize(blocksize)
    copied = copy.deepcopy(model)
    if quant_type == "none":
        return copied
    for name, module in copied.named_modules():
        if isinstance(module, nn.Linear) and not name.endswith(tuple(skip)):
            w = module.weight
            q = quantize_4bit(w.data, quant_type, blocksize, double_quant)
            w.data.copy_(dequantize_4bit(q))
    return copied
