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
# # 06 — NF4 by hand
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lorakit/lorakit/blob/main/notebooks/06_nf4_by_hand.ipynb)
#
# After this notebook you can quantize a weight matrix to 4-bit NormalFloat yourself, byte for
# byte as bitsandbytes does, and say how much error it costs.
#
# **You will**
# - build absmax quantization from zero (INT8, then 4 bits) and see why outliers and blocks matter;
# - derive the NF4 table from normal quantiles and compare it with INT4 and FP4;
# - quantize, pack, unpack and dequantize step by step, bit-exact with bitsandbytes, and measure
#   the error on random data, on the course model's trained weights and on its loss.
#
# **Runtime** (measured so far)
#
# | device | test mode (`LORAKIT_FAST=1`) | learner size |
# |---|---|---|
# | 2-core x86_64 CPU, base model cached (2026-11-29) | 10 s | 12 s |

# %%
# Colab only: install lorakit and its reference libraries (does nothing anywhere else).
import sys

if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lorakit[reference] @ git+https://github.com/lorakit/lorakit"], check=True)

# %% [markdown]
# ## 1. Setup
#
# Everything is seeded; `FAST` (test mode) only shrinks sizes, never changes the code path.

# %%
import math
import warnings

import matplotlib.pyplot as plt
import torch

from lorakit import quant as Q
from lorakit.data import load_splits
from lorakit.train import base_model, evaluate, fast_mode, set_seed

FAST = fast_mode()
set_seed(0)
N_DEMO = 4096  # values in the small demos
EVAL_BATCHES = 6 if FAST else 20
try:  # the reference library; everything else runs without it
    warnings.filterwarnings("ignore")
    import bitsandbytes.functional as bnbF

    HAVE_BNB = True
except ImportError:
    HAVE_BNB = False
print(f"test mode: {FAST}, bitsandbytes available: {HAVE_BNB}")

# %% [markdown]
# ## 2. Quantization from zero: absmax INT8, then 4 bits
#
# To store a vector $x \in \mathbb{R}^{n}$ in $b$ bits, scale it so its largest magnitude
# lands on the largest integer $L = 2^{b-1}-1$ and round:
#
# $$q = \operatorname{round}\Big(x \cdot \frac{L}{\max_i |x_i|}\Big) \in \{-L,\dots,L\}^{n},
# \qquad \hat x = q \cdot \frac{\max_i |x_i|}{L}.$$
#
# The constant $\text{absmax} = \max_i |x_i|$ is stored beside the codes. Each value is off by at
# most half a step, $\text{absmax} / (2L)$: 1/254 of absmax for INT8, 1/14 for INT4.

# %%
def int_quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Absmax integer quantization and back, over the whole tensor (one absmax)."""
    levels = 2 ** (bits - 1) - 1
    absmax = x.abs().max()
    return torch.round(x * (levels / absmax)) * (absmax / levels)


x = torch.randn(N_DEMO)
for bits in (8, 4):
    x_hat = int_quantize(x, bits)
    step = x.abs().max() / (2 ** (bits - 1) - 1)
    print(f"INT{bits}: mean |x - x̂| = {(x - x_hat).abs().mean():.4f}, worst {(x - x_hat).abs().max():.4f}, half step {step / 2:.4f}")
    assert (x - x_hat).abs().max() <= step / 2 * (1 + 1e-5), "error is at most half a step"
    assert torch.equal(x_hat, Q.absmax_int_roundtrip(x, bits)), "our INT quantizer equals lorakit's"

# %% [markdown]
# **Why outliers hurt.** One large value sets absmax for everyone: the step grows, and all the
# ordinary values crowd into a few codes. Real LLM weights and activations do have such outliers.
# The fix: one absmax per **block** of, say, 64 consecutive values. An outlier then spoils only
# its own block.

# %%
x_out = x.clone()
x_out[100] = 40.0  # one outlier, 10x the largest normal value
err_clean = (Q.absmax_int_roundtrip(x, 4) - x).abs().mean().item()
err_outlier = (Q.absmax_int_roundtrip(x_out, 4) - x_out).abs().mean().item()
err_blocks = (Q.absmax_int_roundtrip(x_out, 4, blocksize=64) - x_out).abs().mean().item()
print(f"INT4 mean error: clean {err_clean:.4f}, with one outlier {err_outlier:.4f}, "
      f"with outlier but blocks of 64 {err_blocks:.4f}")
assert err_outlier > 3 * err_clean, "a single outlier multiplies the error of every value"
assert err_blocks < err_clean, "blocks of 64 contain the outlier (and track local scale too)"

fig, ax = plt.subplots(figsize=(6, 4))
ax.bar(["clean", "1 outlier", "1 outlier,\nblocks of 64"], [err_clean, err_outlier, err_blocks], color=["C0", "C3", "C2"])
ax.set_ylabel("mean |x − x̂|  (x ~ N(0, 1))")
ax.set_title("One outlier ruins a tensor; blocks contain it")
plt.show()

# %% [markdown]
# ## 3. Three 4-bit data types: INT4, FP4, NF4
#
# Four bits give 16 codes. A 4-bit **data type** is nothing more than the table of 16 numbers in
# $[-1, 1]$ those codes stand for; blockwise quantization picks, for each scaled value, the
# nearest table entry.
#
# - **INT4**: evenly spaced, $k/7$ for $k=-7..7$ (15 levels; the 16th code is unused).
# - **FP4** (bitsandbytes' E2M1): a sign bit, 2 exponent bits, 1 mantissa bit: dense near 0,
#   sparse near ±1. Its table is indexed by the *bit pattern*, so it is not sorted.
# - **NF4**: 16 quantiles of the normal distribution (next section).

# %%
for name, table in Q.TABLES.items():
    print(f"{name}: " + " ".join(f"{v:+.3f}" for v in table.tolist()))
assert torch.equal(Q.FP4[:8], -Q.FP4[8:]), "FP4: bit 3 is the sign"
if HAVE_BNB:
    assert torch.equal(Q.FP4, bnbF.get_4bit_type("fp4", device="cpu")), "FP4 table equals bitsandbytes'"

fig, ax = plt.subplots(figsize=(10, 3))
for row, name in enumerate(["int4", "fp4", "nf4"]):
    levels = Q.TABLES[name].unique()
    levels = levels[levels.abs() <= 1]
    ax.scatter(levels, [row] * len(levels), s=30)
ax.set_yticks([0, 1, 2], ["INT4", "FP4", "NF4"])
ax.set_xlabel("value of a code (in units of the block's absmax)")
ax.set_title("Same 16 codes, different places: NF4 packs them where normal weights are")
plt.show()

# %% [markdown]
# ## 4. NF4 from normal quantiles
#
# Weights of trained networks are roughly normal, $w \sim \mathcal N(0, \sigma^2)$. If every code
# covered the same probability mass, every code would be used equally often: no code wasted,
# as information theory asks. The codes are then **quantiles** $\Phi^{-1}(p)$ of the normal
# distribution, for evenly spaced probabilities $p$.
#
# QLoRA's recipe adds an exact zero (zero-padding and ReLU outputs must stay exact), which
# makes the type asymmetric: 8 positive levels $\Phi^{-1}(p_i)$ with
# $p = \text{linspace}(\delta, \tfrac12, 9)[:-1]$, 7 negative levels with
# $p = \text{linspace}(\delta, \tfrac12, 8)[:-1]$, and 0; all divided by the largest so they
# span $[-1, 1]$. The end probability $\delta = 0.9677083 \approx 1 - \tfrac12(\tfrac1{30} + \tfrac1{32})$
# keeps $\Phi^{-1}$ finite.

# %%
delta = 0.9677083
positive = torch.special.ndtri(torch.linspace(delta, 0.5, 9)[:-1].double())  # Φ⁻¹, 8 levels
negative = -torch.special.ndtri(torch.linspace(delta, 0.5, 8)[:-1].double())  # 7 levels
nf4_derived = torch.cat([positive, torch.zeros(1, dtype=torch.float64), negative]).float().sort().values
nf4_derived = nf4_derived / nf4_derived.max()

gap = (nf4_derived - Q.NF4).abs().max().item()
print(f"largest difference from bitsandbytes' table: {gap:.2e}")
assert gap <= 1e-6, "the NF4 we derived matches the published table within 1e-6"
assert torch.equal(nf4_derived, Q.nf4_from_quantiles()), "our derivation equals lorakit's"
if HAVE_BNB:
    assert torch.equal(Q.NF4, bnbF.get_4bit_type("nf4", device="cpu")), "lorakit's NF4 is bitsandbytes' table"

# the same recipe with a float64 linspace misses the table by ~1e-7 on a few codes:
p64 = torch.linspace(delta, 0.5, 9, dtype=torch.float64)[:-1]
n64 = torch.linspace(delta, 0.5, 8, dtype=torch.float64)[:-1]
alt = torch.cat([torch.special.ndtri(p64), torch.zeros(1, dtype=torch.float64), -torch.special.ndtri(n64)]).float().sort().values
alt = alt / alt.max()
print(f"with a float64 linspace: off by up to {(alt - Q.NF4).abs().max():.1e} on codes {((alt - Q.NF4) != 0).nonzero().view(-1).tolist()}")

# %% [markdown]
# Here it matched exactly; it holds because torch's float32 `linspace` (which fills half the
# values from each end) is what bitsandbytes used. From now on we use the exact table `Q.NF4`.
#
# **Check the promise: equal use of every code.** Quantize normal data and count how often each
# code is chosen (`Q.code_usage`). INT4 crowds the middle codes; NF4 spreads them out.

# %%
w = torch.randn(64 * 1024)
usage = {name: Q.code_usage(Q.quantize_4bit(w, name)).float() for name in ("int4", "nf4")}
for name, counts in usage.items():
    used = counts[counts > 0] / counts.sum()
    entropy = -(used * used.log2()).sum().item()
    print(f"{name}: entropy of code usage {entropy:.3f} bits of 4, busiest code {used.max():.1%} of values")
entropy = {n: -(c[c > 0] / c.sum() * (c[c > 0] / c.sum()).log2()).sum().item() for n, c in usage.items()}
assert entropy["nf4"] > entropy["int4"] + 0.2, "NF4 uses its 16 codes more evenly than INT4"

fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
for ax, (name, counts) in zip(axes, usage.items()):
    ax.bar(range(16), counts / counts.sum())
    ax.set_xlabel("4-bit code")
    ax.set_title(f"{name.upper()}: entropy {entropy[name]:.2f} bits")
axes[0].set_ylabel("fraction of values (w ~ N(0,1), blocks of 64)")
fig.suptitle("NF4 spreads normal weights over its codes; INT4 crowds the middle")
plt.show()

# %% [markdown]
# The NF4 usage is not perfectly flat: each block's absmax sits at the tail of *that block's* 64
# values, not at $\Phi^{-1}(\delta)$, so the real scale differs a little from the ideal.
#
# ## 5. Blockwise quantize, pack, unpack, dequantize — step by step
#
# bitsandbytes' recipe, for $x$ of any shape with $n$ values and block size $B$:
#
# 1. flatten row-major and cut into $\lceil n/B \rceil$ blocks (the last may be partial);
# 2. $\text{absmax}_j = \max_{i \in j} |x_i|$ (float32), scaled $s_i = x_i \cdot (1/\text{absmax}_j)$;
# 3. code $c_i$ = index of the nearest table value; a value exactly on a midpoint between two
#    neighbours takes the **lower** code;
# 4. pack two codes per byte, the first in the **high** nibble: `byte = c[0::2] << 4 | c[1::2]`
#    (an odd count is padded with the value 0.0);
# 5. dequantize: $\hat x_i = \text{table}[c_i] \cdot \text{absmax}_j$.
#
# Watch it on 9 values with blocks of 4 (the third block is partial, and the odd count is padded):

# %%
x_small = torch.tensor([0.3, -1.2, 0.05, 0.8, 2.0, -0.1, 0.0, 1.0, -0.7])  # 9 values: 2 blocks + 1 partial
B = 4
padded = torch.cat([x_small, torch.zeros(-len(x_small) % B)]).view(-1, B)  # padding only for display
absmax_small = padded.abs().amax(dim=1)
scaled_small = (padded / absmax_small[:, None]).view(-1)[: len(x_small)]
codes_small = Q.nearest_codes(scaled_small, Q.NF4)
packed_small = Q.pack_nibbles(torch.cat([codes_small, torch.tensor([7], dtype=torch.uint8)]))  # pad with code of 0.0
print("absmax per block :", [round(v, 3) for v in absmax_small.tolist()])
print("scaled values    :", [round(v, 3) for v in scaled_small.tolist()])
print("4-bit codes      :", codes_small.tolist())
print("packed bytes     :", [f"0x{b:02X}" for b in packed_small.tolist()])
print("unpacked codes   :", Q.unpack_nibbles(packed_small, len(x_small)).tolist())
print("dequantized      :", [round(v, 3) for v in (Q.NF4[codes_small.long()] * absmax_small.repeat_interleave(B)[: len(x_small)]).tolist()])
assert torch.equal(Q.unpack_nibbles(packed_small, len(x_small)), codes_small), "unpack undoes pack"

# %% [markdown]
# Now the same recipe as two short functions, for any shape, and the check that they equal the
# package's `lorakit.quant.quantize_4bit` / `dequantize_4bit`.

# %%
def my_quantize(x: torch.Tensor, table: torch.Tensor, blocksize: int = 64):
    """(packed uint8, absmax float32) in bitsandbytes' layout."""
    flat = x.reshape(-1).float()
    n = flat.numel()
    full = n - n % blocksize
    absmax = flat[:full].view(-1, blocksize).abs().amax(dim=1)
    scaled = flat[:full].view(-1, blocksize) * (1.0 / absmax.clamp(min=1e-38))[:, None]
    scaled = scaled.reshape(-1)
    if full < n:  # trailing partial block: its own absmax (bitsandbytes divides here)
        tail_absmax = flat[full:].abs().max().clamp(min=1e-38)
        absmax = torch.cat([absmax, tail_absmax[None]])
        scaled = torch.cat([scaled, flat[full:] / tail_absmax])
    if n % 2:
        scaled = torch.cat([scaled, torch.zeros(1)])  # pad with the value 0.0
    codes = Q.nearest_codes(scaled.clamp(-1, 1), table)
    return Q.pack_nibbles(codes), absmax


def my_dequantize(packed, absmax, table, shape, blocksize=64, dtype=torch.float32):
    n = math.prod(shape)
    codes = Q.unpack_nibbles(packed, n).long()
    scale = absmax.repeat_interleave(blocksize)[:n]
    return (table[codes] * scale).to(dtype).view(shape)


x_check = torch.randn(300, 70)  # 21000 values: 328 full blocks + a partial one
packed, absmax = my_quantize(x_check, Q.NF4)
q = Q.quantize_4bit(x_check, "nf4", 64)
assert torch.equal(packed, q.packed) and torch.equal(absmax, q.absmax), "our bytes equal lorakit's"
assert torch.equal(my_dequantize(packed, absmax, Q.NF4, x_check.shape), Q.dequantize_4bit(q)), "and so do the values"
print(f"{x_check.numel()} values -> {q.packed.numel()} bytes of codes + {q.absmax.numel()} float32 absmax")

# %% [markdown]
# `lorakit` finds the nearest code with a faster lookup than `bucketize` (two table reads indexed
# by the top 16 bits of each float32; see `Q._fast_codes`), checked equal on every possible
# input bucket in the tests.
#
# ## 6. Bit-exact with bitsandbytes
#
# bitsandbytes (≥ 0.47) runs NF4 on the CPU. We compare packed bytes, absmax and dequantized
# values with `torch.equal`, for three input dtypes and shapes that are multiples of 64, are not,
# and have odd element counts. (bitsandbytes returns its packed tensor as a column of shape
# `(bytes, 1)`, so we compare the flattened bytes.)

# %%
SHAPES = [(64, 64), (130, 66), (3, 7), (1001,)]
if HAVE_BNB:
    rows = []
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for shape in SHAPES:
            x_b = torch.randn(shape).to(dtype)
            packed_b, state = bnbF.quantize_4bit(x_b, blocksize=64, quant_type="nf4", compress_statistics=False)
            q = Q.quantize_4bit(x_b, "nf4", 64)
            same = (torch.equal(q.packed, packed_b.reshape(-1)), torch.equal(q.absmax, state.absmax),
                    torch.equal(Q.dequantize_4bit(q).reshape(-1), bnbF.dequantize_4bit(packed_b, state).reshape(-1)))
            rows.append((str(dtype).replace("torch.", ""), shape, *same))
            assert all(same), f"lorakit differs from bitsandbytes for {dtype} {shape}: {same}"
    print(f"{'dtype':<10}{'shape':<12}{'packed':>8}{'absmax':>8}{'values':>8}")
    for dtype, shape, *same in rows:
        print(f"{dtype:<10}{str(shape):<12}" + "".join(f"{'equal' if s else 'DIFF':>8}" for s in same))
else:
    print("bitsandbytes is not installed: the bit-exact comparison is skipped (pip install bitsandbytes).")

# %% [markdown]
# **A second dialect: torchao.** `torchao`'s `to_nf4` (used by torchtune) stores NF4 too, but
# it is not the same arithmetic: its table is **rounded to 4 decimals** and held in the input
# dtype, it **divides** by absmax in the input dtype (bfloat16 here) instead of multiplying by a
# float32 reciprocal, picks the nearest code by `argmin` of distances, and always quantizes its
# absmax constants with **linear int8** (one scale per 256 blocks) instead of the dynamic map.
# So codes and values agree closely, not exactly.

# %%
try:
    from torchao.quantization.quantize_.workflows.nf4.nf4_tensor import to_nf4

    HAVE_TORCHAO = True
except ImportError:
    HAVE_TORCHAO = False

if HAVE_TORCHAO:
    x_ao = torch.randn(256, 256, dtype=torch.bfloat16)
    ao = to_nf4(x_ao, 64, 256)
    ours_q = Q.quantize_4bit(x_ao, "nf4", 64, double_quant=True)
    same_codes = (Q.unpack_nibbles(ao.quantized_data) == Q.unpack_nibbles(ours_q.packed)).float().mean().item()
    x_ao_hat = ao.get_original_weight().float()
    ours_hat = Q.dequantize_4bit(ours_q).float()
    err_ao = (x_ao_hat - x_ao.float()).abs().mean().item()
    err_ours = (ours_hat - x_ao.float()).abs().mean().item()
    print(f"codes equal: {same_codes:.2%}; mean |x - x̂|: torchao {err_ao:.4f}, lorakit {err_ours:.4f}; "
          f"mean |torchao - lorakit| = {(x_ao_hat - ours_hat).abs().mean():.4f}")
    assert same_codes > 0.95, "the two dialects choose the same code for almost every value"
    assert abs(err_ao - err_ours) < 0.05 * err_ours, "and their errors agree within 5 %"
else:
    print("torchao is not installed: the second-dialect comparison is skipped.")

# %% [markdown]
# ## 7. How much error? Random data, trained weights, and the loss
#
# bitsandbytes' tests publish the error for `randn(1024, 1024)` with blocks of 64: NF4 mean
# $|x-\hat x| = 0.0728$ (mean relative 0.203), FP4 0.0965. We measure ours.

# %%
x_ref = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(0))
metrics = {name: Q.error_metrics(x_ref, Q.dequantize_4bit(Q.quantize_4bit(x_ref, name))) for name in ("int4", "fp4", "nf4")}
for name, m in metrics.items():
    print(f"{name.upper()}: mean |x - x̂| = {m['mae']:.4f}, mean relative {m['mean_rel']:.3f}, RMS {m['rmse']:.4f}")
assert abs(metrics["nf4"]["mae"] - 0.0728) < 0.001, "NF4 matches bitsandbytes' published 0.0728"
assert abs(metrics["fp4"]["mae"] - 0.0965) < 0.001, "FP4 matches bitsandbytes' published 0.0965"
assert metrics["nf4"]["mae"] < metrics["int4"]["mae"] < metrics["fp4"]["mae"], "on normal data: NF4 < INT4 < FP4"

# %% [markdown]
# **On trained weights.** The course's base model (cached; trained on the standard library's
# source code) has real trained matrices. Relative error = mean $|w-\hat w|$ / mean $|w|$, per
# linear layer.

# %%
model, info = base_model(progress=False)
linears = {n: m.weight.detach() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
rel_err = {name: [] for name in ("int4", "fp4", "nf4")}
for layer, weight in linears.items():
    for name in rel_err:
        w_hat = Q.dequantize_4bit(Q.quantize_4bit(weight, name))
        rel_err[name].append(((w_hat - weight).abs().mean() / weight.abs().mean()).item())
mean_rel = {name: sum(v) / len(v) for name, v in rel_err.items()}
print(f"{len(linears)} linear layers; mean relative error: " + ", ".join(f"{n.upper()} {v:.3f}" for n, v in mean_rel.items()))
assert mean_rel["nf4"] < mean_rel["int4"] and mean_rel["nf4"] < mean_rel["fp4"], "NF4 has the smallest error on trained weights"

fig, ax = plt.subplots(figsize=(10, 4))
pos = torch.arange(len(linears)).float()
for k, name in enumerate(rel_err):
    ax.bar(pos + (k - 1) * 0.27, rel_err[name], width=0.27, label=name.upper())
ax.set_xticks(pos.tolist(), [n.replace("blocks.", "b").replace(".weight", "") for n in linears], rotation=60, fontsize=7)
ax.set_ylabel("mean |w − ŵ| / mean |w|")
ax.set_title("NF4 gives the smallest error on every trained layer")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# **On the loss.** Replace every linear weight (except `lm_head`, which QLoRA keeps in 16 bits)
# by its quantize → dequantize round trip (`Q.quantize_model_linears`) and evaluate the
# validation loss on held-out code. The QLoRA paper (Table 2) found INT4 worst and NF4 best on
# large models; a tiny model trained briefly is less sensitive, so we assert only what holds
# robustly: every 4-bit copy stays close to the original, and NF4 is no worse than FP4 beyond noise.

# %%
_, val = load_splits("code", info["settings"]["max_bytes"])
loss = {}
for name in ("none", "int4", "fp4", "nf4"):
    loss[name] = evaluate(Q.quantize_model_linears(model, name, 64), val, 16, EVAL_BATCHES, seed=0)
    print(f"{name.upper():>5}: val loss {loss[name]:.4f} bits/byte ({loss[name] - loss['none']:+.4f})")
for name in ("int4", "fp4", "nf4"):
    assert abs(loss[name] - loss["none"]) < 0.1, f"{name}: 4-bit weights change the loss by < 0.1 bits/byte"
assert loss["nf4"] - loss["none"] <= loss["fp4"] - loss["none"] + 0.01, "NF4 hurts the loss no more than FP4"

# %% [markdown]
# ## 8. Block size: error against overhead
#
# Smaller blocks track local scale better but store more float32 constants: $32/B$ extra bits
# per parameter. `Q.blocksize_tradeoff(x, B)` returns both, measured from the stored bytes.

# %%
BLOCKSIZES = [16, 32, 64, 128, 256, 512, 1024, 4096]
x_bs = torch.randn(256, 256, generator=torch.Generator().manual_seed(1))


def plot_tradeoff(x, quant_type="nf4", highlight=64):
    """Error and overhead over block sizes; the pure function does the work."""
    results = [Q.blocksize_tradeoff(x, b, quant_type) for b in BLOCKSIZES]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(BLOCKSIZES, [r[0] for r in results], "o-")
    ax2.plot(BLOCKSIZES, [r[1] for r in results], "o-", color="C1")
    mae, overhead = Q.blocksize_tradeoff(x, highlight, quant_type)
    ax1.plot([highlight], [mae], "r*", ms=14)
    ax2.plot([highlight], [overhead], "r*", ms=14)
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("block size B (values)")
    ax1.set_ylabel("mean |x − x̂|  (x ~ N(0, 1))")
    ax2.set_ylabel("constants: extra bits / parameter")
    fig.suptitle(f"{quant_type.upper()}, B = {highlight}: error {mae:.4f}, overhead {overhead:.3f} bits/param — "
                 "bigger blocks: more error, fewer bits")
    plt.show()
    return results


results = plot_tradeoff(x_bs, "nf4", 64)
errors = [r[0] for r in results]
assert all(a <= b for a, b in zip(errors, errors[1:])), "error grows with block size on normal data"
assert [r[1] for r in results] == [32 / b for b in BLOCKSIZES], "overhead is 32/B bits per parameter"

# %% [markdown]
# Move the slider: block size (as a power of two) and data type.

# %%
# NBVAL_IGNORE_OUTPUT
import ipywidgets as widgets

widgets.interact(
    lambda log2_blocksize, quant_type: plot_tradeoff(x_bs, quant_type, 2**log2_blocksize) and None,
    log2_blocksize=widgets.IntSlider(value=6, min=4, max=12, description="log2 B", continuous_update=False),
    quant_type=widgets.Dropdown(options=["nf4", "fp4", "int4"], value="nf4"),
);

# %% [markdown]
# ## Summary
#
# - Absmax quantization maps the largest magnitude onto the largest code; one outlier inflates
#   every value's error, and blocks of 64 contain it.
# - A 4-bit type is a table of 16 values; NF4 places them at normal quantiles (derived here
#   within 1e-6, in fact bit for bit) and uses its codes more evenly than INT4.
# - Quantize = flatten, blocks, absmax, nearest code (ties down), pack high nibble first; our
#   version equals `lorakit.quant` and both equal bitsandbytes byte for byte; torchao is a
#   close, different dialect.
# - NF4 error on `randn(1024, 1024)`: 0.0728, as published; NF4 is also best on the trained
#   weights; the model's loss barely moves at 4 bits.
# - Block size trades error for $32/B$ bits of constants: 0.5 bits/param at 64 — notebook 07
#   shrinks that.
#
# ## Exercises

# %%
from lorakit.exercises.nb06 import check_ex_6_1, check_ex_6_2, check_ex_6_3

# %% [markdown]
# **Exercise 6.1 — one code by hand.** A value scaled by its block's absmax is $s = 0.3$.
# Which NF4 code (an `int` 0–15) does it get? Hint: find the two neighbouring table values and
# compare $s$ with their midpoint.

# %%
answer = None  # your answer here
check_ex_6_1(answer)

# %% [markdown]
# **Exercise 6.2 — pack the nibbles.** Pack the NF4 codes `[3, 12, 7]` into bytes the way
# bitsandbytes does. Answer: a list of ints (one per byte). Hint: the first code goes in the
# high nibble; an odd count is padded with the code of the value 0.0.

# %%
answer = None  # your answer here
check_ex_6_2(answer)

# %% [markdown]
# **Exercise 6.3 — the price of a block size.** How many bits per parameter does NF4 with
# blocks of 128 (float32 absmax, no double quantization) store? Answer: a float. Hint: 4 bits of
# code plus the constant's bits shared by the block.

# %%
answer = None  # your answer here
check_ex_6_3(answer)
