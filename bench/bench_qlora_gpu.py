"""One QLoRA training step on a Llama-7B-shaped model: lorakit vs PEFT + bitsandbytes vs bf16 LoRA.

    python bench/bench_qlora_gpu.py            # one CUDA GPU (≈ 80 GB class), a few minutes
    python bench/bench_qlora_gpu.py --model SmolLM2-360M --batch 4   # fits a 16 GB T4
    python bench/bench_qlora_gpu.py --smoke    # a tiny size on the CPU: correctness only

``--model`` takes the LLaMA shapes of ``lorakit.memory.MODEL_SHAPES`` (7B … 70B) and the small
real shapes of ``lorakit.hf.REAL_SHAPES`` (SmolLM2-135M/360M, tied embeddings). A setup that
runs out of memory is reported as such and the others still run.

Random weights (no download), built directly on the GPU with the LLaMA-7B shape; seq 512, batch
1, LoRA r=64 (alpha 16) on every linear layer but the head, gradient checkpointing, the same
seed and tokens for all three runs, paged AdamW 32-bit (bitsandbytes) on the GPU, LoRA A and B
in float32 in all three (as PEFT keeps them). The compute dtype comes from native support
(``lorakit.qlora.choose_compute_dtype``: bfloat16 on Ampere or newer, float32 on a T4, where a
7B model does not fit anyway). For each run: peak memory of the measured steps and the median
step time after one warm-up step. The peak is ``lorakit.memory.track_peak``'s: the allocator's
peak (``torch.cuda.max_memory_allocated``) **plus the paged optimizer states**, which live in
CUDA unified memory where the allocator never sees them (≈ 1.3 GB for r = 64 on a 7B model);
both parts are printed. Printed against the goals: lorakit peak ≤ 1.05× PEFT+bnb, step time
≤ 1.3× PEFT+bnb, QLoRA peak ≤ 0.4× the bf16 LoRA peak. On a GPU the results go to
``bench/results/``.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lorakit import fast  # noqa: E402
from lorakit.hf import REAL_SHAPES, is_out_of_memory  # noqa: E402
from lorakit.lora import inject_lora  # noqa: E402
from lorakit.memory import MODEL_SHAPES, track_peak  # noqa: E402
from lorakit.qlora import choose_compute_dtype, enable_gradient_checkpointing, prepare_qlora  # noqa: E402
from lorakit.quiet import quiet_import  # noqa: E402

GOALS = {"peak_vs_peft": 1.05, "time_vs_peft": 1.3, "qlora_peak_vs_bf16_lora": 0.4}
SMOKE_SHAPE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    vocab_size=256,
)


def build_llama(shape: dict, device: torch.device, dtype: torch.dtype, seed: int):
    """A LlamaForCausalLM with random weights, created directly on ``device`` in ``dtype``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    # MODEL_SHAPES uses a Hugging Face config's key names, so a shape is a LlamaConfig as it is
    cfg = LlamaConfig(**dict(dict(max_position_embeddings=4096), **shape), use_cache=False)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(previous)
    return model.to(device=device, dtype=dtype)


def make_optimizer(params, device: torch.device):
    """Paged AdamW 32-bit from bitsandbytes on a GPU (QLoRA's choice), else torch's AdamW."""
    if device.type == "cuda":
        bnb = quiet_import("bitsandbytes")
        if bnb is not None:
            return bnb.optim.PagedAdamW32bit(params, lr=2e-4), "bitsandbytes PagedAdamW32bit"
        print("  (bitsandbytes is not installed: torch AdamW, nothing paged)")
    return torch.optim.AdamW(params, lr=2e-4), "torch AdamW"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- the three setups


def setup_lorakit(model, args, dtype):
    prepare_qlora(
        model,
        "all-linear",
        r=args.r,
        alpha=args.alpha,
        quant_type="nf4",
        double_quant=True,
        compute_dtype=dtype,
        gradient_checkpointing=True,
    )
    return model


def setup_peft_bnb(model, args, dtype):
    """What ``from_pretrained(..., BitsAndBytesConfig(nf4, double quant))`` + PEFT builds, by hand.

    One layer at a time: each 16-bit ``nn.Linear`` is quantized, swapped out and dropped before
    the next one is touched, so at most one 16-bit weight beyond the model exists at any moment
    (holding them all, e.g. in ``list(model.named_modules())``, would keep the whole 16-bit
    model alive until the loop ends and inflate the peak).
    """
    bnb, peft = quiet_import("bitsandbytes"), quiet_import("peft")
    if bnb is None or peft is None:
        raise ImportError("the PEFT + bitsandbytes setup needs both packages installed")

    device = next(model.parameters()).device
    names = [
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and not n.endswith("lm_head")
    ]
    for name in names:  # paths only: no reference to the old layers outlives its iteration
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent)
        old = getattr(owner, child)
        layer = bnb.nn.Linear4bit(
            old.in_features,
            old.out_features,
            bias=old.bias is not None,
            compute_dtype=dtype,
            compress_statistics=True,
            quant_type="nf4",
            device="meta",
        )
        layer.weight = bnb.nn.Params4bit(
            old.weight.data, requires_grad=False, compress_statistics=True, quant_type="nf4"
        )
        if old.bias is not None:
            layer.bias = nn.Parameter(old.bias.data, requires_grad=False)
        setattr(
            owner, child, layer.to(device)
        )  # bitsandbytes quantizes when the weight moves to a device
        del old, layer  # the 16-bit weight is freed here, not at the end of the loop
    for p in model.parameters():
        p.requires_grad_(False)
    enable_gradient_checkpointing(model)
    config = peft.LoraConfig(
        r=args.r, lora_alpha=args.alpha, lora_dropout=0.0, target_modules="all-linear"
    )
    model = peft.get_peft_model(model, config)
    for name, p in model.named_parameters():  # adapters in float32, as PEFT's default and lorakit's
        if "lora_" in name:
            p.data = p.data.float()
    return model


def setup_bf16_lora(model, args, dtype):
    inject_lora(model, "all-linear", r=args.r, alpha=args.alpha, dtype=torch.float32)
    enable_gradient_checkpointing(model)
    return model


SETUPS = {
    "lorakit_qlora": setup_lorakit,
    "peft_bnb_qlora": setup_peft_bnb,
    "bf16_lora": setup_bf16_lora,
}


def run_one(
    name: str, args, shape: dict, device: torch.device, dtype: torch.dtype, tokens: torch.Tensor
) -> dict:
    """Build, prepare, one warm-up step, then ``args.steps`` measured steps."""
    free(device)
    t0 = time.perf_counter()
    model = SETUPS[name](build_llama(shape, device, dtype, args.seed), args, dtype)
    model.train()
    free(device)
    sync(device)
    prepare_s = time.perf_counter() - t0
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    opt, opt_name = make_optimizer(params, device)
    static = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0

    def step() -> float:
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    losses = [step()]  # warm-up: optimizer states, compiled kernels, allocator
    sync(device)
    times = []
    # CUDA: allocator peak + paged optimizer states; CPU: parameters, buffers, gradients and states
    with track_peak(device=device, model=model) as mem:
        for _ in range(args.steps):
            sync(device)
            t = time.perf_counter()
            losses.append(step())
            sync(device)
            times.append(time.perf_counter() - t)
    peak = mem["peak_bytes"]
    result = dict(
        peak_bytes=int(peak),
        peak_gb=peak / 1e9,
        static_gb=static / 1e9,
        allocator_peak_gb=mem.get("allocator_peak_bytes", 0) / 1e9,
        paged_states_gb=mem.get("paged_bytes", 0) / 1e9,
        device_used_gb=mem.get("device_used_bytes", 0) / 1e9,
        memory_method=mem["method"],
        step_seconds=statistics.median(times),
        loss=losses[0],
        losses=losses,
        trainable_params=trainable,
        optimizer=opt_name,
        prepare_seconds=prepare_s,
    )
    model = opt = params = None  # free them before the next setup (step() still names them)
    free(device)
    return result


# ---------------------------------------------------------------- main


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--smoke", action="store_true", help="tiny Llama on the CPU, fp32: correctness only"
    )
    p.add_argument("--model", default="7B", choices=sorted(MODEL_SHAPES) + sorted(REAL_SHAPES))
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--r", type=int, default=64)
    p.add_argument("--alpha", type=float, default=16)
    p.add_argument("--steps", type=int, default=3, help="measured steps after one warm-up step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--no-compile", action="store_true", help="eager dequantization (no torch.compile)"
    )
    p.add_argument("--only", nargs="*", choices=sorted(SETUPS), help="run only these setups")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    return p.parse_args(argv)


def settings(args) -> tuple[torch.device, torch.dtype, dict, str]:
    """(device, compute dtype, model shape, device name) for this run.

    The dtype is ``choose_compute_dtype``'s: bfloat16 only where the GPU computes it natively.
    ``torch.cuda.is_bf16_supported()`` with its defaults says True on a T4 (emulation counts),
    and ``prepare_qlora`` would then refuse bfloat16 there.
    """
    if args.smoke:
        return (
            torch.device("cpu"),
            torch.float32,
            SMOKE_SHAPE,
            f"CPU ({platform.processor() or platform.machine()})",
        )
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --smoke for the CPU size")
    device = torch.device("cuda")
    shape = REAL_SHAPES[args.model] if args.model in REAL_SHAPES else MODEL_SHAPES[args.model]
    return device, choose_compute_dtype(device), dict(shape), torch.cuda.get_device_name(device)


def main(argv=None) -> dict:
    args = parse(argv)
    device, dtype, shape, device_name = settings(args)
    if args.smoke:
        args.seq, args.r, args.steps = min(args.seq, 32), min(args.r, 8), min(args.steps, 1)
    elif not args.no_compile:
        fast.compile_dequantize(True)
    print(
        f"device: {device_name}; torch {torch.__version__}; shape {shape}; seq {args.seq}, batch {args.batch}, "
        f"r {args.r}, dtype {dtype}, gradient checkpointing on"
    )
    gen = torch.Generator().manual_seed(args.seed)
    tokens = torch.randint(0, shape["vocab_size"], (args.batch, args.seq), generator=gen).to(device)

    runs = {}
    for name in args.only or list(SETUPS):
        try:
            runs[name] = run_one(name, args, shape, device, dtype, tokens)
        except ImportError as e:
            runs[name] = dict(skipped=f"{type(e).__name__}: {e}")
        except Exception as e:  # noqa: BLE001 - out of memory is a result for this setup; anything else a bug
            if not is_out_of_memory(e):
                raise
            runs[name] = dict(
                skipped="out of memory on this device", error=str(e).splitlines()[0][:200]
            )
        free(device)  # after the except block: its traceback (and the failed model) is gone
        r = runs[name]
        if r.get("skipped"):
            print(f"{name:>15}: skipped ({r['skipped']})")
        else:
            paged = (
                f" = allocator {r['allocator_peak_gb']:.4g} + paged states {r['paged_states_gb']:.4g}"
                if device.type == "cuda"
                else ""
            )
            print(
                f"{name:>15}: peak {r['peak_gb']:.4g} GB{paged} (static {r['static_gb']:.4g} GB), "
                f"step {1000 * r['step_seconds']:.1f} ms, loss {r['loss']:.4f}, "
                f"trainable {r['trainable_params'] / 1e6:.2f} M, {r['optimizer']}"
            )
    if not args.no_compile and device.type == "cuda":
        runs.setdefault("lorakit_qlora", {})["compiled_dequantize"] = fast.COMPILED is not None

    ratios = {}
    ok = lambda n: n in runs and not runs[n].get("skipped") and "peak_bytes" in runs[n]  # noqa: E731
    if ok("lorakit_qlora") and ok("peft_bnb_qlora"):
        ratios["peak_vs_peft"] = (
            runs["lorakit_qlora"]["peak_bytes"] / runs["peft_bnb_qlora"]["peak_bytes"]
        )
        ratios["time_vs_peft"] = (
            runs["lorakit_qlora"]["step_seconds"] / runs["peft_bnb_qlora"]["step_seconds"]
        )
    if ok("lorakit_qlora") and ok("bf16_lora"):
        ratios["qlora_peak_vs_bf16_lora"] = (
            runs["lorakit_qlora"]["peak_bytes"] / runs["bf16_lora"]["peak_bytes"]
        )
    for key, value in ratios.items():
        if args.smoke:  # a CPU peak counts weights + grads + optimizer states only: not comparable
            print(f"{key:>24}: {value:.3f}  (CPU smoke size: not a goal check)")
        else:
            verdict = "meets" if value <= GOALS[key] else "MISSES"
            print(f"{key:>24}: {value:.3f}  goal <= {GOALS[key]}  {verdict}")

    results = dict(
        device=device_name,
        smoke=args.smoke,
        torch=torch.__version__,
        shape=shape,
        seq=args.seq,
        batch=args.batch,
        r=args.r,
        alpha=args.alpha,
        dtype=str(dtype),
        runs=runs,
        ratios=ratios,
        goals=GOALS,
    )
    if device.type == "cuda":
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = "qlora_gpu_" + re.sub(r"[^A-Za-z0-9]+", "_", device_name).strip("_")
        (out / f"{stem}.json").write_text(json.dumps(results, indent=1, default=str))
        print(f"wrote {out / (stem + '.json')}")
    return results


if __name__ == "__main__":
    main()
