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
# # 08 · QLoRA end to end
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lorakit/lorakit/blob/main/notebooks/08_qlora_by_hand.ipynb)
#
# Fine-tune a model whose frozen weights live in 4 bits: build the 4-bit layer and its backward
# pass by hand, train with it, and measure what it costs and saves against LoRA and full fine-tuning.
#
# **You will**
# - build a 4-bit linear layer whose backward returns only the input gradient, and check it against autograd;
# - run full fine-tuning, 16-bit LoRA, QLoRA NF4+DQ and QLoRA FP4 on the same data, steps and seed;
# - merge an adapter into a 4-bit base and into the 16-bit base, and decide which to ship.
#
# **What runs where.** Everything below runs on a CPU with the small course GPT. Section 6 runs
# only when a CUDA GPU is present (a 16 GB Colab T4 is enough, ≤ 15 minutes): the same four-way
# comparison on a model large enough that memory matters, in bf16 where the GPU supports it. On a
# CPU that section prints what it would do and is skipped; nothing else changes.
#
# **Runtime** (measured so far)
#
# | device | test mode (`LORAKIT_FAST=1`) | learner size |
# |---|---|---|
# | 2-core x86_64 CPU, base model cached (2026-11-29) | 8 s | 80 s |
# | GPU (section 6) | — | not measured yet (target ≤ 15 min on a T4) |

# %%
# Colab only: install lorakit and its reference libraries (does nothing anywhere else).
import sys

if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lorakit[reference] @ git+https://github.com/lorakit/lorakit"], check=True)

# %%
import copy
import os
import time

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F

from lorakit.data import load_splits
from lorakit.lora import inject_lora, lora_layers
from lorakit.memory import estimate_memory, track_peak
from lorakit.model import GPT, GPTConfig, count_parameters
from lorakit.qlora import (Linear4bit, merge_into_4bit, merge_into_16bit, prepare_qlora,
                           storage_report)
from lorakit.quant import dequantize_4bit, quantize_4bit, quantize_model_linears
from lorakit.train import base_model, evaluate, fast_mode, set_seed, train

FAST = fast_mode()
HAS_GPU = torch.cuda.is_available()
print(f"test mode: {FAST}; CUDA GPU: {torch.cuda.get_device_name(0) if HAS_GPU else 'none'}")
print("Sections 1-5 and 7 run on the CPU with the small course GPT."
      + ("" if HAS_GPU else " Section 6 (the GPU run) will be skipped: no CUDA device."))
if not HAS_GPU:
    print("No GPU here. Everything else still runs (small model, ~3 min on 2 cores). To see the real\n"
          "QLoRA run: on Colab choose Runtime > Change runtime type > T4 GPU and run again; on your own\n"
          "machine, install a CUDA build of PyTorch (pip install torch from pytorch.org) and bitsandbytes.")

# %% [markdown]
# ## 1. The base model and the new domain
#
# The course's pretrained GPT (trained on the standard library's source code) is the base. The
# fine-tuning task is the new domain of notebook 02: the Python language reference (`docs`).

# %%
base, info = base_model(progress=False)
base.eval()
train_docs, val_docs = load_splits("docs", max_bytes=200_000 if FAST else None)
EVAL = dict(batch_size=16, n_batches=4 if FAST else 16)
base_val = evaluate(base, val_docs, **EVAL)
print(f"base model: {count_parameters(base) / 1e6:.3f} M parameters, "
      f"val on docs before fine-tuning = {base_val:.3f} bits/byte")

# %% [markdown]
# ## 2. A 4-bit linear layer, forward and backward, by hand
#
# A linear layer computes $y = x W^\top$ with $x \in \mathbb{R}^{b \times n_\text{in}}$ and the
# weight stored as $W \in \mathbb{R}^{n_\text{out} \times n_\text{in}}$ (PyTorch's layout). QLoRA keeps
# $W$ only as 4-bit codes plus block constants (notebooks 06–07) and dequantizes on the fly:
#
# $$y = x\,\widehat W^\top, \qquad \widehat W = \operatorname{dequant}(\text{codes}, \text{absmax}) .$$
#
# The base is frozen, so backward needs one thing only, the gradient for the input:
#
# $$\frac{\partial L}{\partial x} = \frac{\partial L}{\partial y}\,\widehat W
# \quad (b \times n_\text{out}) \cdot (n_\text{out} \times n_\text{in}) = b \times n_\text{in},$$
#
# and **no** $\partial L / \partial W$. Autograd would also save $\widehat W$ (and $x$) from the
# forward; our own `autograd.Function` saves nothing and dequantizes again in backward.

# %%
class FourBitMatmul(torch.autograd.Function):
    """y = x Ŵᵀ with Ŵ dequantized on the fly; backward returns grad_x = grad_y Ŵ only."""

    @staticmethod
    def forward(ctx, x, q):
        ctx.q = q                                   # the 4-bit weight: it exists anyway
        W_hat = dequantize_4bit(q, x.dtype)         # out×in, dropped when forward returns
        return x @ W_hat.t()

    @staticmethod
    def backward(ctx, grad_y):
        W_hat = dequantize_4bit(ctx.q, grad_y.dtype)  # dequantize again instead of storing it
        return grad_y @ W_hat, None                 # grad for x; none for the 4-bit weight


layer = base.blocks[0].mlp.up_proj                   # nn.Linear, weight out×in
q = quantize_4bit(layer.weight.detach(), "nf4", blocksize=64, double_quant=True)
W_hat = dequantize_4bit(q)
x = torch.randn(4, layer.in_features, generator=torch.Generator().manual_seed(0))

x1 = x.clone().requires_grad_(True)
y1 = FourBitMatmul.apply(x1, q)
x2 = x.clone().requires_grad_(True)
W_ref = W_hat.clone().requires_grad_(True)           # ordinary autograd on the dequantized weight
y2 = F.linear(x2, W_ref)
g = torch.randn_like(y1)
y1.backward(g)
y2.backward(g)
print(f"max |y ours - y autograd| = {(y1 - y2).abs().max().item():.2e}, "
      f"max |grad_x ours - autograd| = {(x1.grad - x2.grad).abs().max().item():.2e}")

# %%
assert torch.allclose(y1, y2, atol=1e-6), "forward must equal a Linear holding the dequantized weight"
assert torch.allclose(x1.grad, x2.grad, atol=1e-6), "grad_x must equal autograd's"
assert W_ref.grad is not None and q.packed.grad is None, "autograd computed a weight gradient we never need"
# a numerical check of the backward, in float64 on a small layer
q_small = quantize_4bit(torch.randn(6, 8), "nf4", 64, double_quant=True)
x64 = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
assert torch.autograd.gradcheck(lambda t: FourBitMatmul.apply(t, q_small), (x64,)), "gradcheck failed"

# %% [markdown]
# What does each version keep alive between forward and backward? A `saved_tensors_hooks` context
# sees every tensor autograd stores for later.

# %%
def saved_bytes(fn, *args):
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fn(*args)
    return sum(t.numel() * t.element_size() for t in saved)


W_param = nn.Parameter(W_hat.clone(), requires_grad=False)   # a frozen float weight, for comparison
ours = saved_bytes(lambda: FourBitMatmul.apply(x.clone().requires_grad_(True), q))
frozen = saved_bytes(lambda: F.linear(x.clone().requires_grad_(True), W_param))
dequant_in_graph = saved_bytes(lambda: F.linear(x.clone().requires_grad_(True), dequantize_4bit(q)))
print(f"saved for backward: ours {ours} B; frozen float Linear {frozen / 1e3:.1f} kB; "
      f"dequantize inside autograd {dequant_in_graph / 1e3:.1f} kB (the weight is {W_hat.numel() * 4 / 1e3:.1f} kB)")
assert ours == 0, "our function keeps nothing but the 4-bit weight it already had"

# %% [markdown]
# `lorakit.qlora.Linear4bit` is this layer packaged as a module: the packed codes and the
# double-quantized constants are its buffers, there is no float weight at all, and its
# `Linear4bitFunction` is the function above. It must equal ours.

# %%
q4 = Linear4bit.from_linear(layer, quant_type="nf4", double_quant=True)
x3 = x.clone().requires_grad_(True)
y3 = q4(x3)
y3.backward(g)
print(q4)
print(f"stored: {q4.nbytes} bytes for {q4.in_features * q4.out_features} weights "
      f"= {q4.bits_per_parameter():.4f} bits/param (float32: {layer.weight.numel() * 4} bytes)")

# %%
assert torch.equal(q4.dequantized_weight(torch.float32), W_hat), "same 4-bit weight as lorakit.quant"
assert torch.allclose(y3, y1, atol=1e-6) and torch.allclose(x3.grad, x1.grad, atol=1e-6), "package = by hand"
assert not any(p.requires_grad for p in q4.parameters()), "no weight gradient: nothing in it trains"
assert abs(q4.bits_per_parameter() - 4.127) < 0.002, "NF4 + double quantization stores 4.127 bits/param"

# %% [markdown]
# ## 3. QLoRA = a 4-bit base + LoRA
#
# `prepare_qlora` replaces every linear layer except the output head by a `Linear4bit`, freezes
# everything, and puts LoRA on the targets: $y = x\widehat W^\top + \text{scale}\cdot x A B$, with
# $A \in \mathbb{R}^{n_\text{in} \times r}$, $B \in \mathbb{R}^{r \times n_\text{out}}$ in the compute
# dtype. QLoRA targets all linear layers ("all-linear"). Since $B = 0$ at init, the model starts
# as exactly the quantized base.

# %%
R, ALPHA = 8, 16
qlora = prepare_qlora(copy.deepcopy(base), "all-linear", r=R, alpha=ALPHA, quant_type="nf4", double_quant=True)
reference = quantize_model_linears(base, "nf4", 64, double_quant=True)  # float layers, dequantized weights
tokens = val_docs[:129].long().view(1, -1)
with torch.no_grad():
    diff = (qlora(tokens[:, :base.cfg.context])[0] - reference(tokens[:, :base.cfg.context])[0]).abs().max().item()
report = storage_report(qlora)
print(f"{report['layers']} linear layers in 4 bits: {report['bits_per_parameter']:.4f} bits/param; "
      f"trainable {count_parameters(qlora, True):,} of {count_parameters(qlora):,}; max |Δlogit| vs dequantized base {diff:.1e}")

# %%
assert diff < 1e-4, "at init (B = 0) QLoRA computes exactly the quantized base"
assert abs(report["bits_per_parameter"] - 4.127) < 0.01
assert all(n.endswith((".A", ".B")) for n, p in qlora.named_parameters() if p.requires_grad), "only A and B train"

# %% [markdown]
# ## 4. Four ways to fine-tune, same data, same steps, same seed
#
# | method | frozen base | trains | optimizer states for |
# |---|---|---|---|
# | full fine-tuning | — | every weight | every weight |
# | LoRA (float base) | float32 on a CPU, 16-bit on a GPU | A, B | A, B |
# | QLoRA NF4 + DQ | 4.127 bits/param | A, B | A, B |
# | QLoRA FP4 + DQ | 4.127 bits/param | A, B | A, B |
#
# Memory is measured with `lorakit.memory.track_peak`: on a CPU torch has no peak counter, so it
# counts parameters, buffers, gradients and optimizer states at their largest (activations are
# not counted); on a GPU it is the allocator's true peak.

# %%
STEPS = 20 if FAST else 150
BATCH = 16
LR = {"full": 5e-4, "lora": 3e-3}


def make(method: str) -> nn.Module:
    model = copy.deepcopy(base)
    if method == "LoRA (float base)":
        inject_lora(model, "all-linear", r=R, alpha=ALPHA)
    elif method.startswith("QLoRA"):
        prepare_qlora(model, "all-linear", r=R, alpha=ALPHA, quant_type="fp4" if "FP4" in method else "nf4")
    return model


runs = {}
for method in ["full fine-tuning", "LoRA (float base)", "QLoRA NF4+DQ", "QLoRA FP4+DQ"]:
    set_seed(0)
    model = make(method)
    lr = LR["full"] if method == "full fine-tuning" else LR["lora"]
    with track_peak(model=model) as mem:
        hist = train(model, train_docs, steps=STEPS, batch_size=BATCH, lr=lr, seed=0, progress=False)
    runs[method] = dict(model=model, val=evaluate(model, val_docs, **EVAL),
                        trainable=count_parameters(model, True), peak_mb=mem["peak_bytes"] / 1e6,
                        ms_per_step=1000 * hist.seconds / STEPS)

print(f"{'method':<20} {'val bits/byte':>13} {'trainable':>10} {'peak MB':>8} {'ms/step':>8}")
for method, r in runs.items():
    print(f"{method:<20} {r['val']:>13.3f} {r['trainable']:>10,} {r['peak_mb']:>8.2f} {r['ms_per_step']:>8.1f}")
print(f"(base before fine-tuning: {base_val:.3f} bits/byte; memory method: {mem['method']})")

# %%
full, lora, nf4, fp4 = (runs[m] for m in runs)
assert all(r["val"] < base_val for r in runs.values()), "every method improves on the base on docs"
assert abs(nf4["val"] - lora["val"]) < 0.15, "QLoRA NF4 lands close to LoRA on a float base"
assert nf4["trainable"] == lora["trainable"] < full["trainable"] / 5, "QLoRA trains exactly LoRA's parameters"
assert nf4["peak_mb"] < lora["peak_mb"] < full["peak_mb"], "memory: QLoRA < LoRA < full fine-tuning"

# %%
fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
names = list(runs)
colors = ["tab:gray", "tab:blue", "tab:green", "tab:olive"]
for ax, key, label in zip(axes, ["val", "trainable", "peak_mb", "ms_per_step"],
                          ["val bits/byte (lower is better)", "trainable parameters", "peak memory (MB)",
                           "time per step (ms)"]):
    ax.bar(range(4), [runs[n][key] for n in names], color=colors)
    ax.set_xticks(range(4), ["full", "LoRA", "QLoRA\nNF4", "QLoRA\nFP4"])
    ax.set_ylabel(label)
axes[0].set_ylim(min(r["val"] for r in runs.values()) * 0.95, base_val * 1.02)
axes[0].axhline(base_val, color="k", ls=":", label="base")
axes[0].legend()
fig.suptitle("QLoRA matches LoRA's quality with the least memory; the 4-bit base costs time (CPU, small GPT)")
fig.tight_layout()
plt.show()

# %% [markdown]
# Why NF4 rather than FP4? Quantize the base both ways and look at the error on the weights and
# the loss of the quantized base before any fine-tuning (the QLoRA paper's Table 2 in miniature).

# %%
def weight_error(quant_type: str) -> float:
    errs = [(m.weight - dequantize_4bit(quantize_4bit(m.weight.detach(), quant_type, 64, True))).pow(2).mean()
            for n, m in base.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"]
    return torch.stack(errs).mean().item()


quality = {qt: dict(mse=weight_error(qt), val=evaluate(quantize_model_linears(base, qt, 64, True), val_docs, **EVAL))
           for qt in ("nf4", "fp4")}
for qt, v in quality.items():
    print(f"{qt}: weight MSE {v['mse']:.3e}, quantized base val {v['val']:.4f} bits/byte (float base {base_val:.4f})")
assert quality["nf4"]["mse"] < quality["fp4"]["mse"], "NF4 fits normally distributed weights better than FP4"
assert quality["nf4"]["val"] <= quality["fp4"]["val"] + 0.02, "the NF4 base loses no more than the FP4 base"

# %% [markdown]
# ## 5. The same accounting at LLaMA scale
#
# The small GPT makes the savings visible but tiny. `lorakit.memory.estimate_memory` adds the
# same bytes up for LLaMA shapes (assumptions in its docstring): 16-bit full fine-tuning of 65B
# needs more than 780 GB, QLoRA less than 48 GB — the paper's headline.

# %%
for size in ("7B", "65B"):
    est = {m: estimate_memory(size, m, r=64)["total"] for m in ("full", "lora", "qlora")}
    print(f"LLaMA-{size}: full {est['full']:.0f} GB, 16-bit LoRA {est['lora']:.1f} GB, QLoRA {est['qlora']:.1f} GB")
assert estimate_memory("65B", "full")["total"] > 780 and estimate_memory("65B", "qlora")["total"] < 48

# %% [markdown]
# ## 6. On a GPU: a model large enough that memory matters
#
# With CUDA, the same four-way comparison runs on a scaled-up course GPT (≈ 150 M parameters,
# random weights — this run measures **memory and speed**, not quality: quality was section 4),
# or on a Hugging Face causal LM named by the `MODEL_ID` environment variable if it loads from
# your local cache. Compute is bf16 where the GPU supports it; on a T4 (no fast bf16) it is
# float32, because the QLoRA authors found fp16 training unstable. The optimizer is bitsandbytes'
# paged AdamW when installed. Peak memory is the allocator's peak.

# %%
def gpu_model(device):
    """(model, vocab, context): MODEL_ID from the local cache if set and loadable, else a big GPT."""
    model_id = os.environ.get("MODEL_ID")
    if model_id:
        try:
            from transformers import AutoModelForCausalLM
            model = AutoModelForCausalLM.from_pretrained(model_id, local_files_only=True).to(device)
            return model, model.config.vocab_size, 256
        except Exception as e:  # noqa: BLE001 - fall back to the course GPT, and say why
            print(f"MODEL_ID={model_id!r} did not load ({type(e).__name__}); using the scaled-up course GPT")
    set_seed(0)
    cfg = GPTConfig(context=256, n_layer=12, n_head=16, d_model=1024)
    return GPT(cfg).to(device), cfg.vocab_size, cfg.context


def gpu_run(method: str, dtype, steps: int = 20, batch: int = 8) -> dict:
    device = torch.device("cuda")
    model, vocab, context = gpu_model(device)
    model.to(dtype)  # every method in the same compute dtype (bf16, or float32 on a T4)
    if method == "LoRA (float base)":
        inject_lora(model, "all-linear", r=64, alpha=16, dtype=dtype)
    elif method.startswith("QLoRA"):
        prepare_qlora(model, "all-linear", r=64, alpha=16, quant_type="fp4" if "FP4" in method else "nf4",
                      compute_dtype=dtype, gradient_checkpointing=False)
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        import bitsandbytes as bnb
        opt = bnb.optim.PagedAdamW32bit(params, lr=2e-4)
    except Exception:  # noqa: BLE001
        opt = torch.optim.AdamW(params, lr=2e-4)
    gen = torch.Generator().manual_seed(0)
    model.train()
    torch.cuda.synchronize()
    with track_peak(device=device) as mem:
        start = time.perf_counter()
        for _ in range(steps):
            x = torch.randint(0, min(vocab, 256), (batch, context), generator=gen).to(device)
            out = model(x, x) if isinstance(model, GPT) else model(input_ids=x, labels=x)
            loss = out[1] if isinstance(out, tuple) else out.loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    result = dict(trainable=sum(p.numel() for p in params), peak_gb=mem["peak_gb"],
                  ms_per_step=1000 * seconds / steps, loss=loss.item())
    del model, opt, params
    torch.cuda.empty_cache()
    return result


if HAS_GPU:
    bf16_ok = torch.cuda.is_bf16_supported()
    dtype = torch.bfloat16 if bf16_ok else torch.float32
    print(f"GPU: {torch.cuda.get_device_name(0)}, compute dtype {dtype}")
    gpu_runs = {m: gpu_run(m, dtype) for m in runs}
    for m, r in gpu_runs.items():
        print(f"{m:<20} trainable {r['trainable']:>12,}  peak {r['peak_gb']:7.2f} GB  {r['ms_per_step']:7.1f} ms/step")
    assert gpu_runs["QLoRA NF4+DQ"]["peak_gb"] < gpu_runs["LoRA (float base)"]["peak_gb"] < \
        gpu_runs["full fine-tuning"]["peak_gb"], "on a GPU, too: QLoRA < LoRA < full fine-tuning"
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(range(4), [r["peak_gb"] for r in gpu_runs.values()], color=colors)
    ax.set_xticks(range(4), ["full", "LoRA", "QLoRA\nNF4", "QLoRA\nFP4"])
    ax.set_ylabel("peak GPU memory (GB)")
    ax.set_title("On a GPU, QLoRA needs the least memory")
    plt.show()
else:
    print("No CUDA GPU: section 6 skipped. On a Colab T4 it trains a ~150 M-parameter GPT four ways "
          "(about 5 minutes) and plots peak GPU memory.")

# %% [markdown]
# ## 7. Merging: into the 4-bit base, or into the 16-bit base?
#
# After training, $W' = \widehat W + \text{scale}\cdot(AB)^\top$. Two ways to fold it in:
#
# - **into the 4-bit base**: dequantize, add, quantize again. The sum is rounded to the 4-bit grid
#   a second time: every weight gets a fresh rounding error of up to half a step between codes,
#   and any part of the update smaller than that rounds away (exercise 6.4 measures how much).
# - **into the 16-bit base**: add to the original weights. One addition, no rounding to 4 bits:
#   the merged model computes exactly "16-bit base + adapter".

# %%
trained = runs["QLoRA NF4+DQ"]["model"]
before = {n: layer.base.packed.clone() for n, layer in lora_layers(trained).items()}
merged4 = copy.deepcopy(trained)
merge_into_4bit(merged4)
codes = lambda p: torch.stack([p >> 4, p & 15], -1).reshape(-1)  # noqa: E731
changed = sum((codes(before[n]) != codes(merged4.get_submodule(n).packed)).sum().item() for n in before)
total = sum(2 * p.numel() for p in before.values())

merged16 = merge_into_16bit(trained, base)
unmerged16 = copy.deepcopy(base)                     # 16-bit base + the same adapter, not merged
inject_lora(unmerged16, "all-linear", r=R, alpha=ALPHA)
with torch.no_grad():
    for n, layer in lora_layers(trained).items():
        lora_layers(unmerged16)[n].A.copy_(layer.A)
        lora_layers(unmerged16)[n].B.copy_(layer.B)
    xb = tokens[:, :base.cfg.context]
    ref = trained(xb)[0]
    moved4 = (merged4(xb)[0] - ref).abs().max().item()
    exact16 = (merged16(xb)[0] - unmerged16(xb)[0]).abs().max().item()
vals = {"QLoRA as trained (4-bit base + adapter)": runs["QLoRA NF4+DQ"]["val"],
        "merged into the 4-bit base": evaluate(merged4, val_docs, **EVAL),
        "merged into the 16-bit base": evaluate(merged16, val_docs, **EVAL)}
print(f"4-bit codes changed by merging: {changed} of {total} ({100 * changed / total:.2f} %)")
print(f"max |Δlogit| merged-4bit vs as trained: {moved4:.3e}; merged-16bit vs 16-bit base + adapter: {exact16:.1e}")
for k, v in vals.items():
    print(f"  {k:<42} val {v:.4f} bits/byte")

# %%
assert exact16 < 1e-4, "merging into the 16-bit base is exact (up to float rounding)"
assert moved4 > 10 * exact16, "merging into the 4-bit base moves the outputs"
assert 0 < changed < total, "requantizing moves some codes and keeps others"

# %% [markdown]
# Here the adapter was trained hard on a tiny model, so the update is large next to the 4-bit
# step and many codes change; the outputs move although the loss barely does. In a large model
# the update is small next to the weights, most of it rounds away, and the rounding errors of
# hundreds of layers add up — which is why PEFT warns when you merge into a 4-bit base.
#
# **Which to ship?** Serve the model you trained: the 4-bit base **plus the unmerged adapter**
# (a few hundred kB here) is exactly it. If you want one merged set of weights, merge into the
# **16-bit** base: exact with respect to the adapter, and the base's own quantization error
# disappears instead of being applied twice. Merging into the 4-bit base rounds your update a
# second time — measure the damage (as above) before you ever ship that.

# %% [markdown]
# ## Summary
#
# - A 4-bit linear layer stores 4.127 bits/param (NF4 + double quantization) and no float weight.
# - Its backward returns only $\partial L/\partial x = \partial L/\partial y\,\widehat W$: checked
#   against autograd and `gradcheck`; it keeps nothing between forward and backward.
# - QLoRA = that base + LoRA on all linear layers: at init it is exactly the quantized base.
# - Same data, steps and seed: QLoRA NF4 reaches LoRA's quality with the least memory; NF4 fits the
#   weights better than FP4; the price is time (dequantizing in every forward and backward).
# - At LLaMA-65B scale the same accounting gives > 780 GB (full) against < 48 GB (QLoRA).
# - Merge into the 16-bit base (exact) or keep the adapter separate; merging into 4 bits moves outputs.
#
# ## Exercises

# %%
from lorakit.exercises.nb08 import check_ex_8_1, check_ex_8_2, check_ex_8_3, check_ex_8_4

# %% [markdown]
# **Exercise 8.1 — Storage of a 13B model.** How many GB (1 GB = 1e9 bytes) do LLaMA-13B's decoder
# linear layers take in NF4 with double quantization? Answer: a float. Hint:
# `lorakit.memory.parameter_counts("13B")["linear"]` and the bits per parameter of section 2.

# %%
answer = None  # your answer here
check_ex_8_1(answer)

# %% [markdown]
# **Exercise 8.2 — The backward pass.** Write `backward(grad_y, W)` returning $\partial L/\partial x$
# for $y = x W^\top$, with `W` out×in and `grad_y` of shape (..., out). Answer: a function. Hint:
# check the shapes — the result has x's shape (..., in).

# %%
answer = None  # your answer here, e.g. a def backward(grad_y, W): ...
check_ex_8_2(answer)

# %% [markdown]
# **Exercise 8.3 — QLoRA's trainable parameters at 7B.** How many parameters does LoRA with r = 64
# on all seven linear layers of every LLaMA-7B block train? Answer: an int. Hint: each adapted
# layer adds $r\,(n_\text{in} + n_\text{out})$; `lorakit.memory.linear_shapes("7B")` lists the shapes.

# %%
answer = None  # your answer here
check_ex_8_3(answer)

# %% [markdown]
# **Exercise 8.4 — Why merging into 4 bits loses the update.** Make
# `W = 0.02·randn(256, 256)` and `dW = 1e-4·randn(256, 256)` from `torch.Generator().manual_seed(64)`
# (W first), quantize `W` and `W + dW` (NF4, blocksize 64, double quantization) and return the
# fraction of 4-bit codes that differ. Answer: a float in [0, 1]. Hint: `lorakit.quant.unpack_nibbles`.

# %%
answer = None  # your answer here
check_ex_8_4(answer)
