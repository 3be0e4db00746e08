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

``quantize_4bit``/``dequantize_4bit`` read as notebook 06 §5's steps; two steps have a faster
twin with the same bits in ``lorakit.fast`` (``lorakit.fast.ENABLED = False``: this file only).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from functools import cache

import torch
import torch.nn as nn

from . import fast, validate

__all__ = [
    "FLOAT_DTYPES",
    "NF4",
    "FP4",
    "INT4",
    "TABLES",
    "nf4_from_quantiles",
    "dynamic_map",
    "Quantized4bit",
    "quantize_4bit",
    "dequantize_4bit",
    "dequantize_absmax",
    "bits_per_parameter",
    "nearest_codes",
    "pack_nibbles",
    "unpack_nibbles",
    "quantize_blockwise_8bit",
    "absmax_int_roundtrip",
    "code_usage",
    "error_metrics",
    "constants_bits",
    "blocksize_tradeoff",
    "quantize_model_linears",
    "max_half_gap",
]

# ------------------------------------------------------------------------------- code books

#: NormalFloat4 (QLoRA): index = 4-bit code. 16 normal quantiles scaled to [-1, 1], with an
#: exact zero and one more positive level than negative ones. Derived in notebook 06 §4 by
#: ``nf4_from_quantiles()``, which reproduces these float32 values bit for bit.
NF4 = torch.tensor(
    [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ],
    dtype=torch.float32,
)

#: bitsandbytes' FP4 (E2M1 without infinities): index = bit pattern, bit 3 is the sign, so the
#: table is NOT sorted. Values are the E2M1 numbers divided by their maximum, 12 (notebook 06 §3).
FP4 = (
    torch.tensor(
        [
            0.0,
            0.0625,
            8.0,
            12.0,
            4.0,
            6.0,
            2.0,
            3.0,
            -0.0,
            -0.0625,
            -8.0,
            -12.0,
            -4.0,
            -6.0,
            -2.0,
            -3.0,
        ],
        dtype=torch.float32,
    )
    / 12.0
)

#: Symmetric absmax INT4 written as a table: code k means (k - 8) / 7, i.e. round(7 x / absmax).
#: Code 0 (-8/7) lies outside [-1, 1] and is never chosen: INT4 really has 15 levels (06 §3).
INT4 = (torch.arange(16, dtype=torch.float32) - 8.0) / 7.0

TABLES = {"nf4": NF4, "fp4": FP4, "int4": INT4}


def nf4_from_quantiles(offset: float = 0.9677083) -> torch.Tensor:  # notebook 06 §4
    """NF4 derived from normal quantiles (notebook 06 §4): equal probability mass per code.

    8 positive levels ``Φ⁻¹(linspace(offset, 0.5, 9)[:-1])``, 7 negative levels
    ``-Φ⁻¹(linspace(offset, 0.5, 8)[:-1])`` and an exact 0, sorted and divided by the largest.
    Probabilities from torch's float32 ``linspace``, quantiles in float64 rounded to float32, as
    bitsandbytes does with scipy. ``offset`` ≈ 1 − ½(1/30 + 1/32) keeps Φ⁻¹ finite at the ends."""
    validate.number(offset, "offset", 0.5, 1.0, low_open=True, high_open=True)
    positive = torch.special.ndtri(torch.linspace(offset, 0.5, 9)[:-1].double())
    negative = -torch.special.ndtri(torch.linspace(offset, 0.5, 8)[:-1].double())
    values = torch.cat([positive, torch.zeros(1, dtype=torch.float64), negative]).float()
    values = values.sort().values
    return values / values.max()


def dynamic_map(signed: bool = True) -> torch.Tensor:  # notebook 07 §3
    """bitsandbytes' 8-bit dynamic map, built by hand (notebook 07 §3): 256 sorted float32 values.

    Not IEEE FP8: for each decade ``10^-6 … 10^0`` (i = 0…6) the midpoints of a linear grid on
    [0.1, 1] with ``2^i`` (signed) or ``2^(i+1)`` (unsigned) cells, scaled by ``10^(i-6)``, plus 0
    and 1.0; signed maps mirror every level (254 + 2 = 256). Equal to ``create_dynamic_map(signed)``."""
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


@cache
def _dynamic_map_on(device: str) -> torch.Tensor:
    return dynamic_map(signed=True).to(device)


def max_half_gap(table: torch.Tensor) -> float:  # notebook 07 §4
    """Half the widest gap between neighbouring table values: the worst rounding error of a
    scaled value in [-1, 1] (×absmax for the original value). NF4: 0.152 (between -1 and code 1),
    FP4: 0.167. Notebook 07 §4 uses it as the error bound of double quantization."""
    values = table.sort().values
    return float((values[1:] - values[:-1]).max() / 2)


# ------------------------------------------------------------------------------- nearest code


def _midpoints(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the 15 midpoints between sorted neighbours, order) with ``table[order]`` sorted."""
    order = torch.argsort(table)
    ordered = table[order]
    return (ordered[:-1] + ordered[1:]) / 2, order


def nearest_codes(scaled: torch.Tensor, table: torch.Tensor) -> torch.Tensor:  # notebook 06 §5
    """The code of the nearest table value for each scaled value (uint8). Notebook 06 §5, step 3.

    The code is decided by the midpoints between neighbouring (sorted) values: ``bucketize``
    counts the midpoints strictly below each value, so a value exactly on a midpoint goes to the
    LOWER code, as in bitsandbytes. FP4's table is not sorted, so sorted positions are mapped
    back to its bit patterns. (``lorakit.fast.nearest_codes`` gives the same codes, faster.)
    """
    table = table.to(scaled.device)
    mids, order = _midpoints(table)
    position = torch.bucketize(scaled.float(), mids)
    return order[position].to(torch.uint8)


# ------------------------------------------------------------------------------- packing


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:  # notebook 06 §5
    """Two 4-bit codes per byte, the first in the HIGH nibble: ``codes[0::2] << 4 | codes[1::2]``.

    numel codes → numel/2 uint8. Notebook 06 §5, step 4. ``codes`` must have an even length
    (``quantize_4bit`` pads an odd count with the code of 0.0).
    """
    if codes.numel() % 2:
        raise ValueError(f"pack_nibbles needs an even number of codes, got {codes.numel()}")
    codes = codes.reshape(-1).to(torch.uint8)
    return (codes[0::2] << 4) | codes[1::2]


def unpack_nibbles(packed: torch.Tensor, n: int | None = None) -> torch.Tensor:  # notebook 06 §5
    """The inverse of ``pack_nibbles``: 2·len(packed) uint8 codes (high nibble first), the first
    ``n`` kept. Notebook 06 §5, step 5."""
    codes = torch.stack([packed >> 4, packed & 0xF], dim=-1).reshape(-1)
    return codes if n is None else codes[:n]


# ------------------------------------------------------------------------------- the container


# notebook 06 §5
@dataclass
class Quantized4bit:
    """A 4-bit quantized tensor: packed codes plus what is needed to undo the scaling (notebook 06 §5).

    ``packed``: ceil(numel/2) uint8. ``absmax``: ceil(numel/blocksize) float32, or None when
    double-quantized; then ``absmax_codes`` (uint8, one per block), ``absmax2`` (float32, one per
    ``blocksize2`` blocks) and ``offset`` (float32 scalar, the mean subtracted first) describe it.
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
        """Bytes stored: packed codes + constants (not the 16-entry table, one global constant)."""
        tensors = [self.packed, self.absmax, self.absmax_codes, self.absmax2, self.offset]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def bits_per_parameter(q: Quantized4bit) -> float:  # notebook 07 §6
    """Storage cost per weight measured from the stored bytes: 8·nbytes / numel (notebook 07 §6).

    4.5 at blocksize 64, ≈ 4.127 with double quantization: ``4 + constants_bits(...)``, measured."""
    return 8.0 * q.nbytes / q.numel


def constants_bits(
    blocksize: int = 64, double_quant: bool = False, blocksize2: int = 256
) -> float:  # notebook 07 §2
    """Bits per parameter spent on the scaling constants, from the formula (notebook 07 §2, §6).

    Without double quantization a float32 per block: ``32 / blocksize``. With it: one byte per
    block plus a float32 per ``blocksize2`` blocks: ``8 / blocksize + 32 / (blocksize·blocksize2)``.
    A 4-bit weight costs ``4 + constants_bits(...)`` bits (``memory.quantized_bits_per_parameter``)."""
    _check_blocksize(blocksize)
    if not double_quant:
        return 32.0 / blocksize
    _check_blocksize(blocksize2, "blocksize2")
    return 8.0 / blocksize + 32.0 / (blocksize * blocksize2)


# ------------------------------------------------------------------------------- input checks

#: The float dtypes bitsandbytes quantizes from, and the ones QLoRA computes in (``qlora``).
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _check_blocksize(blocksize: int, name: str = "blocksize") -> None:
    validate.integer(blocksize, name, low=0)  # an int, not a bool (TypeError) …
    if blocksize == 0 or blocksize & (blocksize - 1):  # … and a power of two (ValueError)
        raise ValueError(f"{name} must be a positive power of two (e.g. 64), got {blocksize!r}")


def _check_input(x: torch.Tensor, quant_type: str, blocksize: int) -> None:
    """Every bad input is refused here, before any work is done."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"x must be float32, bfloat16 or float16 (as in bitsandbytes), got {x.dtype}"
        )
    if quant_type not in TABLES:
        raise ValueError(f"quant_type must be one of {sorted(TABLES)}, got {quant_type!r}")
    _check_blocksize(blocksize)
    if x.numel() == 0:
        raise ValueError(f"cannot quantize an empty tensor (shape {tuple(x.shape)})")


def _raise_if_not_finite(x: torch.Tensor) -> None:
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        where = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise ValueError(
            f"x must be finite, but it holds {x[where].item()} at index {where} "
            f"({int(bad.sum())} non-finite value(s) in total)"
        )


# ------------------------------------------------------------------------------- quantize


def _block_absmax(flat: torch.Tensor, blocksize: int) -> torch.Tensor:
    """float32 max |x| per block, ceil(numel/blocksize) values (notebook 06 §5, step 2); a partial
    last block's is clamped to ≥ 1e-38, as bitsandbytes stores it."""
    n = flat.numel()
    full = n - n % blocksize
    blocks = flat[:full].view(-1, blocksize)
    absmax = torch.maximum(blocks.amax(dim=1), -blocks.amin(dim=1)).float()
    if full < n:
        absmax = torch.cat([absmax, flat[full:].float().abs().max().clamp(min=1e-38).view(1)])
    return absmax


def _scale(flat: torch.Tensor, absmax: torch.Tensor, blocksize: int) -> torch.Tensor:
    """Each value over its block's absmax, into [-1, 1]: float32, numel values (06 §5, step 2).

    Full blocks × ``1/absmax.clamp(1e-38)``, a partial last block divided: bitsandbytes'
    arithmetic exactly, so codes on a midpoint come out the same."""
    n = flat.numel()
    full = n - n % blocksize
    scaled = torch.empty(n, dtype=torch.float32, device=flat.device)
    reciprocal = 1.0 / absmax[: full // blocksize].clamp(min=1e-38)
    torch.mul(
        flat[:full].view(-1, blocksize),
        reciprocal.unsqueeze(1),
        out=scaled[:full].view(-1, blocksize),
    )
    if full < n:
        torch.div(flat[full:].float(), absmax[-1], out=scaled[full:])
    return scaled


# notebook 07 §4
def quantize_blockwise_8bit(
    values: torch.Tensor, blocksize: int = 256, code: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """8-bit blockwise quantization with a 256-entry code (default: the signed dynamic map).

    Notebook 07 §4. Returns ``(codes uint8, absmax float32 per block)``: the exact nearest codes.
    bitsandbytes' CPU kernel rounds through a 65,536-entry lookup table instead, so a small share
    of its codes differ from these (notebook 07 §5 measures how many)."""
    _check_blocksize(blocksize)
    flat = values.reshape(-1).float()
    if flat.numel() == 0:
        raise ValueError("cannot quantize an empty tensor")
    code = _dynamic_map_on(str(flat.device)) if code is None else code.to(flat.device)
    if code.numel() != 256:
        raise ValueError(f"an 8-bit code must have 256 entries, got {code.numel()}")
    absmax = _block_absmax(flat, blocksize)
    return nearest_codes(_scale(flat, absmax, blocksize), code), absmax


# notebook 06 §5
def quantize_4bit(
    x: torch.Tensor, quant_type: str = "nf4", blocksize: int = 64, double_quant: bool = False
) -> Quantized4bit:
    """Blockwise 4-bit quantization of ``x``, in bitsandbytes' exact format (notebook 06 §5).

    ``x`` (float32/bfloat16/float16, any shape, finite) is flattened row-major, cut into blocks
    of ``blocksize``, scaled by each block's absmax and rounded to the nearest code of the
    ``quant_type`` table ("nf4", "fp4" or "int4"). With ``double_quant`` the float32 absmax are
    quantized again to 8 bits (notebook 07 §4); the 4-bit codes do not change.
    """
    _check_input(x, quant_type, blocksize)  # refuse bad input first
    flat = x.detach().reshape(-1)  # step 1: flatten, blocks of blocksize
    absmax = _block_absmax(flat, blocksize)  # step 2: one float32 absmax per block
    if not bool(torch.isfinite(absmax).all()):  # (cheap test; locate only on failure)
        _raise_if_not_finite(x.detach())
    scaled = _scale(flat, absmax, blocksize)  # step 2: scaled into [-1, 1]
    if scaled.numel() % 2:  # (pad with the value 0.0, as bitsandbytes)
        scaled = torch.cat([scaled, scaled.new_zeros(1)])
    table = TABLES[quant_type]  # step 3: nearest code (same codes either way)
    codes = fast.nearest_codes(scaled, table) if fast.ENABLED else nearest_codes(scaled, table)
    packed = pack_nibbles(codes)  # step 4: two codes per byte
    q = Quantized4bit(
        packed=packed,
        shape=x.shape,
        dtype=x.dtype,
        blocksize=blocksize,
        quant_type=quant_type,
        absmax=absmax,
    )
    if double_quant:  # notebook 07 §4
        offset = absmax.mean()
        q.absmax_codes, q.absmax2 = quantize_blockwise_8bit(absmax - offset, q.blocksize2)
        q.offset, q.absmax = offset, None
    return q


# ------------------------------------------------------------------------------- dequantize


def dequantize_absmax(q: Quantized4bit) -> torch.Tensor:  # notebook 07 §4
    """The float32 absmax per block: stored, or recovered as ``dynmap[code]·absmax2 + offset``
    (notebook 07 §4)."""
    if not q.double_quant:
        return q.absmax
    n = q.absmax_codes.numel()
    values = _dynamic_map_on(str(q.absmax_codes.device)).index_select(0, q.absmax_codes.int())
    scale = q.absmax2.repeat_interleave(q.blocksize2)[:n]
    return values * scale + q.offset


def dequantize_4bit(
    q: Quantized4bit, dtype: torch.dtype | None = None
) -> torch.Tensor:  # notebook 06 §5
    """``table[code] · absmax`` in float32, cast to ``q.dtype`` (or ``dtype``), in ``q.shape``.

    Notebook 06 §5, step 5. Equal to bitsandbytes' ``dequantize_4bit`` to the bit; the package's
    one dequantizer (``qlora.Linear4bit`` calls it too). With ``lorakit.fast.ENABLED`` (the
    default) the same bits come from ``lorakit.fast``; set it to False to step through the
    readable lines below in a debugger."""
    if not isinstance(q, Quantized4bit):
        raise TypeError(f"q must be a Quantized4bit (from quantize_4bit), got {type(q).__name__}")
    dtype = q.dtype if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch dtype, got {dtype!r}")
    absmax = dequantize_absmax(q)  # float32, one per block
    if fast.ENABLED:  # the same bits, faster: lorakit/fast.py
        return fast.dequantize(
            q.packed, absmax, TABLES[q.quant_type], q.numel, q.blocksize, dtype
        ).view(q.shape)
    codes = unpack_nibbles(q.packed, q.numel)  # step 5: unpack (step 4 undone) ...
    values = TABLES[q.quant_type].to(q.packed.device)[
        codes.long()
    ]  # ... look each code up (float32) ...
    scale = absmax.repeat_interleave(q.blocksize)[: q.numel]  # ... × its block's absmax ...
    return (values * scale).to(dtype).view(q.shape)  # ... rounded once, to dtype


# ------------------------------------------------------------------------------- helpers for 06/07


def absmax_int_roundtrip(
    x: torch.Tensor, bits: int = 8, blocksize: int | None = None
) -> torch.Tensor:  # notebook 06 §2
    """Symmetric absmax integer quantization and back: ``round(x·L/absmax)·absmax/L``, L = 2^(bits-1)−1.

    One absmax for the whole tensor (``blocksize=None``) or one per block of the flattened
    tensor. Notebook 06 §2 uses it to show why a single outlier ruins a whole tensor's precision.
    """
    validate.integer(bits, "bits", 2, 16)
    levels = 2 ** (bits - 1) - 1
    flat = x.detach().reshape(-1).float()
    blocksize = flat.numel() if blocksize is None else validate.positive_int(blocksize, "blocksize")
    pad = (-flat.numel()) % blocksize
    blocks = torch.cat([flat, flat.new_zeros(pad)]).view(-1, blocksize)
    absmax = blocks.abs().amax(dim=1, keepdim=True).clamp(min=1e-38)
    out = torch.round(blocks * (levels / absmax)) * (absmax / levels)
    return out.reshape(-1)[: flat.numel()].view(x.shape).to(x.dtype)


def code_usage(q: Quantized4bit) -> torch.Tensor:  # notebook 06 §4
    """How often each of the 16 codes is used (int64 counts, padding excluded; notebook 06 §4)."""
    return torch.bincount(unpack_nibbles(q.packed, q.numel).long(), minlength=16)


def error_metrics(x: torch.Tensor, x_hat: torch.Tensor) -> dict:  # notebook 06 §7
    """Mean absolute, mean relative (|x−x̂| / (|x| + 1e-8), as bitsandbytes' tests), RMS and max
    error (notebook 06 §7)."""
    if x.shape != x_hat.shape:
        raise ValueError(
            f"x and x_hat must have the same shape, got {tuple(x.shape)} and {tuple(x_hat.shape)}"
        )
    err = (x.float() - x_hat.float()).abs()
    return {
        "mae": err.mean().item(),
        "mean_rel": (err / (x.float().abs() + 1e-8)).mean().item(),
        "rmse": err.pow(2).mean().sqrt().item(),
        "max": err.max().item(),
    }


# notebook 06 §8
def blocksize_tradeoff(
    x: torch.Tensor, blocksize: int, quant_type: str = "nf4", double_quant: bool = False
) -> tuple[float, float]:
    """(mean absolute error, overhead bits per parameter) of quantizing ``x`` at ``blocksize``.

    Smaller blocks track local scale better (less error) but store more constants (more bits):
    notebook 06 §8's slider. Overhead is measured from the stored bytes: ``bits_per_parameter − 4``."""
    q = quantize_4bit(x, quant_type, blocksize, double_quant)
    mae = error_metrics(x, dequantize_4bit(q))["mae"]
    return mae, 8.0 * (q.nbytes - q.packed.numel()) / q.numel


@torch.no_grad()  # notebook 06 §7
def quantize_model_linears(
    model: nn.Module,
    quant_type: str = "nf4",
    blocksize: int = 64,
    double_quant: bool = False,
    skip: tuple[str, ...] = ("lm_head",),
) -> nn.Module:
    """A deep copy of ``model`` whose ``nn.Linear`` weights went through quantize → dequantize
    (notebook 06 §7, notebook 08 §3).

    The copy computes exactly what a 4-bit model computes, in ordinary float layers, so its loss
    measures the damage quantization does. Modules whose name ends with an entry of ``skip`` stay
    untouched (QLoRA keeps ``lm_head`` in 16 bits); ``quant_type="none"`` copies, for a baseline."""
    if quant_type != "none" and quant_type not in TABLES:
        raise ValueError(
            f"quant_type must be 'none' or one of {sorted(TABLES)}, got {quant_type!r}"
        )
    _check_blocksize(blocksize)
    copied = copy.deepcopy(model)
    if quant_type == "none":
        return copied
    for name, module in copied.named_modules():
        if isinstance(module, nn.Linear) and not name.endswith(tuple(skip)):
            module.weight.copy_(
                dequantize_4bit(quantize_4bit(module.weight, quant_type, blocksize, double_quant))
            )
    return copied
