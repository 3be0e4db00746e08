"""Notebook 09's GPU section and bench_qlora_gpu, in one script for the first GPU that is lent.

    python bench/gpu_finale.py                                   # a CUDA GPU: ≤ 8 min on a T4 or an H100
    python bench/gpu_finale.py --model-dir ~/SmolLM2-360M-Instruct   # real weights from a local folder
    python bench/gpu_finale.py --dry-run                         # CPU, tiny Llama, 2 steps: the script runs
    python bench/gpu_finale.py --device cpu --shape SmolLM2-360M --steps 2   # the real-shape CPU smoke run

What it runs, through ``lorakit.hf`` (the functions notebook 09 calls):

1. the model: ``--model-dir`` (a folder with ``config.json``, tokenizer and safetensors, e.g.
   SmolLM2-360M-Instruct copied to the machine), else **random weights with the real config**
   (``hf.REAL_SHAPES``) and an offline-trained tokenizer of the real vocabulary size: memory and
   time are then real, losses and answers are not;
2. the token counts of the batches (median example length, padded tokens per step) — what the
   README's FLOP estimates use;
3. the four methods (``hf.compare_methods``: lorakit QLoRA kept and trained last, so every peak is
   that method's alone), with the saved activations per token of each;
4. §7: the exact merge into Ŵ, saved in float32 (``hf.save_merged``), reloaded, compared
   (exact in float32, statistical under bfloat16: ``hf.merge_agreement``);
5. ``bench_qlora_gpu.py`` at SmolLM2-360M's shape (fits a 16 GB T4) — only on a GPU.

It writes ``bench/results/gpu-<device>.txt`` (the report, also printed) and ``.json``. A CPU run
writes ``cpu-realshape-<shape>.txt`` instead (``--dry-run``: nothing unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lorakit import hf, sft  # noqa: E402
from lorakit.qlora import choose_compute_dtype, merge_into_dequantized  # noqa: E402
from lorakit.train import cache_dir  # noqa: E402

LR = {"lorakit-qlora": 2e-4, "bnb-peft-qlora": 2e-4, "lora": 2e-4, "full": 2e-5}  # notebook 09 §6
MiB = 2**20


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model-dir",
        default=os.environ.get("MODEL_DIR"),
        help="a local folder with the model's weights (default: random weights, real config)",
    )
    p.add_argument(
        "--shape",
        default="SmolLM2-360M",
        choices=sorted(hf.REAL_SHAPES),
        help="the real config used when there is no --model-dir",
    )
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="compute dtype (auto: choose_compute_dtype; bfloat16 on a CPU runs under CPU autocast)",
    )
    p.add_argument(
        "--steps", type=int, default=None, help="training steps per method (GPU 40, CPU 2)"
    )
    p.add_argument("--batch", type=int, default=None, help="batch size (GPU 8, CPU 2)")
    p.add_argument(
        "--max-len", type=int, default=None, help="tokens per example at most (GPU 384, CPU 128)"
    )
    p.add_argument("--val", type=int, default=None, help="held-out pairs (GPU 64, CPU 4)")
    p.add_argument("--methods", nargs="*", default=list(hf.METHODS), choices=list(hf.METHODS))
    p.add_argument("--no-bench", action="store_true", help="skip bench_qlora_gpu")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="CPU, tiny Llama, 2 steps: checks that the script runs",
    )
    p.add_argument(
        "--out", default=None, help="results folder (default bench/results; --dry-run: none)"
    )
    return p.parse_args(argv)


def _dtype(args, device: torch.device) -> torch.dtype:
    return choose_compute_dtype(device) if args.dtype == "auto" else getattr(torch, args.dtype)


def _model_folder(args) -> tuple[str, str]:
    """(folder, what it is): the local weights, or random weights with the real (or tiny) config."""
    if args.model_dir and (Path(args.model_dir) / "config.json").exists():
        return str(args.model_dir), f"{args.model_dir} (pretrained weights, local folder)"
    if args.dry_run:
        folder = Path(tempfile.mkdtemp()) / "tiny-llama"
        return str(hf.build_tiny_llama(folder)), "tiny Llama (random weights, dry run)"
    folder = cache_dir() / f"random-{args.shape}"
    if not (folder / "config.json").exists():
        hf.build_tiny_llama(folder, shape=args.shape)
    return str(folder), f"{args.shape} config with random weights (no local weights given)"


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def token_counts(examples: list, batch_size: int) -> dict:
    """Tokens per example (median) and per padded batch (median), as ``train_sft`` draws them."""
    lengths = [len(ids) for ids, _ in examples]
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(0)).tolist()
    padded = [
        batch_size * max(lengths[i] for i in order[k : k + batch_size])
        for k in range(0, len(order) - batch_size + 1, batch_size)
    ]
    real = [
        sum(lengths[i] for i in order[k : k + batch_size])
        for k in range(0, len(order) - batch_size + 1, batch_size)
    ]
    return dict(
        median_example=statistics.median(lengths),
        median_padded_batch=statistics.median(padded),
        padding_share=1 - sum(real) / max(sum(padded), 1),
        examples=len(examples),
    )


def run(args) -> dict:
    """Everything above; returns the results (also written when ``--out``/a real run says so)."""
    t_start = time.perf_counter()
    if args.dry_run:
        args.device, args.steps, args.batch = "cpu", args.steps or 2, args.batch or 2
        args.max_len, args.val, args.no_bench = args.max_len or 96, args.val or 2, True
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = device.type == "cuda"
    steps, batch = args.steps or (40 if gpu else 2), args.batch or (8 if gpu else 2)
    max_len, n_val = args.max_len or (384 if gpu else 128), args.val or (64 if gpu else 4)
    dtype = _dtype(args, device)
    name = (
        torch.cuda.get_device_name(device)
        if gpu
        else f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    )
    folder, what = _model_folder(args)
    tokenizer = hf.load_tokenizer(folder, local_only=True)
    train = [sft.chat_example(p, tokenizer, max_len) for p in sft.docstring_pairs("train", 60)]
    val_pairs = sft.docstring_pairs("val", 60)[:n_val]
    val = [sft.chat_example(p, tokenizer, max_len) for p in val_pairs]
    res = dict(
        device=name,
        model=what,
        compute_dtype=str(dtype),
        steps=steps,
        batch=batch,
        max_len=max_len,
        torch=torch.__version__,
        date=datetime.date.today().isoformat(),
        load_before=_load(),
        tokens=token_counts(train, batch),
    )

    base = hf.load_model(folder, dtype, device, local_only=True)
    res["parameters"] = sum(p.numel() for p in base.parameters())
    res["base_val_bits"] = sft.evaluate_sft(base, val, tokenizer.pad_token_id, batch)
    del base
    runs = hf.compare_methods(
        args.methods,
        folder,
        train,
        val,
        lr=LR,
        keep="lorakit-qlora" if "lorakit-qlora" in args.methods else None,
        steps=steps,
        batch_size=batch,
        compute_dtype=dtype,
        device=device,
        pad_id=tokenizer.pad_token_id,
        warmup_steps=1,
        local_only=True,
        progress=False,
        probe_activations=True,
    )
    res["methods"] = {m: {k: v for k, v in r.items() if k != "model"} for m, r in runs.items()}
    if "lorakit-qlora" in runs and runs["lorakit-qlora"]["status"] == "ok":
        res["merge"] = merge_section(
            runs["lorakit-qlora"].pop("model"), tokenizer, val, val_pairs, dtype, device
        )
    res["load_after"] = _load()
    if gpu and not args.no_bench:
        bench = _bench_module()
        res["bench_qlora_gpu"] = bench.main(
            [
                "--model",
                args.shape,
                "--seq",
                "512",
                "--batch",
                "4",
                "--steps",
                "3",
                "--out",
                str(Path(args.out or ROOT / "bench" / "results")),
            ]
        )
    res["seconds"] = time.perf_counter() - t_start
    report = format_report(res)
    print(report)
    out = args.out or (None if args.dry_run else str(ROOT / "bench" / "results"))
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        stem = (
            "gpu-" + re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
            if gpu
            else f"cpu-realshape-{args.shape.lower()}-{str(dtype).removeprefix('torch.')}"
        )
        if args.dry_run:
            stem = "gpu-dryrun-cpu"
        (Path(out) / f"{stem}.txt").write_text(report + "\n")
        (Path(out) / f"{stem}.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
        res["written"] = str(Path(out) / f"{stem}.txt")
    return res


def merge_section(model, tokenizer, val, val_pairs, dtype, device) -> dict:
    """§7: merge into Ŵ in float32, save in one dtype, reload, compare exactly or statistically."""
    out = Path(tempfile.mkdtemp()) / "merged"
    ids_trained = hf.generate_ids(model, tokenizer, val_pairs[:2], max_new_tokens=12)
    merged = copy.deepcopy(model)
    merge_into_dequantized(merged, dtype=torch.float32)
    hf.save_merged(merged, out, torch.float32, tokenizer)
    del merged
    reloaded = hf.load_model(out, torch.float32, device, local_only=True)
    stats = hf.merge_agreement(model, reloaded, val, tokenizer.pad_token_id)
    stats.update(
        checkpoint_dtypes=sorted(hf.checkpoint_dtypes(out)),
        loaded_dtypes=sorted({str(p.dtype) for p in reloaded.parameters()}),
        mb_on_disk=sum(f.stat().st_size for f in out.glob("*.safetensors")) / MiB,
        same_greedy_ids=hf.generate_ids(reloaded, tokenizer, val_pairs[:2], max_new_tokens=12)
        == ids_trained,
        exact_expected=dtype == torch.float32,
    )
    stats["problems"] = hf.merge_problems(stats, dtype, stats["same_greedy_ids"])
    return stats


def _bench_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_qlora_gpu", ROOT / "bench" / "bench_qlora_gpu.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_qlora_gpu"] = module
    spec.loader.exec_module(module)
    return module


def format_report(res: dict) -> str:
    t = res["tokens"]
    lines = [
        f"notebook 09 GPU section — {res['device']}, torch {res['torch']}, {res['date']}",
        f"model: {res['model']}; {res['parameters'] / 1e6:.1f} M parameters; compute dtype {res['compute_dtype']}",
        f"{res['steps']} steps per method, batch {res['batch']}, ≤ {res['max_len']} tokens per example; "
        f"load average before {res['load_before']}, after {res.get('load_after', '?')}",
        f"tokens: median example {t['median_example']:.0f}, median padded batch {t['median_padded_batch']:.0f} "
        f"({100 * t['padding_share']:.0f} % padding), {t['examples']} training examples",
        f"base model held-out response loss: {res['base_val_bits']:.3f} bits/token",
        "",
        f"{'method':<16}{'weights':<34}{'peak MiB':>10}{'saved KiB/token':>17}{'ms/step':>10}"
        f"{'first loss':>12}{'val bits':>10}",
    ]
    for m, r in res["methods"].items():
        if r["status"] != "ok":
            lines.append(f"{m:<16}{r['status']}")
            continue
        lines.append(
            f"{m:<16}{r['weights']:<34}{r['peak_bytes'] / MiB:>10.1f}"
            f"{r.get('saved_bytes_per_token', float('nan')) / 1024:>17.1f}{r['ms_per_step']:>10.0f}"
            f"{r['losses'][0]:>12.3f}{r['val_bits']:>10.3f}"
        )
    method = next(
        (r.get("memory_method") for r in res["methods"].values() if r.get("memory_method")), ""
    )
    lines.append(f"peak memory measured as: {method}")
    if "merge" in res:
        g = res["merge"]
        lines += [
            "",
            "§7 merge into Ŵ (float32), saved, reloaded: "
            f"checkpoint dtypes {g['checkpoint_dtypes']}, loaded as {g['loaded_dtypes']}, "
            f"{g['mb_on_disk']:.1f} MiB on disk",
            f"  teacher-forced argmax agreement {g['agreement']:.4f} over {g['positions']} response tokens, "
            f"max |Δlogit| {g['max_logit_gap']:.2e}, held-out loss {g['bits_trained']:.4f} (trained) vs "
            f"{g['bits_reloaded']:.4f} (reloaded) bits/token; same greedy token ids: {g['same_greedy_ids']}"
            + (
                " (exact expected: float32)"
                if g["exact_expected"]
                else " (statistical: bfloat16 compute)"
            ),
            "  verdict: "
            + (
                "the reloaded model is the trained one"
                if not g["problems"]
                else "PROBLEMS: " + "; ".join(g["problems"])
            ),
        ]
    if "bench_qlora_gpu" in res:
        b = res["bench_qlora_gpu"]
        lines += [
            "",
            f"bench_qlora_gpu at {b['shape'].get('hidden_size')}-wide shape, seq {b['seq']}, batch {b['batch']}:",
        ]
        for n, r in b["runs"].items():
            lines.append(
                f"  {n:<16}"
                + (
                    r["skipped"]
                    if r.get("skipped")
                    else f"peak {r['peak_gb']:.3f} GB, step {1000 * r['step_seconds']:.0f} ms"
                )
            )
        lines.append("  ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in b["ratios"].items()))
    lines.append(f"\nwhole run: {res['seconds']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    run(parse())
