"""The speed tricks behind ``lorakit.quant``, in one place. Read ``quant.py`` first: its readable
path (notebook 06 §5) is the definition; this module computes the same bits, faster.

**The switch**: ``lorakit.fast.ENABLED`` (default True) makes ``quant.quantize_4bit`` and
``quant.dequantize_4bit`` (so ``qlora.Linear4bit`` too) use ``nearest_codes`` and ``dequantize``
below; False runs the readable path. ``tests/test_quant_fast.py`` proves both bit-equal.

1. ``nearest_codes``: float32 numbers sharing their top 16 bits form an interval so narrow that
   at most one midpoint between table values falls inside it (checked when the tables are built).
   So the code is ``code_low[h] + (value > threshold[h])``, ``h`` = the top 16 bits: the readable
   rule (bucketize, ties down) applied once per interval in advance, exact by construction.
2. ``dequantize``: a byte holds two codes, so a 256×2 float32 table gives both values in one
   gather; then one float32 multiply by absmax, rounded once to the output dtype, as readable.
3. On a CPU both run in chunks of ``CHUNK`` values whose temporaries stay in cache: fresh memory
   costs a page fault per 4 kB, more than the arithmetic. How much faster 1–3 make NF4 on a
   4096×4096 weight, against the readable path and against bitsandbytes' C++ kernel in the same
   run: ``bench/bench_quant.py`` measures it and writes ``bench/results/cpu-quant.txt``.
4. ``compile_dequantize()``, optional, for a GPU: ``torch.compile`` fuses gather, multiply and
   cast into one kernel that reads each byte once and writes each value once, as bitsandbytes'
   CUDA kernel does (eager runs several kernels with float32 temporaries: most of a 7B step).
   A compile failure (``COMPILE_ERRORS``) warns and falls back to eager; other errors surface.
"""

from __future__ import annotations

import sys
import warnings
from functools import cache

import torch

#: The one switch: True = the tricks below, False = quant.py's readable path (same bits).
#: On by default, decided by bench/bench_fast_default.py (bench/results/cpu-fast-default.txt): at
#: the course GPT's size it changes a QLoRA step by nothing measurable, and on a real model's
#: weights it quantizes several times faster. To step through notebook 06 §5's steps in a
#: debugger, set ``lorakit.fast.ENABLED = False``: the same bits, the readable code.
ENABLED = True

#: ``dequantize``'s fused GPU kernel, set by ``compile_dequantize()``; None = eager everywhere.
COMPILED = None

#: Values per step on a CPU (2 MB of float32): small enough to stay in cache (measured best).
CHUNK = 1 << 19

# What torch.compile raises when it cannot compile (Dynamo and Inductor errors). Anything else,
# an out-of-memory error for instance, is a real error and must reach the caller.
COMPILE_ERRORS = (torch._dynamo.exc.TorchDynamoException,)

_TOP_HALF = slice(1, None, 2) if sys.byteorder == "little" else slice(0, None, 2)  # of a float32


def _key(table: torch.Tensor) -> bytes:
    """A (CPU) table's exact bits, for caching: 0.0 and -0.0 differ, as FP4's codes 0 and 8 do."""
    return table.detach().float().cpu().numpy().tobytes()


# ------------------------------------------------------------------------------- 1. nearest code


@cache
def _bucket_tables(
    key: bytes, device: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(code_low, threshold: 65,536 each; order: sorted position → code, None if the table is sorted)."""
    table = torch.frombuffer(bytearray(key), dtype=torch.float32)
    order = torch.argsort(table)
    ordered = table[order]
    mids = (ordered[:-1] + ordered[1:]) / 2  # the readable rule's midpoints (quant._midpoints)
    top = torch.arange(65536, dtype=torch.int64)  # every top half, as the uint16 it is in memory
    bits = ((top - 65536 * (top >= 32768)) * 65536).to(
        torch.int32
    )  # its float32 bits, bottom half 0 …
    low, high = bits.view(torch.float32), (bits | 0xFFFF).view(torch.float32)  # … and all ones
    start, end = torch.minimum(low, high), torch.maximum(low, high)
    finite = torch.isfinite(start) & torch.isfinite(end)  # NaN/Inf buckets: inputs never land here
    start, end = torch.where(finite, start, 0.0), torch.where(finite, end, 0.0)
    code_start, code_end = torch.bucketize(start, mids), torch.bucketize(end, mids)
    if int((code_end - code_start).max()) > 1:
        raise ValueError(
            "this table has two midpoints inside one 16-bit bucket: use quant.nearest_codes"
        )
    inside = mids[code_start.clamp(max=len(mids) - 1)]
    threshold = torch.where(code_end > code_start, inside, torch.tensor(float("inf")))
    order = (
        None if torch.equal(order, torch.arange(len(table))) else order.to(torch.uint8).to(device)
    )  # FP4
    return code_start.to(torch.uint8).to(device), threshold.to(device), order


def nearest_codes(scaled: torch.Tensor, table: torch.Tensor) -> torch.Tensor:  # notebook 06 §5
    """``quant.nearest_codes(scaled, table)`` (notebook 06 §5), the same uint8 codes, by the 16-bit
    bucket lookup. ``scaled``: float32, contiguous, any length."""
    code_low, threshold, order = _bucket_tables(_key(table), str(scaled.device))
    codes = torch.empty(scaled.numel(), dtype=torch.uint8, device=scaled.device)
    for start, end in _chunks(scaled.numel(), CHUNK, scaled.is_cuda):
        part = scaled[start:end]
        top = part.view(torch.uint16)[_TOP_HALF].int()  # the top 16 bits of each value
        codes[start:end] = code_low.index_select(0, top) + (part > threshold.index_select(0, top))
    return codes if order is None else order.index_select(0, codes.int())


def _chunks(n: int, step: int, whole: bool):
    """(start, end) of the chunks of ``range(n)``: one chunk if ``whole`` (a GPU is fastest so)."""
    step = n if whole else step
    return [(start, min(start + step, n)) for start in range(0, n, step)]


# ------------------------------------------------------------------------------- 2. dequantize


@cache
def _pair_table(key: bytes, device: str) -> torch.Tensor:
    """256×2 float32, row ``b`` = the values of byte ``b``'s codes (high nibble ``b >> 4`` first, low
    ``b & 15``), viewed as 256 int64: one 8-byte gather fetches both values."""
    table = torch.frombuffer(bytearray(key), dtype=torch.float32)
    pairs = torch.stack([table.repeat_interleave(16), table.repeat(16)], dim=1)  # 256×2
    return pairs.contiguous().view(torch.int64).reshape(256).to(device)


def _gather_and_scale(
    packed: torch.Tensor,
    absmax: torch.Tensor,
    pairs: torch.Tensor,
    blocksize: int,
    out: torch.Tensor,
    index: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
):
    """Whole blocks only: ``out`` (2·len(packed) values) = ``table[code]·absmax``, computed in float32
    and rounded once to ``out.dtype``. ``index`` (int32), ``values`` (int64): len(packed) each,
    optional scratch space that the CPU's chunks reuse (fresh memory costs page faults)."""
    index = packed.int() if index is None else index.copy_(packed)
    values = torch.index_select(pairs, 0, index, out=values)  # both values of each byte
    torch.mul(
        values.view(torch.float32).view(-1, blocksize),
        absmax.unsqueeze(1),
        out=out.view(-1, blocksize),
    )


# notebook 06 §5
def dequantize(
    packed: torch.Tensor,
    absmax: torch.Tensor,
    table: torch.Tensor,
    numel: int,
    blocksize: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """``quant.dequantize_4bit``'s arithmetic (notebook 06 §5) on its parts: the flat weight, ``numel``
    values. ``packed``: ceil(numel/2) uint8; ``absmax``: ceil(numel/blocksize) float32."""
    unit = max(blocksize, 2)  # whole blocks of whole bytes
    padded = -numel % unit
    if padded:  # a partial block or an odd count: pad the bytes and constants, cut the result
        packed = torch.cat([packed, packed.new_zeros((numel + padded) // 2 - packed.numel())])
        absmax = torch.cat(
            [absmax, absmax.new_zeros((numel + padded) // blocksize - absmax.numel())]
        )
    pairs = _pair_table(_key(table), str(packed.device))
    out = torch.empty(numel + padded, dtype=dtype, device=packed.device)
    if COMPILED is not None:
        try:
            COMPILED(packed, absmax, pairs, blocksize, out)
            return out[:numel]
        except COMPILE_ERRORS as e:
            warnings.warn(
                f"torch.compile of the dequantizer failed ({type(e).__name__}: {e}); "
                "using the eager version",
                stacklevel=2,
            )
            compile_dequantize(False)
    chunks = _chunks(
        numel + padded, max(CHUNK // unit, 1) * unit, packed.is_cuda
    )  # whole blocks each
    if len(chunks) == 1:
        _gather_and_scale(packed, absmax, pairs, blocksize, out)
        return out[:numel]
    index = torch.empty(
        chunks[0][1] // 2, dtype=torch.int32, device=packed.device
    )  # scratch for every chunk
    values = torch.empty(chunks[0][1] // 2, dtype=torch.int64, device=packed.device)
    for start, end in chunks:
        k = (end - start) // 2
        _gather_and_scale(
            packed[start // 2 : end // 2],
            absmax[start // blocksize : end // blocksize],
            pairs,
            blocksize,
            out[start:end],
            index[:k],
            values[:k],
        )
    return out[:numel]


# ------------------------------------------------------------------------------- 4. torch.compile


def compile_dequantize(enable: bool = True) -> None:  # notebook 06 §5
    """Fuse ``dequantize`` into one GPU kernel with ``torch.compile``, or (False) go back to eager."""
    global COMPILED
    COMPILED = torch.compile(_gather_and_scale, dynamic=False) if enable else None
