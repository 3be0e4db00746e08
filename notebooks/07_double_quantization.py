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
# # 07 — Double quantization
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lorakit/lorakit/blob/v0.1.0/notebooks/07_double_quantization.ipynb)
#
# After this notebook you can quantize the quantization constants themselves, count the bits a
# 4-bit model really stores, and estimate what fine-tuning a 7B–70B model needs in memory.
#
# **You will**
# - see why float32 constants cost 0.5 bits per parameter, and cut that to 0.127 with
#   double quantization built by hand (the 8-bit dynamic map, blocks of 256);
# - compare with bitsandbytes' `compress_statistics=True` (its CPU backend) and measure where its
#   CPU kernel rounds differently (≈ 0.2 % of the 8-bit constants: equal, except those);
# - measure 4.5 → 4.127 bits/param from stored bytes, and use a memory calculator to check the
#   QLoRA paper's 65B claims (< 48 GB vs > 780 GB); learn what paged optimizers do.
#
# **Runtime** (measured: top to bottom in a fresh kernel, base model cached, by `bench/course_runtime.py`)
#
# | device | test mode (`LORAKIT_FAST=1`) | learner size |
# |---|---|---|
# | 2-core x86_64 CPU, otherwise idle (load ≤ 2), 2026-11-29 | 6 s | 7 s |

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

# %% [markdown]
# ## 1. Setup

# %% [markdown]
# **Notation** (as in notebook 06): a block's size is $\ell$ in formulas and `blocksize` in code,
# never $B$ (LoRA's matrix).

# %%
import matplotlib.pyplot as plt
import torch

from lorakit import quant
from lorakit.exercises.nb07 import check_ex_7_1, check_ex_7_2, check_ex_7_3, check_ex_7_4
from lorakit.quiet import quiet_import
from lorakit.train import fast_mode, set_seed

FAST = fast_mode()
set_seed(0)
SIDE = 1024 if FAST else 4096  # the weight matrix we quantize: SIDE × SIDE
bnb = quiet_import("bitsandbytes")  # the reference library, without its start-up noise
HAVE_BNB = bnb is not None
if HAVE_BNB:
    import bitsandbytes.functional as bnbF
W = torch.randn(SIDE, SIDE, generator=torch.Generator().manual_seed(0)) * 0.02  # weight-like scale
print(f"test mode: {FAST}, W is {SIDE}×{SIDE}, bitsandbytes available: {HAVE_BNB}")

# %% [markdown]
# ## 2. What the constants cost
#
# Blockwise NF4 stores, for every block of $\ell = 64$ weights, 64 codes of 4 bits and **one float32
# absmax**. Per parameter:
#
# $$\text{bits/param} = 4 + \frac{32}{\ell} = 4 + 0.5 = 4.5 .$$
#
# The half bit is an eighth of the whole budget: on a 65B-parameter model, $65 \cdot 10^9 \cdot 0.5 / 8$
# bytes $\approx 4$ GB of constants. We measure it from what `quantize_4bit` actually stores.

# %%
q_plain = quant.quantize_4bit(W, "nf4", 64)
codes_bytes, absmax_bytes = q_plain.packed.numel(), q_plain.absmax.numel() * 4
print(f"{W.numel():,} weights: {codes_bytes:,} bytes of codes + {absmax_bytes:,} bytes of absmax "
      f"= {quant.bits_per_parameter(q_plain):.3f} bits/param")
assert quant.bits_per_parameter(q_plain) == 4.5, "4 bits of code + 32/64 bits of absmax"
print(f"constants on a 65B model: {65e9 * 0.5 / 8 / 1e9:.2f} GB")

# %% [markdown]
# ## 3. The 8-bit dynamic map, by hand
#
# To store the constants in 8 bits, the QLoRA paper speaks of "8-bit Floats"; its implementation,
# bitsandbytes' `quantize_4bit(..., compress_statistics=True)`, uses the signed 8-bit **dynamic**
# data type (Dettmers 2015) — not IEEE FP8 (E4M3/E5M2). This course follows the implementation,
# since that is what every QLoRA checkpoint stores. For each decade $10^{i-6}$, $i = 0..6$, it takes the midpoints of a linear
# grid on $[0.1, 1]$ with $2^i$ cells, scaled by $10^{i-6}$, with both signs; plus 0 and 1:
#
# $$2\sum_{i=0}^{6} 2^i + 2 = 2 \cdot 127 + 2 = 256 \text{ values}.$$
#
# Few levels for tiny magnitudes, many (64 per sign) in $[0.1, 1]$: relative precision where it matters.

# %%
levels = []
for i in range(7):
    edges = torch.linspace(0.1, 1, 2**i + 1, dtype=torch.float32)
    means = (edges[:-1] + edges[1:]) / 2
    levels += (10 ** (i - 6) * means).tolist() + (-(10 ** (i - 6)) * means).tolist()
dyn = torch.tensor(sorted(levels + [0.0, 1.0]), dtype=torch.float32)
print(f"{dyn.numel()} values, smallest positive {dyn[dyn > 0].min():.2e}, widest gap {(dyn[1:] - dyn[:-1]).max():.4f}")
assert torch.equal(dyn, quant.dynamic_map()), "our map equals lorakit's"
if HAVE_BNB:
    assert torch.equal(dyn, bnbF.create_dynamic_map(signed=True)), "and bitsandbytes' create_dynamic_map"

fig, ax = plt.subplots(figsize=(6, 4))
pos = dyn[dyn > 0]
ax.plot(range(len(pos)), pos, ".")
ax.set_yscale("log")
ax.set_xlabel("index among the positive values")
ax.set_ylabel("value (log scale)")
ax.set_title("The dynamic map: one decade per exponent, finer grids for larger values")
plt.show()

# %% [markdown]
# ## 4. Double quantization by hand
#
# The absmax values $a \in \mathbb{R}^{n/64}$ are all positive and similar, so first subtract
# their mean $\bar a$ (the **offset**, one float32) to centre them on 0, making use of the signed
# map. Then quantize $a - \bar a$ blockwise with blocks of **256** and the dynamic map: one float32
# $\text{absmax}_2$ per 256 constants, one 8-bit code per constant, nearest code by midpoints:
#
# $$\hat a_j = \text{dyn}[c_j] \cdot \text{absmax}_{2,\lfloor j/256 \rfloor} + \bar a .$$
#
# The 4-bit codes of the weights were computed from the exact $a$, so they do not change.

# %%
a = q_plain.absmax
offset = a.mean()
centred = a - offset
blocks = centred.view(-1, 256)  # n/64 is a multiple of 256 here
absmax2 = blocks.abs().amax(dim=1)
scaled = (blocks * (1.0 / absmax2)[:, None]).reshape(-1)
codes8 = torch.bucketize(scaled, (dyn[:-1] + dyn[1:]) / 2).to(torch.uint8)
a_hat = dyn[codes8.long()] * absmax2.repeat_interleave(256) + offset

q_dq = quant.quantize_4bit(W, "nf4", 64, double_quant=True)
assert torch.equal(codes8, q_dq.absmax_codes) and torch.equal(absmax2, q_dq.absmax2), "our codes equal lorakit's"
assert torch.equal(offset, q_dq.offset) and torch.equal(a_hat, quant.dequantize_absmax(q_dq)), "and so does the recovered absmax"
assert torch.equal(q_dq.packed, q_plain.packed), "the 4-bit codes are unchanged"

bound = quant.max_half_gap(dyn) * absmax2.repeat_interleave(256)
err = (a_hat - a).abs()
print(f"constants: mean |a - â| = {err.mean():.2e}, worst {err.max():.2e} "
      f"(bound: half the widest gap × absmax2 = {bound.max():.2e}); relative to a: {(err / a).max():.2%} at worst")
assert torch.all(err <= bound * (1 + 1e-5)), "every constant is within half a code step"
w_err_plain = (quant.dequantize_4bit(q_plain) - W).abs().mean().item()
w_err_dq = (quant.dequantize_4bit(q_dq) - W).abs().mean().item()
print(f"weights: mean |w - ŵ| {w_err_plain:.3e} without, {w_err_dq:.3e} with double quantization")
assert w_err_dq < 1.01 * w_err_plain, "double quantization adds < 1 % to the weight error"

# %% [markdown]
# ## 5. Against bitsandbytes (`compress_statistics=True`)
#
# Packed 4-bit bytes, the offset and the second-level absmax must be equal. The 8-bit codes are
# a different story: bitsandbytes' **CPU** kernel does not search for the nearest code; it
# rounds through a 65,536-entry lookup table over $[-1, 1]$ (`csrc/cpu_ops.cpp`). A few
# constants therefore land on a neighbouring code. We count them, measure how far, and check the
# error bound still holds.

# %%
if HAVE_BNB:
    packed_b, state = bnbF.quantize_4bit(W, blocksize=64, quant_type="nf4", compress_statistics=True)
    assert torch.equal(q_dq.packed, packed_b.reshape(-1)), "packed 4-bit bytes equal"
    assert torch.equal(q_dq.offset, state.offset), "offset equal"
    assert torch.equal(q_dq.absmax2, state.state2.absmax), "second-level absmax equal"
    distance = q_dq.absmax_codes.int() - state.absmax.int()
    n_diff = int((distance != 0).sum())
    a_bnb = bnbF.dequantize_blockwise(state.absmax, state.state2) + state.offset
    err_bnb = (a_bnb - a).abs()
    print(f"8-bit codes: {n_diff} of {distance.numel():,} differ ({n_diff / distance.numel():.3%}), "
          f"by up to {distance.abs().max()} codes")
    print(f"worst error / bound: lorakit {(err / bound).max():.4f}, bitsandbytes {(err_bnb / bound).max():.4f}; "
          f"mean error: lorakit {err.mean():.3e}, bitsandbytes {err_bnb.mean():.3e}")
    assert n_diff / distance.numel() < 0.005, "fewer than 0.5 % of the 8-bit codes differ"
    assert (err_bnb / bound).max() < 1.01, "bitsandbytes' constants obey the same bound (within 1 %)"
    assert abs(err_bnb.mean() / err.mean() - 1) < 0.01, "and have the same mean error"
    with_their_codes = quant.Quantized4bit(**{**q_dq.__dict__, "absmax_codes": state.absmax})
    assert torch.equal(quant.dequantize_4bit(with_their_codes), bnbF.dequantize_4bit(packed_b, state)), \
        "given bitsandbytes' 8-bit codes, our dequantization equals theirs to the bit"

    fig, ax = plt.subplots(figsize=(6, 4))
    values, counts = distance[distance != 0].unique(return_counts=True)
    ax.bar([str(v) for v in values.tolist()], counts.tolist())
    ax.set_xlabel("lorakit code − bitsandbytes code (only where they differ)")
    ax.set_ylabel("number of constants")
    ax.set_title(f"{n_diff / distance.numel():.2%} of constants: bnb's CPU lookup table rounds differently")
    plt.show()
else:
    print("bitsandbytes is not installed: the comparison is skipped (pip install bitsandbytes).")

# %% [markdown]
# Codes that differ by several steps sit near zero, where the dynamic map's levels are packed
# tightly: several codes apart is still a tiny distance in value.
#
# ## 6. Bits per parameter, from the stored bytes
#
# Per 64 weights: one byte of code for the constant, plus $1/256$ of a float32:
#
# $$4 + \frac{8}{64} + \frac{32}{64 \cdot 256} = 4 + 0.125 + 0.00195 = 4.127 .$$

# %%
parts = {"packed codes": q_dq.packed, "8-bit absmax codes": q_dq.absmax_codes, "absmax2 (float32)": q_dq.absmax2,
         "offset (float32)": q_dq.offset}
for name, t in parts.items():
    print(f"{name:<20}{t.numel() * t.element_size():>12,} bytes")
bits_dq = quant.bits_per_parameter(q_dq)
print(f"bits/param: {quant.bits_per_parameter(q_plain):.3f} without, {bits_dq:.3f} with double quantization")
assert abs(bits_dq - 4.127) < 5e-4, "4.127 bits/param measured from the stored bytes"
formula = 4 + quant.constants_bits(64, double_quant=True) + 32 / W.numel()  # + the one float32 offset
assert abs(bits_dq - formula) < 1e-9, "the stored bytes match the formula exactly"
saved = 65e9 * (quant.constants_bits(64) - quant.constants_bits(64, True)) / 8 / 1e9
print(f"saved on a 65B model: {saved:.2f} GB")
assert 2.9 < saved < 3.1, "≈ 3 GB saved on 65B parameters, as the QLoRA paper says"

# %% [markdown]
# ## 7. A memory calculator
#
# What does fine-tuning need? `lorakit.memory.estimate_memory(model, method)` adds up, for
# LLaMA-shaped models:
#
# - **full**: 16-bit weights and gradients, AdamW's two 32-bit states: $2 + 2 + 8 = 12$ bytes/param.
#   That is the count behind the QLoRA paper's "> 780 GB" for 65B ($65 \cdot 10^9 \times 12$ bytes).
#   Standard mixed-precision AdamW also keeps a 32-bit **master copy** of the weights (the update
#   is applied in 32 bits, then cast to 16): $2 + 2 + 4 + 8 = 16$ bytes/param, 1.04 TB for 65B.
#   The estimate counts 12; the figure adds the master copy as a hatched segment;
# - **lora**: 16-bit frozen base, LoRA matrices $A, B$ (rank $r$, all linear layers) with
#   gradients and AdamW states;
# - **qlora**: like lora, but the base's linear layers at 4.127 bits/param;
#
# plus an activation estimate, with **gradient checkpointing**: the forward pass keeps
# only each layer's input, and the backward pass recomputes the layer's inside from it when it
# gets there. Activation memory then grows with layers × tokens × hidden size instead of with
# every intermediate tensor, for the price of about one extra forward pass (≈ 30 % more compute).
# The QLoRA paper: LLaMA-65B needs **> 780 GB** for 16-bit full fine-tuning and fits in
# **< 48 GB** with QLoRA.
#
# **Two dtypes decide the rest.** The paper's count keeps $A$, $B$, their gradients and the
# activations in 16 bits (`PAPER_DTYPES`). This course trains $A$, $B$ in float32 (a small update
# added to a 16-bit number rounds away) and, on a GPU without native bfloat16 such as a T4,
# computes in float32 (notebook 09 §5): `estimate_memory`'s defaults, `adapter_dtype` and
# `compute_dtype`, are those. The figure below reproduces the paper with its dtypes; the calculator
# lets you switch to the course's T4 path and move the dashed line to your GPU.

# %%
from lorakit.memory import MODEL_SHAPES, PAPER_DTYPES, estimate_memory, parameter_counts

PARTS = ("weights", "lora", "gradients", "optimizer", "activations")
GPU_GB = 48
DTYPES = {"QLoRA paper: 16-bit A, B and activations": PAPER_DTYPES,
          "course on a T4: float32 A, B and compute": dict(adapter_dtype=torch.float32, compute_dtype=torch.float32)}


def memory_title(model_name, r, batch_size, seq_len, estimates, gpu_gb=GPU_GB):
    """A title that states what these numbers show, for whatever the sliders say."""
    fits = [m for m in estimates if estimates[m]["total"] < gpu_gb]
    verdict = (f"{' and '.join(fits)} fit{'s' if len(fits) == 1 else ''} one {gpu_gb} GB GPU" if fits
               else f"nothing fits one {gpu_gb} GB GPU")
    return f"{model_name}, r = {r}, batch {batch_size}×{seq_len}: {verdict}"


def plot_memory(model_name: str = "65B", r: int = 64, batch_size: int = 1, seq_len: int = 512,
                gpu_gb: float = GPU_GB, dtypes: str = next(iter(DTYPES))):
    """Stacked GB per method for one model on a linear axis, totals written at the bar ends; the
    pure estimate does the work. Full fine-tuning's optional fp32 master copy is drawn hatched;
    the dashed line is a ``gpu_gb`` GPU; ``dtypes`` names an entry of ``DTYPES``."""
    estimates = {m: estimate_memory(model_name, m, r=r, batch_size=batch_size, seq_len=seq_len, **DTYPES[dtypes])
                 for m in ("full", "lora", "qlora")}
    master = 4 * parameter_counts(model_name)["total"] / 1e9     # mixed precision's 32-bit copy
    fig, ax = plt.subplots(figsize=(10, 4), layout="constrained")
    rows = list(estimates)
    left = [0.0] * len(rows)
    for part in PARTS:
        widths = [estimates[m][part] for m in rows]
        ax.barh(rows, widths, left=left, label=part)
        left = [a + w for a, w in zip(left, widths)]
    ax.barh(["full"], [master], left=[left[0]], fill=False, hatch="//", edgecolor="0.4",
            label="fp32 master copy (mixed-precision AdamW; not in the estimate)")
    for k, m in enumerate(rows):
        end = left[k] + (master if m == "full" else 0)
        extra = f" (+{master:.0f} = {end:.0f} with a master copy)" if m == "full" else ""
        ax.text(end, k, f"  {estimates[m]['total']:.1f} GB{extra}", va="center", fontsize=9)
    ax.axvline(gpu_gb, color="k", ls="--", lw=1)
    ax.set_xlim(0, 1.45 * max(left[0] + master, gpu_gb))
    ax.set_xlabel(f"GB (linear scale); dashed: one {gpu_gb:g} GB GPU; {dtypes}")
    ax.set_title(memory_title(model_name, r, batch_size, seq_len, estimates, gpu_gb))
    fig.legend(loc="outside lower center", ncol=3, fontsize=8)
    plt.show()
    return estimates


est = plot_memory("65B")
for method, e in est.items():
    print(f"65B {method:<6}: " + ", ".join(f"{k} {v:.1f}" for k, v in e.items()) + " GB")
n65 = parameter_counts("65B")["total"]
full_states = est["full"]["weights"] + est["full"]["gradients"] + est["full"]["optimizer"]
print(f"65B has {n65 / 1e9:.1f} B parameters: 12 bytes/param = {12 * n65 / 1e9:.0f} GB, "
      f"16 bytes/param (with an fp32 master copy) = {16 * n65 / 1e9:.0f} GB")
assert abs(full_states - 12 * n65 / 1e9) < 1e-6, "the full estimate counts 2 + 2 + 8 = 12 bytes/param"
assert est["qlora"]["total"] < 48, "65B QLoRA fits in < 48 GB"
assert est["full"]["total"] > 780, "65B 16-bit full fine-tuning needs > 780 GB"
assert 16 * n65 / 1e9 > 1000, "with a 32-bit master copy it is over 1 TB"
assert est["qlora"]["total"] < est["lora"]["total"] < est["full"]["total"]
assert memory_title("65B", 64, 1, 512, est).endswith("qlora fits one 48 GB GPU"), "the title states what was computed"
t4 = {m: estimate_memory("7B", m, r=64) for m in ("full", "lora", "qlora")}   # the course's dtypes, a 16 GB T4
assert memory_title("7B", 64, 1, 512, t4, 16).endswith("qlora fits one 16 GB GPU"), "the line moves with the GPU"
assert estimate_memory("7B", "lora", r=64, **PAPER_DTYPES)["total"] < 16 < t4["lora"]["total"], \
    "16-bit-base LoRA of 7B fits a T4 only with 16-bit adapters and activations"

# %%
# NBVAL_IGNORE_OUTPUT
import ipywidgets as widgets

widgets.interact(
    lambda model_name, r, batch_size, seq_len, gpu_gb, dtypes: plot_memory(model_name, r, batch_size, seq_len, gpu_gb,
                                                                            dtypes) and None,
    model_name=widgets.Dropdown(options=list(MODEL_SHAPES), value="65B", description="model"),
    r=widgets.IntSlider(value=64, min=8, max=256, step=8, continuous_update=False),
    batch_size=widgets.IntSlider(value=1, min=1, max=32, continuous_update=False),
    seq_len=widgets.IntSlider(value=512, min=128, max=4096, step=128, continuous_update=False),
    gpu_gb=widgets.Dropdown(options=[8, 12, 16, 24, 40, 48, 80], value=GPU_GB, description="GPU GB"),
    dtypes=widgets.Dropdown(options=list(DTYPES), description="dtypes"),
);

# %% [markdown]
# ## 8. Paged optimizers
#
# Activations spike: one long sequence in a batch can briefly need gigabytes more than the
# others, and a GPU that is 95 % full then runs out of memory. QLoRA's **paged optimizers**
# allocate AdamW's states in CUDA *unified memory*: pages that the driver moves to CPU RAM when the
# GPU runs short and back when the optimizer step needs them. Nothing moves while memory is
# sufficient, so they cost nothing in the normal case; they turn an out-of-memory crash into a
# slower step. They matter only on a GPU near its limit — on a CPU there is nothing to page.
# bitsandbytes offers `bnb.optim.PagedAdamW` (32-bit states) and `PagedAdamW8bit`.

# %%
if torch.cuda.is_available() and HAVE_BNB:
    import bitsandbytes as bnb

    layer = torch.nn.Linear(1024, 1024, device="cuda")
    opt = bnb.optim.PagedAdamW(layer.parameters(), lr=1e-3)
    for _ in range(3):
        loss = layer(torch.randn(8, 1024, device="cuda")).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    state = opt.state[layer.weight]
    print(f"paged AdamW ran 3 steps; state tensors: {sorted(k for k in state if torch.is_tensor(state[k]))}, "
          f"peak GPU memory {torch.cuda.max_memory_allocated() / 1e6:.1f} MB")
    assert torch.isfinite(layer.weight).all(), "the paged optimizer updates the weights normally"
else:
    why = "no CUDA GPU" if not torch.cuda.is_available() else "bitsandbytes is not installed"
    print(f"Paged-optimizer demo skipped: {why}. Paging moves optimizer state between GPU and CPU "
          "memory, so it needs a CUDA device (run this notebook on a GPU, e.g. Colab, to see it).")

# %% [markdown]
# ## Summary
#
# - Float32 absmax per 64 weights costs 0.5 bits/param: 4.5 bits in total (measured).
# - Double quantization: subtract the mean, blocks of 256, the 8-bit dynamic map (built by hand,
#   equal to bitsandbytes'), nearest code; each constant within half a code step × absmax2.
# - Against bitsandbytes (CPU backend): 4-bit bytes, offset and absmax2 equal; ≈ 0.2 % of 8-bit
#   codes differ because its CPU kernel rounds through a lookup table, with the same error bound —
#   equal except those, not bit for bit.
# - 4.127 bits/param measured from the stored bytes: ≈ 3 GB saved on 65B.
# - Memory: 65B QLoRA < 48 GB, 16-bit full fine-tuning > 780 GB at 12 bytes/param (over 1 TB at
#   the 16 bytes/param of mixed precision with a master copy); paged optimizers absorb spikes on a GPU.
#
# ## Exercises
#
# Each checker says whether your answer is right and, if not, what the usual mistake is; it
# states its tolerance, and numbers may be any numeric type. Worked solutions, with the
# reasoning: `notebooks/solutions/nb07.py` (try first).
#
# **Exercise 7.1 — bits at another block size.** NF4 with blocks of 128, double-quantized with
# blocks of 256: how many bits per parameter are stored? Answer: a number, accepted within 1e-4.
# Hint: 4 + one byte per block + one float32 per 256 blocks.

# %%
answer = None  # your answer here
check_ex_7_1(answer)

# %% [markdown]
# **Exercise 7.2 — what double quantization saves on 7B.** For a 7-billion-parameter model
# quantized with NF4 and blocks of 64, how many GB (1 GB = 1e9 bytes) does double quantization
# save? Answer: a number, accepted within 0.5 %. Hint: the difference in bits per parameter,
# times parameters, over 8.

# %%
answer = None  # your answer here
check_ex_7_2(answer)

# %% [markdown]
# **Exercise 7.3 — recover one constant.** A double-quantized constant has 8-bit code 200, its
# block's `absmax2` is 0.05 and the `offset` is 0.1. What absmax does it stand for? Answer: a
# number, accepted within 1e-6. Hint: look the code up in `quant.dynamic_map()`, scale, and don't
# forget the offset.

# %%
answer = None  # your answer here
check_ex_7_3(answer)

# %% [markdown]
# **Exercise 7.4 — what fits on a 16 GB T4? (an experiment with the calculator).** Colab's free
# GPU has 16 GB. Loop over every model in `MODEL_SHAPES` and every method (`"full"`, `"lora"`,
# `"qlora"`) with `estimate_memory(model, method, r=64, batch_size=1, seq_len=512)` — the
# course's dtypes on a T4: float32 $A$, $B$ and compute — and collect the `(model, method)` pairs
# whose total is under 16 GB. Predict first: does LoRA on a 16-bit 7B base fit this way, and with
# the paper's 16-bit adapters and activations (`**PAPER_DTYPES`)? Answer: a collection of
# `(model, method)` pairs for the course's dtypes (a set or a list of tuples; exact).

# %%
answer = None  # your answer here, e.g. {("7B", "qlora"), ...}
check_ex_7_4(answer)

# %% [markdown]
# ## References
#
# - T. Dettmers, A. Pagnoni, A. Holtzman, L. Zettlemoyer, *QLoRA: Efficient Finetuning of
#   Quantized LLMs*, 2023, arXiv:2305.14314 — double quantization (§3), paged optimizers, the
#   65B memory claims (> 780 GB, < 48 GB).
# - T. Dettmers, *8-Bit Approximations for Parallelism in Deep Learning*, 2015, arXiv:1511.04561 —
#   the dynamic 8-bit data type; T. Dettmers et al., *8-bit Optimizers via Block-wise
#   Quantization*, 2021, arXiv:2110.02861 — its blockwise, signed form.
# - P. Micikevicius et al., *Mixed Precision Training*, 2017, arXiv:1710.03740 — the fp32 master
#   copy; S. Rajbhandari et al., *ZeRO*, 2019, arXiv:1910.02054 — 16 bytes/param for mixed-precision Adam.
# - T. Chen, B. Xu, C. Zhang, C. Guestrin, *Training Deep Nets with Sublinear Memory Cost*, 2016,
#   arXiv:1604.06174 — gradient checkpointing.
# - bitsandbytes: `bitsandbytes.functional.quantize_4bit(..., compress_statistics=True)` (double
#   quantization; `QuantState.offset`, `QuantState.state2`), `create_dynamic_map(signed=True)`,
#   `quantize_blockwise` / `dequantize_blockwise` (the 8-bit step), `bitsandbytes.optim.PagedAdamW`
#   and `PagedAdamW8bit`. transformers/PEFT: `BitsAndBytesConfig(bnb_4bit_use_double_quant=True)`,
#   `TrainingArguments(optim="paged_adamw_32bit", gradient_checkpointing=True)`.
