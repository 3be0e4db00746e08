# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 10 · Beyond one GPU: FSDP-QLoRA
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lorakit/lorakit/blob/v0.1.0/notebooks/10_beyond_one_gpu.ipynb)
#
# Shard a QLoRA fine-tune over several processes with PyTorch's own FSDP2, prove it is the same
# training, measure what each rank holds and sends, and work out what a 70B model needs per GPU.
#
# **You will**
# - make lorakit's 4-bit weights shardable (the "quant storage" idea) and see what must stay whole;
# - run QLoRA on two processes with `torch.distributed` (gloo) and check, step by step, that it is the single-process run;
# - measure per-rank memory and communication, then scale the arithmetic to 7B and 70B on 1–8 GPUs, against Answer.AI's published runs.
#
# **What runs where.** Everything runs on a CPU: two processes on this machine talk through gloo
# over 127.0.0.1. On a machine with several CUDA GPUs the same script uses NCCL, one GPU per
# process; nothing else changes (section 8 says how).
#
# **Runtime** (measured: top to bottom in a fresh kernel, base model cached, by `bench/course_runtime.py`)
#
# | device | test mode (`LORAKIT_FAST=1`) | learner size |
# |---|---|---|
# | 2-core x86_64 CPU, otherwise idle (load ≤ 2), 2026-11-29 | 10 s | 19 s |

# %%
# Colab only: install lorakit and its reference libraries (does nothing anywhere else).
# Written by scripts/colab.py from pyproject.toml [tool.lorakit.colab]: a fork edits that, not this.
import sys

if "google.colab" in sys.modules:
    import glob
    import subprocess

    uploaded = sorted(glob.glob("/content/lorakit-*.whl"))  # a wheel uploaded by hand wins
    source = "file://" + uploaded[-1] if uploaded else "git+https://github.com/lorakit/lorakit@v0.1.0"
    if subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"lorakit[reference] @ {source}"]).returncode:
        raise SystemExit(f"Installing lorakit from {source} failed (pip says why above). Instead: on your "
                         "computer, in the course folder, run `make wheel`; upload dist/lorakit-0.1.0-py3-none-any.whl "
                         "with Colab's Files panel (left), then run this cell again.")

# %%
import dataclasses
import math
import os
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator
from safetensors.torch import load_file

from lorakit import distributed as D
from lorakit.adapters import adapter_state, load_adapter
from lorakit.memory import PAPER_DTYPES, estimate_memory, parameter_counts
from lorakit.qlora import Linear4bit, prepare_qlora
from lorakit.train import base_model, fast_mode, load_model

FAST = fast_mode()
RUNS = Path(tempfile.mkdtemp(prefix="lorakit-nb10-"))  # results and adapters of this notebook's runs
print(f"test mode: {FAST}; CPU cores: {os.cpu_count()}; CUDA GPUs: {torch.cuda.device_count()}; "
      f"torch {torch.__version__}; runs go to {RUNS}")

# %% [markdown]
# ## 1. Why shard: one GPU is not enough for 70B, even in 4 bits
#
# Notebook 08 counted what QLoRA needs on **one** GPU. For Llama-2 70B (r = 64 on every linear
# layer, batch 2 of 2,048 tokens, gradient checkpointing) that is still far more than a 24 GB or
# even a 48 GB card:

# %%
one_gpu = estimate_memory("70B", "qlora", r=64, batch_size=2, seq_len=2048, **PAPER_DTYPES)  # bfloat16, as Answer.AI
print("Llama-2 70B QLoRA on one GPU: " + ", ".join(f"{k} {v:.1f} GB" for k, v in one_gpu.items()))
assert one_gpu["total"] > 48, "70B QLoRA should not fit one 48 GB GPU"

# %% [markdown]
# With data parallelism on $N$ GPUs each GPU computes on its own slice of the batch. Plain data
# parallelism (DDP) keeps a full copy of everything on every GPU, so it does not help memory.
# ZeRO (Rajbhandari et al. 2020) removes the copies in three stages: shard the optimizer states
# (stage 1), then the gradients (2), then the parameters themselves (3). **FSDP** (Zhao et al.
# 2023) is PyTorch's ZeRO-3: each of the $N$ ranks keeps $1/N$ of every parameter, gradient and
# optimizer state. Just before a layer computes, its parameters are **all-gathered** (every rank
# sends its piece to every other); right after backward its gradients are **reduce-scattered**
# (summed over ranks, each rank keeping the sum for its own piece). Per rank:
#
# $$\text{bytes per rank} \approx \frac{P_\text{params} + P_\text{grads} + P_\text{optimizer}}{N}
# + \underbrace{\text{one or two layers, gathered}}_\text{while they compute} + \text{activations} + \text{what stays whole}.$$
#
# **FSDP2** (`torch.distributed.fsdp.fully_shard`) stores each sharded parameter as a *DTensor*:
# rank $k$ holds rows $k\lceil n/N\rceil \ldots (k+1)\lceil n/N\rceil$ of its dim 0 (the last
# shard is padded when $N$ does not divide $n$). That is the engine we use below.

# %% [markdown]
# ## 2. Quant storage: making 4-bit weights shardable
#
# FSDP shards **parameters**. lorakit's `Linear4bit` (notebook 08) keeps its packed codes and
# block constants as **buffers**, which FSDP would copy whole onto every rank: the 4-bit base, the
# biggest thing in QLoRA, would not shard at all. Here is one layer of the course model:

# %%
_, info = base_model(progress=False)
SETTINGS = D.run_settings()
print(f"base model {info['config']}; run settings {SETTINGS}")
model = prepare_qlora(load_model(info["path"]), "all-linear", r=SETTINGS.r, alpha=SETTINGS.alpha)
q_proj = model.blocks[0].attn.q_proj.base


def describe(layer: torch.nn.Module) -> None:
    params = dict(layer.named_parameters())
    for name, t in list(params.items()) + list(layer.named_buffers()):
        kind = "parameter" if name in params else "buffer"
        print(f"  {name:<13} {kind:<9} {str(t.dtype):<14} shape {str(tuple(t.shape)):<10} {t.numel() * t.element_size():>7,} bytes")


describe(q_proj)
assert not list(q_proj.parameters()), "before: every quantized tensor is a buffer, nothing FSDP would shard"

# %% [markdown]
# **FSDP1** (`FullyShardedDataParallel`) flattens all parameters of a wrapped unit into *one*
# flat tensor of *one* dtype. The bf16 LayerNorm weights and LoRA matrices cannot share a
# uint8 tensor, so Answer.AI's FSDP-QLoRA (2024) stores the 4-bit codes *in a float dtype*:
# `bnb_4bit_quant_storage=torch.bfloat16`. Two packed bytes are reinterpreted as one bf16 value,
# not converted, so nothing is lost — the same bytes, seen through another dtype:

# %%
packed = q_proj.packed
as_bf16 = packed.view(torch.bfloat16)  # 2 bytes → one "bf16": a reinterpretation, no arithmetic
print(f"packed: {packed.dtype} {tuple(packed.shape)} → storage {as_bf16.dtype} {tuple(as_bf16.shape)}")
assert torch.equal(as_bf16.view(torch.uint8), packed), "viewing as bf16 and back gives the same bytes"

# %% [markdown]
# **FSDP2** shards each parameter on its own, as a DTensor, so the dtypes may differ: uint8 codes
# can be sharded as uint8. All we must do is make them *parameters* — frozen
# (`requires_grad=False`), so they get no gradient and no optimizer state.
# `lorakit.distributed.quant_storage_as_parameters` does that for every `Linear4bit`; what
# cannot be split stays whole on every rank: the 0-d double-quantization `offset` (a scalar has
# no dim 0).

# %%
x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    before, _ = model(x)
keys_before = set(model.state_dict())
moved = D.quant_storage_as_parameters(model)
describe(q_proj)
with torch.no_grad():
    after, _ = model(x)
print(f"{len(moved['sharded'])} quantized tensors became frozen parameters; "
      f"{len(moved['replicated'])} stay whole (the offsets)")
assert torch.equal(before, after), "the model computes exactly what it computed before"
assert set(model.state_dict()) == keys_before, "checkpoints keep their names"
assert q_proj.packed.dtype == torch.uint8 and not q_proj.packed.requires_grad

# %% [markdown]
# How would two ranks split this layer? Each parameter is cut along dim 0 into
# $\lceil n/N \rceil$-row pieces; `absmax2` has a single element, so rank 1's piece is empty and
# FSDP2 pads it to one element. We predict each rank's parameter bytes from the shapes alone,
# padding included, and check the prediction against the real run in section 5.

# %%
N = 2


def shard_bytes(t: torch.Tensor, n_ranks: int) -> int:
    """Bytes one rank allocates for its shard of ``t``: ceil(rows / N) rows, padded."""
    rows = t.shape[0]
    return math.ceil(rows / n_ranks) * (t.numel() // rows) * t.element_size()


for name, t in q_proj.named_parameters():
    rows = t.shape[0]
    per = math.ceil(rows / N)
    print(f"  {name:<13} {rows:>5} rows → ranks hold {[max(0, min(per, rows - k * per)) for k in range(N)]} rows, "
          f"{shard_bytes(t, N)} bytes each (padding included)")
whole_params = sum(t.numel() * t.element_size() for t in model.parameters())
predicted_rank_params = sum(shard_bytes(t, N) for t in model.parameters())
print(f"whole model: {whole_params:,} parameter bytes; predicted per rank with N = {N}: {predicted_rank_params:,}")

# %% [markdown]
# ## 3. The script and its launch
#
# `python -m lorakit.distributed` is one rank of the run. It reads its rank and the world size
# from the environment (as `torchrun` sets them), joins the process group (**gloo** on CPUs,
# **NCCL** when CUDA is present), builds the QLoRA model from the course base (NF4 + double
# quantization, LoRA on all linear layers, seeded so every rank starts from the same A),
# turns the quantized tensors into frozen parameters, and shards it with FSDP2, one unit per
# transformer block plus the root:
#
# ```python
# for block in model.blocks:
#     fully_shard(block, mesh=mesh)   # each block: one all-gather, one reduce-scatter
# fully_shard(model, mesh=mesh)       # the root: embeddings, final norm, head
# ```
#
# Every rank draws the **same** global batch from the same seeded generator and keeps its
# $1/N$ of the rows. Its loss is the mean over its rows; FSDP2 averages the gradients over
# ranks, so every step is the step of the whole batch. AdamW then updates each rank's shard of
# A and B. `lorakit.distributed.launch` starts the ranks the way torchrun does, but opens
# nothing beyond 127.0.0.1: it hosts the rendezvous store on a free port there, gives each
# rank torchrun's environment, streams rank 0's progress, and has a timeout.

# %%
print("on a multi-GPU machine:", " ".join(D.torchrun_command(N, SETTINGS.to_args() + ["--out", "runs/fsdp"])))
start = time.perf_counter()
sharded = D.launch(N, RUNS / "two_ranks", SETTINGS, base=info["path"], timeout=600)
launch_seconds = time.perf_counter() - start
print(f"{N} ranks ({sharded['backend']}, {sharded['device']}): {launch_seconds:.1f} s wall on this CPU, "
      f"of which training {sharded['seconds']:.1f} s (the rest: starting Python and torch in each process)")

# %% [markdown]
# ## 4. The same training, step for step
#
# The reference: the same settings in this process, no `torch.distributed` at all. If sharding
# changed the arithmetic, the two loss curves would drift apart; only float32 rounding (sums in
# another order: half batches, then a reduce-scatter) may differ. (Thirty steps teach the model
# little; the point is that both runs take the same steps.) This also checks that
# `Linear4bit` runs unchanged under FSDP2: before a block computes (forward, and again before its
# backward) FSDP2 all-gathers its shards and puts full, plain tensors back on the module, so the
# dequantization code never sees a DTensor.

# %%
single = D.train_single(info["path"], SETTINGS)
load = f"load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "load not measured"
print(f"training time: single process {single['seconds']:.1f} s, two ranks {sharded['seconds']:.1f} s "
      f"for {SETTINGS.steps} steps on this CPU ({load})")
print("These two times are NOT comparable: the two ranks share this machine's cores with each other and with "
      "everything else running, and gloo copies tensors between processes; on a busy machine either can look "
      "many times faster. This section checks the arithmetic (the same losses), not the speed.")
diff = [abs(a - b) for a, b in zip(sharded["train_bpb"], single["train_bpb"])]
print(f"largest loss difference over {len(diff)} steps: {max(diff):.2e} bits/byte")
assert len(diff) == SETTINGS.steps and max(diff) < 1e-4, "two ranks follow the single-process loss within 1e-4 bits/byte"

# %%
steps = range(1, SETTINGS.steps + 1)
fig, (ax, ax_diff) = plt.subplots(1, 2, figsize=(10, 4))
ax.plot(steps, single["train_bpb"], lw=3, alpha=0.4, label="1 process")
ax.plot(steps, sharded["train_bpb"], "k--", lw=1, label=f"{N} ranks, FSDP2")
ax.set(xlabel="step", ylabel="train loss (bits/byte)", title="The two loss curves lie on each other")
ax.legend(loc="best")
ax_diff.plot(steps, diff, "o-")
ax_diff.set(xlabel="step", ylabel="|difference| (bits/byte)", ylim=(0, max(max(diff), 1e-7) * 1.3),
            title="They differ by float32 rounding only")
for a in (ax, ax_diff):
    a.xaxis.set_major_locator(MaxNLocator(integer=True))
fig.tight_layout()
plt.show()

# %% [markdown]
# The sharded run saved its adapter (`lorakit.adapters.save_adapter`, safetensors) after gathering
# A and B (`FSDPModule.unshard`). Its weights are the single-process weights, and loaded into a
# fresh single-process QLoRA model it gives the same logits:

# %%
saved = load_file(str(RUNS / "two_ranks" / "adapter.safetensors"))
mine = adapter_state(single["model"])
weight_diff = max((saved[k] - mine[k]).abs().max().item() for k in mine)
fresh = D.build_qlora(info["path"], SETTINGS)
load_adapter(fresh, RUNS / "two_ranks" / "adapter.safetensors")
x = torch.randint(0, 256, (4, fresh.cfg.context), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    logit_diff = (fresh.eval()(x)[0] - single["model"].eval()(x)[0]).abs().max().item()
print(f"{len(mine)} LoRA tensors: largest weight difference {weight_diff:.1e}; largest logit difference {logit_diff:.1e}")
assert set(saved) == set(mine) and weight_diff < 1e-4, "final LoRA weights match (within 1e-4)"
assert logit_diff < 1e-3, "the adapter from the sharded run gives the single-process logits (within 1e-3)"

# %% [markdown]
# ## 5. It shards: bytes per rank
#
# Inside the run, each parameter of a block is a DTensor placed `Shard(dim=0)`: rank $k$ holds its
# rows, the 4-bit codes as uint8. (`absmax2` has one element: rank 1's local piece is empty.)
# Each rank also counted the storage it allocated after the last step (`lorakit.distributed.rank_bytes`:
# local shards of parameters, gradients of A and B, AdamW's two moments), and what every rank
# keeps whole (buffers, AdamW's step counters).

# %%
for name, info_0 in sharded["q_proj_shards"][0].items():
    locals_ = [shards[name]["local"] for shards in sharded["q_proj_shards"]]
    print(f"  blocks.0.attn.q_proj.{name:<19} {info_0['dtype']:<8} global {str(info_0['shape']):<11} "
          f"{info_0['placement']:<14} local per rank {locals_}")
packed_shards = [shards["base.packed"] for shards in sharded["q_proj_shards"]]
assert all(p["placement"] == "(Shard(dim=0),)" and p["dtype"] == "uint8" for p in packed_shards), \
    "the packed codes are a uint8 DTensor sharded on dim 0"
assert sum(p["local"][0] for p in packed_shards) == packed_shards[0]["shape"][0], "the shards add up to the whole"

# %%
KINDS = ["parameters", "gradients", "optimizer", "replicated"]
rows = {"1 process": single["rank_bytes"], **{f"rank {k}": b for k, b in enumerate(sharded["rank_bytes"])}}
print(f"{'':<10}" + "".join(f"{k:>13}" for k in KINDS))
for name, b in rows.items():
    print(f"{name:<10}" + "".join(f"{b[k]:>13,}" for k in KINDS))
whole = single["rank_bytes"]
for b in sharded["rank_bytes"]:
    assert b["parameters"] == predicted_rank_params, "per-rank parameter bytes are the predicted padded shards"
    for k in ("parameters", "gradients", "optimizer"):
        assert whole[k] / N <= b[k] <= whole[k] / N * 1.02 + 64, f"{k}: each rank holds 1/{N} (+ padding)"
    assert b["replicated"] == whole["replicated"], "buffers and step counters are whole on every rank"
sharded_total = sum(sharded["rank_bytes"][0][k] for k in KINDS)
print(f"per rank {sharded_total / 1e3:.1f} KB against {sum(whole.values()) / 1e3:.1f} KB for one process "
      f"(ratio {sharded_total / sum(whole.values()):.3f}; 1/{N} + what stays whole)")

# %%
fig, ax = plt.subplots(figsize=(6, 4))
bottom = [0.0] * len(rows)
for kind in KINDS:
    values = [b[kind] / 1e3 for b in rows.values()]
    ax.bar(list(rows), values, bottom=bottom, label=kind)
    bottom = [a + v for a, v in zip(bottom, values)]
ax.set(ylabel="bytes held (KB)", title=f"Each of {N} ranks holds half of every sharded tensor")
ax.legend(loc="upper right", fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 6. What it costs: bytes on the wire per step
#
# Memory is traded for communication. Per step each transformer block is all-gathered twice
# (before forward; freed after it, `reshard_after_forward`; gathered again before backward), the
# root once (it is needed again right away, so FSDP2 keeps it), and the gradients of A and B are
# reduce-scattered once. `comm_per_step` predicts these bytes from the sharded model;
# `CommCounter` counted what FSDP2 actually passed to `all_gather_single` and `reduce_scatter_single`.

# %%
pred, meas, calls = sharded["comm_predicted"], sharded["comm_measured"], sharded["comm_calls"]
for k in ("all_gather", "reduce_scatter"):
    print(f"{k:<15} predicted {pred[k]:>9,} B/step   measured {meas[k]:>9,} B/step   ({calls[k]} calls/step)")
assert pred == meas, "the measured communication is the predicted one"
ratio = meas["all_gather"] / whole["parameters"]
print(f"all-gathered per step = {ratio:.2f} × the model's parameter bytes; each rank sends and receives "
      f"{(N - 1) / N:.2f} of that in a ring")
step_ms = 1e3 * sharded["seconds"] / SETTINGS.steps
print(f"a step took {step_ms:.0f} ms on this CPU (measured, load included)")
assert 1.0 < ratio < 2.0, "a step gathers the blocks twice (forward, backward) and the root once"

# %% [markdown]
# The ratio sits between 1 and 2: the blocks travel twice, the root (here large: float32
# embeddings and head of a tiny model) once. At 70B the blocks are nearly everything, so a step
# all-gathers about twice the 4-bit model, whatever the number of GPUs; in a ring each rank
# receives $(N-1)/N$ of it. Over PCIe 4.0 x16
# (≈ 25 GB/s, a nominal figure, not measured here) that is seconds of transfers per step, which
# FSDP overlaps with compute by prefetching the next layer. Answer.AI measured nearly 50 s per batch of two 2,048-token
# sequences for 70B on two RTX 3090s — "70 billion parameters are copied to the GPUs each step".

# %%
root_70b = 2 * parameter_counts("70B")["other"] / 1e9          # 16-bit embeddings, norms, head: gathered once
gathered_70b = 2 * (one_gpu["weights"] - root_70b + one_gpu["lora"]) + root_70b   # decoder layers twice
moved_70b = (2 - 1) / 2 * gathered_70b                          # what each rank receives in a ring of N = 2
print(f"70B QLoRA all-gathers ≈ {gathered_70b:.0f} GB per step (decoder layers twice, the root once); in a ring "
      f"of 2 GPUs each receives half, {moved_70b:.0f} GB: at a nominal 25 GB/s ≈ {moved_70b / 25:.1f} s of "
      "transfers per step")

# %% [markdown]
# ## 7. At scale: 7B and 70B on 1–8 GPUs
#
# `lorakit.distributed.fsdp_qlora_memory` puts the pieces together on top of
# `lorakit.memory.estimate_memory` (bfloat16 adapters and compute, as Answer.AI trained): the sharded
# states ÷ N, two decoder layers all-gathered (the one computing and the one FSDP prefetches), the
# root whole (FSDP2 keeps the embeddings, final norm and head gathered from forward to backward),
# and the activations of the GPU's own batch. With **CPU offload** the sharded states live in CPU
# RAM and stream in layer by layer, so the GPU keeps only the gathered layers, the root and the
# activations. (It ignores allocator overhead and temporaries,
# so it is a lower bound.) Batch 2 per GPU of 2,048 tokens, r = 64, gradient checkpointing:

# %%
GPUS, SIZES = [1, 2, 4, 8], [24, 48, 80]
table = {(m, n, off): D.fsdp_qlora_memory(m, n, off, batch_size=2, seq_len=2048)
         for m in ("7B", "70B") for n in GPUS for off in (False, True)}
print(f"{'model':<6}{'GPUs':>5}{'offload':>9}{'GB/GPU':>8}{'CPU GB':>8}   fits on " + " / ".join(f"{s} GB" for s in SIZES))
for (m, n, off), est in table.items():
    fits = " / ".join(f"{'yes' if est['total'] < s else 'no':>5}" for s in SIZES)
    print(f"{m:<6}{n:>5}{str(off):>9}{est['total']:>8.1f}{est['cpu']:>8.1f}   {fits}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for ax, m in zip(axes, ("7B", "70B")):
    for off, style in ((False, "o-"), (True, "s--")):
        ax.plot(GPUS, [table[(m, n, off)]["total"] for n in GPUS], style,
                label="CPU offload" if off else "no offload")
    for s in SIZES:
        ax.axhline(s, color="gray", lw=0.8, ls=":")
        ax.text(GPUS[-1], s, f" {s} GB", va="bottom", ha="right", fontsize=8, color="gray")
    ax.set(xscale="log", xlabel="GPUs", ylabel="estimated GB per GPU", title=f"{m} QLoRA, batch 2 × 2,048 tokens")
    ax.set_xticks(GPUS, [str(n) for n in GPUS])
    ax.minorticks_off()
axes[1].plot([2], [D.ANSWER_AI_70B_PEAK_GIB * 2**30 / 1e9], "r*", ms=12, label="Answer.AI, measured (2 × 3090, offload)")
for ax in axes:
    ax.set_ylim(0, 88)
    ax.legend(loc="center right", fontsize=8)
fig.suptitle("70B fits two 24 GB GPUs only with CPU offload; four 24 GB GPUs without")
fig.tight_layout()
plt.show()

# %% [markdown]
# **Against Answer.AI's published runs** (Answer.AI, "You can now train a 70b language model at
# home", 2024, and their benchmark notes, `benchmarks_03_2024.md` in `AnswerDotAI/fsdp_qlora`):
# Llama-2 70B QLoRA at 2,048 tokens trained on 2 × 24 GB with CPU offload (batch 2), on 4 and
# 8 × 24 GB without offload (batch 1), on 2 and 4 × 48 GB, 2, 4 and 8 × 40 GB and 4 × 80 GB
# without offload. Our estimate says each of these fits — and that 2 × 24 GB without offload
# does not, which is why they needed offload there. Their measured peak for the 2 × 24 GB run,
# 14.92 GiB, is above our lower bound and below the card:

# %%
for gpus, gb, off, batch in D.ANSWER_AI_70B_RUNS:
    est = D.fsdp_qlora_memory("70B", gpus, off, batch_size=batch, seq_len=2048)["total"]
    print(f"{gpus} × {gb} GB, offload {str(off):<5}, batch {batch}: estimate {est:5.1f} GB per GPU")
    assert est < gb, "every configuration Answer.AI trained fits by our estimate"
no_offload = D.fsdp_qlora_memory("70B", 2, False, batch_size=2, seq_len=2048)["total"]
offload = D.fsdp_qlora_memory("70B", 2, True, batch_size=2, seq_len=2048)["total"]
measured_gb = D.ANSWER_AI_70B_PEAK_GIB * 2**30 / 1e9
print(f"2 × 24 GB, batch 2: without offload {no_offload:.1f} GB (> 24), with offload {offload:.1f} GB; "
      f"Answer.AI measured {D.ANSWER_AI_70B_PEAK_GIB} GiB = {measured_gb:.1f} GB, {measured_gb / offload:.2f}× our floor")
assert no_offload > 24 > measured_gb > offload, "no offload does not fit; the measured peak is above our lower bound"

# %% [markdown]
# The gap (the ratio printed above; the root, which FSDP2 keeps gathered, is already counted) is
# what the estimate leaves out: the dequantized 16-bit copy of the layer
# being computed, the logits and their softmax in float32, the recomputed block under
# checkpointing, the caching allocator's reserve. Treat the estimate as a floor and keep a margin.

# %% [markdown]
# ## 8. When something goes wrong
#
# In a multi-process job the failure to fear is a hang: one rank dies and the others wait
# forever inside a collective. `launch` watches every rank: the first one that exits with an
# error stops all the others, and a run past its `timeout` is stopped as a whole; either way
# you get `DistributedRunError` saying what happened, and no process is left behind. A drill:
# rank 1 exits with code 3 at step 2.

# %%
drill = dataclasses.replace(SETTINGS, steps=3)
try:
    D.launch(N, RUNS / "drill", drill, base=info["path"], timeout=600, echo=False,
             extra_args=["--fail-rank", "1", "--fail-step", "2"])
    raise AssertionError("the drill should have failed")
except D.DistributedRunError as e:
    print(str(e).splitlines()[0])
    error = e


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


assert "rank 1 exited with code 3" in str(error) and not any(alive(p) for p in error.pids), \
    "the failing rank is named and no rank is left running"

# %% [markdown]
# ## 9. On a machine with several GPUs
#
# What a learner needs: a Linux machine with N CUDA GPUs, a CUDA build of PyTorch (NCCL comes
# with it), this repository installed (`pip install -e .`), and then, in a terminal:
#
# ```bash
# python -c "from lorakit.train import base_model; base_model()"     # cache the base model once
# torchrun --standalone --nproc-per-node 4 -m lorakit.distributed --out runs/fsdp --global-batch 32
# ```
#
# Each process takes the GPU of its `LOCAL_RANK`, NCCL replaces gloo, and the rest of the script
# is the one that ran above. `runs/fsdp/result.json` holds the losses, per-rank bytes and
# communication; `runs/fsdp/adapter.safetensors` the adapter. (`torchrun` opens its rendezvous
# port on every interface, as multi-node training needs; `launch` keeps to 127.0.0.1.)
#
# To go from the course GPT to a real LLM: quantize and add LoRA as in notebook 09, call
# `quant_storage_as_parameters`, then `fully_shard` each decoder layer (`model.model.layers`)
# and the root; for models larger than the GPUs add
# `offload_policy=torch.distributed.fsdp.CPUOffloadPolicy()`, and load the weights on the
# meta device so that no rank ever materializes the whole model — Answer.AI's loader exists for
# that step.

# %% [markdown]
# ## Summary
#
# - FSDP (ZeRO-3) keeps 1/N of every parameter, gradient and optimizer state per rank; layers are all-gathered to compute and gradients reduce-scattered.
# - FSDP1 needs one dtype per unit, hence 4-bit codes stored in bf16 (`bnb_4bit_quant_storage`); FSDP2 shards per parameter, so frozen uint8 parameters suffice. Scalars and lookup tables stay whole.
# - Two gloo ranks reproduce the single-process loss within 1e-4 bits/byte; the final LoRA weights and the logits of the saved adapter match.
# - Each rank holds half of the parameters, gradients and optimizer states (exactly the padded shards we predicted) plus the small replicated part.
# - A step all-gathers ≈ 2× the model and reduce-scatters the LoRA gradients: predicted and measured agree.
# - 70B QLoRA needs ≈ 32 GB per GPU on 2 GPUs, so 2 × 24 GB works only with CPU offload (as Answer.AI found, 14.92 GiB measured); 4 × 24 GB works without.
# - A dead rank or a timeout ends the whole group with a clear error, never a hang.
#
# ## Exercises
#
# Worked solutions: `notebooks/solutions/nb10.py`.

# %%
from lorakit.exercises.nb10 import check_ex_10_1, check_ex_10_2, check_ex_10_3, check_ex_10_4

# %% [markdown]
# **Exercise 10.1 — 70B on four 24 GB GPUs.** Estimate the GB per GPU (1 GB = 1e9 bytes) for
# Llama-2 70B QLoRA (r = 64) on 4 GPUs **without** offload, batch 1 per GPU of 2,048 tokens,
# gradient checkpointing, bfloat16 as Answer.AI: the sharded weights, LoRA, gradients and optimizer
# states, plus the root whole (16-bit embeddings, norms and head: `2 * parameter_counts("70B")["other"]`
# bytes), plus two gathered decoder layers, plus the activations. Answer: a float. Hint: start from
# `estimate_memory("70B", "qlora", r=64, batch_size=1, seq_len=2048, **PAPER_DTYPES)`; only some
# parts divide by 4.

# %%
answer = None  # your answer here
check_ex_10_1(answer)

# %% [markdown]
# **Exercise 10.2 — The same with CPU offload.** With `cpu_offload=True` on the same 4 × 24 GB
# machine, how many GB stay on each GPU, and how many GB of CPU RAM hold the offloaded states
# (all four ranks' shards together)? Answer: a pair `(gpu_gb, cpu_gb)`. Hint: what leaves the
# GPU is exactly what was sharded.

# %%
answer = None  # your answer here, e.g. (gpu_gb, cpu_gb)
check_ex_10_2(answer)

# %% [markdown]
# **Exercise 10.3 — Bytes all-gathered per step at 70B.** With FSDP2's defaults, how many GB
# does one training step all-gather, for 70B QLoRA (r = 64, LoRA A and B in 16 bits)? Each
# decoder layer (4-bit weights at 4.127 bits/param + its LoRA) is gathered twice, the root
# (embedding, head and norms, 16-bit) once. Answer: a float (GB). Hint:
# `parameter_counts("70B")` and `lora_parameter_count("70B", 64)` from `lorakit.memory`.

# %%
answer = None  # your answer here
check_ex_10_3(answer)

# %% [markdown]
# **Exercise 10.4 — An experiment: three ranks.** Run the sharded fine-tune on **3** ranks with
# `dataclasses.replace(SETTINGS, global_batch=12)` and return the `result` dict of `D.launch`.
# Three does not divide most dim-0 sizes: the checker looks at the padding, checks that the
# communication matches the prediction and compares each rank's bytes with a third of the whole.
# Hint: `D.launch(3, RUNS / "three", settings, base=info["path"], timeout=600)` (≈ 20 s).

# %%
answer = None  # your answer here
check_ex_10_4(answer)

# %% [markdown]
# ## References
#
# - Y. Zhao et al., *PyTorch FSDP: Experiences on Scaling Fully Sharded Data Parallel*, 2023, arXiv:2304.11277 — `torch.distributed.fsdp.fully_shard` (FSDP2, per-parameter DTensor sharding).
# - S. Rajbhandari et al., *ZeRO: Memory Optimizations Toward Training Trillion Parameter Models*, 2020, arXiv:1910.02054 — stages 1–3 (optimizer states, gradients, parameters).
# - T. Dettmers et al., *QLoRA: Efficient Finetuning of Quantized LLMs*, 2023, arXiv:2305.14314 — NF4, double quantization (notebooks 06–08).
# - Answer.AI, *You can now train a 70b language model at home* (2024-03-06), *Enabling 70B Finetuning on Consumer GPUs* (2024-03-14), and the benchmark notes `benchmarks_03_2024.md` in `github.com/AnswerDotAI/fsdp_qlora` — FSDP-QLoRA, 14.92 GiB peak for Llama-2 70B on 2 × 24 GB with CPU offload.
# - bitsandbytes: `Linear4bit(..., quant_storage=torch.bfloat16)` / `BitsAndBytesConfig(bnb_4bit_quant_storage=...)`, the FSDP1 storage trick; PEFT + Accelerate: the FSDP-QLoRA guide in PEFT's documentation.
