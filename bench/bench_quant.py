"""Benchmark: NF4 quantize + dequantize on the CPU, lorakit vs bitsandbytes vs torchao.

    python bench/bench_quant.py            # 4096×4096, float32 and bfloat16, 5 runs each
    python bench/bench_quant.py --smoke    # tiny sizes, 1 run: checks that the script works

Each library quantizes then dequantizes the same tensor; the median of the runs is printed
with the ratios to bitsandbytes measured in the same process: dequantize alone and the total
(goals for lorakit: dequantize ≤ 1.2, total ≤ 1.0; ``lorakit.fast.ENABLED`` is on). The
script also checks that lorakit's bytes and values equal bitsandbytes' before timing them.
torchao's ``to_nf4`` always double-quantizes (its only mode), so its row is not like-for-like.
The row "lorakit, readable" runs with ``lorakit.fast.ENABLED = False``: what ``lorakit/fast.py`` buys.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings

import torch

from lorakit import fast, quant


def _median_seconds(fn, runs: int) -> float:
    fn()  # warm-up: caches, lazy tables, allocator
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def readable(fn, *args):
    """``fn(*args)`` with ``lorakit.fast.ENABLED`` off: what the fast module buys."""
    fast.ENABLED = False
    try:
        return fn(*args)
    finally:
        fast.ENABLED = True


def _candidates(x: torch.Tensor) -> dict:
    """name -> (quantize, dequantize) closures on ``x``; reference libraries only if installed."""
    out = {
        "lorakit": (lambda: quant.quantize_4bit(x, "nf4", 64), quant.dequantize_4bit),
        "lorakit, readable": (
            lambda: readable(quant.quantize_4bit, x, "nf4", 64),
            lambda q: readable(quant.dequantize_4bit, q),
        ),
    }
    try:
        import bitsandbytes.functional as F

        out["bitsandbytes"] = (
            lambda: F.quantize_4bit(x, blocksize=64, quant_type="nf4"),
            lambda r: F.dequantize_4bit(*r),
        )
        packed, state = F.quantize_4bit(x, blocksize=64, quant_type="nf4")
        q = quant.quantize_4bit(x)
        assert torch.equal(q.packed, packed.reshape(-1)) and torch.equal(q.absmax, state.absmax)
        assert torch.equal(
            quant.dequantize_4bit(q).reshape(-1), F.dequantize_4bit(packed, state).reshape(-1)
        )
    except ImportError:
        pass
    if x.numel() % (64 * 256) == 0:
        try:
            from torchao.quantization.quantize_.workflows.nf4.nf4_tensor import to_nf4

            out["torchao (DQ)"] = (lambda: to_nf4(x, 64, 256), lambda t: t.get_original_weight())
        except ImportError:
            pass
    return out


def run(shape: tuple[int, int], dtype: torch.dtype, runs: int) -> list[dict]:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    rows = []
    for name, (quantize, dequantize) in _candidates(x).items():
        state = quantize()
        t_q = _median_seconds(quantize, runs)
        t_dq = _median_seconds(lambda: dequantize(state), runs)
        rows.append(
            dict(
                name=name,
                dtype=str(dtype).replace("torch.", ""),
                quantize=t_q,
                dequantize=t_dq,
                total=t_q + t_dq,
            )
        )
    base = next((r for r in rows if r["name"] == "bitsandbytes"), None)
    for r in rows:
        r["dequantize_ratio"] = r["dequantize"] / base["dequantize"] if base else float("nan")
        r["ratio"] = r["total"] / base["total"] if base else float("nan")
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per measurement (median)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    shape, runs = ((128, 128), 1) if args.smoke else ((4096, 4096), max(5, args.runs))
    print(
        f"NF4 blocksize 64, {shape[0]}×{shape[1]}, median of {runs} run(s), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        rows += run(shape, dtype, runs)
    print(
        f"{'library':<19}{'dtype':<10}{'quantize s':>12}{'dequant s':>12}{'dequant ÷ bnb':>15}"
        f"{'total s':>10}{'total ÷ bnb':>13}"
    )
    for r in rows:
        print(
            f"{r['name']:<19}{r['dtype']:<10}{r['quantize']:>12.4f}{r['dequantize']:>12.4f}"
            f"{r['dequantize_ratio']:>15.2f}{r['total']:>10.4f}{r['ratio']:>13.2f}"
        )
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
