"""Inference latency of LoRA's siblings on the CPU, as ratios to the base in the same run (issue 14).

The learner-size GPT (4 layers, d=128, ctx 128), random weights (latency does not depend on
training), every method at the larger budget of notebook 05: LoRA r=16 on q_proj/v_proj
(merged and unmerged), serial adapters b=16, prefix tuning (MLP) P=32, P-tuning v2 P=32,
P-tuning v1 P=32, prompt tuning P=32. One forward pass over T = 96 real tokens (the context left
by a 32-token prompt), at batch 1 and batch 32. Also the exact FLOPs of one forward pass.

Each number is a median over ``--repeats`` rounds; within a round every model runs ``--calls``
times, the models interleaved, so load on a shared machine hits all alike (``compare_latency``).
Read the ratios, not the milliseconds. Timings are printed, never asserted.

    python bench/bench_siblings.py            # learner size, writes nothing (tee it)
    python bench/bench_siblings.py --smoke    # tiny, a few seconds: checks that the script works
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import io
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lorakit.lora import inject_lora, remove_lora  # noqa: E402
from lorakit.model import GPT, GPTConfig  # noqa: E402
from lorakit.siblings import (  # noqa: E402
    add_adapters,
    add_p_tuning,
    add_p_tuning_v2,
    add_prefix_tuning,
    add_prompt_tuning,
    compare_latency,
    forward_flops,
)


def contenders(cfg: GPTConfig, r: int, b: int, P: int) -> dict:
    torch.manual_seed(0)
    base = GPT(cfg).eval()
    lora = copy.deepcopy(base)
    inject_lora(lora, ["q_proj", "v_proj"], r=r, alpha=2 * r)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if name.endswith(".B"):
                p.normal_(std=0.02)
    merged = copy.deepcopy(lora)
    remove_lora(merged, merge=True)
    frozen = copy.deepcopy(base).requires_grad_(False)
    return {
        "base": base,
        "base (copy)": frozen,
        "LoRA merged": merged,
        "LoRA unmerged": lora,
        "adapter": add_adapters(copy.deepcopy(base), b),
        "prefix (MLP)": add_prefix_tuning(copy.deepcopy(base), P, hidden=P),
        "P-tuning v2": add_p_tuning_v2(copy.deepcopy(base), P),
        "P-tuning v1": add_p_tuning(copy.deepcopy(base), P, hidden=2 * P),
        "prompt tuning": add_prompt_tuning(copy.deepcopy(base), P),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks the script, times nothing useful"
    )
    ap.add_argument(
        "--repeats", type=int, default=7, help="rounds per batch size (>= 5 for real numbers)"
    )
    ap.add_argument("--calls", type=int, default=10, help="forward passes per model per round")
    ap.add_argument("--out", type=Path, help="also write the printed table to this file")
    args = ap.parse_args(argv)
    buffer = io.StringIO()

    class Tee(io.TextIOBase):
        def write(self, text):
            sys.__stdout__.write(text)
            return buffer.write(text)

    with contextlib.redirect_stdout(Tee()):
        code = run(args)
    if args.out:
        args.out.write_text(buffer.getvalue())
    return code


def run(args) -> int:
    if args.smoke:
        cfg, r, b, P, repeats, calls = (
            GPTConfig(context=16, n_layer=2, n_head=2, d_model=32),
            2,
            2,
            4,
            2,
            1,
        )
    else:
        cfg, r, b, P, repeats, calls = GPTConfig(), 16, 16, 32, args.repeats, args.calls
    T = cfg.context - P
    models = contenders(cfg, r, b, P)
    with torch.no_grad():  # merged LoRA must be the same function as unmerged LoRA
        x = torch.randint(256, (2, T), generator=torch.Generator().manual_seed(1))
        err = (models["LoRA merged"](x)[0] - models["LoRA unmerged"](x)[0]).abs().max().item()
    assert err < 1e-4, f"merged and unmerged LoRA differ by {err}"
    fl = {name: forward_flops(m, T) for name, m in models.items()}

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(
        f"# bench_siblings  {datetime.date.today()}  {platform.machine()}  torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    print(
        f"# GPT {cfg.n_layer} layers, d={cfg.d_model}, ctx {cfg.context}; T = {T} real tokens; LoRA r={r} on "
        f"q_proj,v_proj; adapters b={b}; P={P} virtual tokens; median of {repeats} rounds x {calls} calls"
    )
    t = {bs: compare_latency(models, bs, T, repeats=repeats, calls=calls) for bs in (1, 32)}
    print(
        f"{'method':>14} {'FLOPs/base':>10} {'b1/base':>8} {'b32/base':>8} {'b1 ms':>8} {'b32 ms':>8}"
    )
    for name in models:
        print(
            f"{name:>14} {fl[name] / fl['base']:>10.3f} {t[1][name] / t[1]['base']:>8.3f} "
            f"{t[32][name] / t[32]['base']:>8.3f} {1e3 * t[1][name]:>8.2f} {1e3 * t[32][name]:>8.1f}"
        )
    print(
        f"# max |merged - unmerged LoRA| logit = {err:.1e}; ratios are same-run, machine shared (see load); "
        "timed under torch.inference_mode()"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
