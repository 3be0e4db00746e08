"""Benchmark: peak host memory of QLoRA's load, today's path vs quantize-on-load (notebook 09 §9).

    python bench/bench_quantize_on_load.py           # SmolLM2-360M's shapes, random weights, 3 shards
    python bench/bench_quantize_on_load.py --smoke   # the tiny Llama: checks that the script works

A model with SmolLM2-360M-Instruct's exact config (hidden 960, 32 layers, 15/5 heads, vocab
49,152, tied embeddings) and random weights is saved with ``save_pretrained`` in several
safetensors shards. Then each path runs in a **fresh process** (so nothing of the others is
counted) and reports its peak resident set size (``resource.getrusage(...).ru_maxrss``):

- ``imports only``: Python + torch + transformers + lorakit and an empty (meta) model;
- ``load then quantize``: ``hf.load_model`` (the whole model in float32) + ``prepare_qlora``;
- ``quantize on load``: ``quantload.load_qlora`` (shard by shard, one tensor at a time);
- both again with ``MALLOC_MMAP_THRESHOLD_=65536``, so glibc returns each freed buffer to the
  system at once: what the loader holds, without the allocator's retained free blocks.

Both loaded paths print a sha256 of every 4-bit layer's stored bytes; the script checks they are
equal before it reports anything. Results go to ``bench/results/cpu-quantize-on-load.txt``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMOLLM2_360M = dict(
    vocab_size=49152,
    hidden_size=960,
    intermediate_size=2560,
    num_hidden_layers=32,
    num_attention_heads=15,
    num_key_value_heads=5,
    max_position_embeddings=8192,
    rope_theta=100000.0,
    tie_word_embeddings=True,
    rms_norm_eps=1e-5,
)

CHILD = r"""
import hashlib, resource, sys, time
import torch
from lorakit import hf, quantload
from lorakit.qlora import Linear4bit, prepare_qlora
from lorakit.train import set_seed
folder, path = sys.argv[1], sys.argv[2]
start = time.perf_counter()
set_seed(0)
if path == "imports":
    model = quantload.empty_model(folder, torch.float32)
elif path == "load-then-quantize":
    model = prepare_qlora(hf.load_model(folder, torch.float32, local_only=True), r=16, alpha=32)
else:
    model = quantload.load_qlora(folder, r=16, alpha=32, local_only=True)
seconds = time.perf_counter() - start
h = hashlib.sha256()
for name, m in model.named_modules():
    if isinstance(m, Linear4bit):
        for t in (m.packed, m.absmax_codes, m.absmax2, m.offset, m.absmax):
            if t is not None:
                h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
print(f"RESULT {path} {peak_kib * 1024} {seconds:.1f} {h.hexdigest()}")
"""


def build(folder: Path, smoke: bool) -> None:
    """Save the model (random weights, float32) in shards, in its own process."""
    code = (
        "import sys, torch, transformers\n"
        "from lorakit import hf\n"
        "folder = sys.argv[1]\n"
        f"if {smoke}:\n"
        "    hf.build_tiny_llama(folder)\n"
        "else:\n"
        "    torch.manual_seed(0)\n"
        f"    cfg = transformers.LlamaConfig(**{SMOLLM2_360M!r})\n"
        "    model = transformers.LlamaForCausalLM(cfg)\n"
        "    model.save_pretrained(folder, max_shard_size='600MB')\n"
    )
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True)


def measure(folder: Path, path: str, env: dict | None = None) -> tuple[int, float, str]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), path],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    ).stdout
    line = next(l for l in out.splitlines() if l.startswith("RESULT "))
    _, _, peak, seconds, digest = line.split()
    return int(peak), float(seconds), digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke", action="store_true", help="the tiny Llama: check that the script works"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        build(folder, args.smoke)
        shards = sorted(folder.glob("*.safetensors"))
        file_bytes = sum(s.stat().st_size for s in shards)
        rows = {
            p: measure(folder, p) for p in ("imports", "load-then-quantize", "quantize-on-load")
        }
        # glibc keeps freed medium-sized blocks in its heap instead of returning them: with a low mmap
        # threshold every tensor buffer is returned on free, which shows what the loader itself holds
        low = {"MALLOC_MMAP_THRESHOLD_": "65536"}
        rows.update(
            {
                f"{p} (mmap>64K)": measure(folder, p, low)
                for p in ("load-then-quantize", "quantize-on-load")
            }
        )
    digests = {row[2] for name, row in rows.items() if name != "imports"}
    assert len(digests) == 1, "every loaded path stores the same 4-bit bytes"
    gib = 2**30
    base = rows["imports"][0]
    load = os.getloadavg()
    lines = [
        f"# quantize-on-load bench, {'smoke (tiny Llama)' if args.smoke else 'SmolLM2-360M shapes, random weights'}",
        f"# machine: {platform.machine()} {os.cpu_count()} cores, torch CPU build; load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"# checkpoint: {len(shards)} safetensors shards, {file_bytes / gib:.3f} GiB (float32)",
        "# peak = ru_maxrss of a fresh process; 'above imports' subtracts the imports-only process",
        "# (mmap>64K): the same with MALLOC_MMAP_THRESHOLD_=65536 (glibc returns every freed tensor buffer)",
        f"{'path':<34}{'peak RSS GiB':>14}{'above imports':>16}{'seconds':>10}",
    ]
    for path, (peak, seconds, _) in rows.items():
        lines.append(f"{path:<34}{peak / gib:>14.3f}{(peak - base) / gib:>16.3f}{seconds:>10.1f}")
    lines.append(
        "# the two loaded paths store identical 4-bit bytes (sha256 over packed codes + constants)"
    )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.smoke:
        out = Path(__file__).parent / "results" / "cpu-quantize-on-load.txt"
        out.write_text(text)
        print(f"written to {out}")


if __name__ == "__main__":
    main()
