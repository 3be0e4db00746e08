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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lorakit/lorakit/blob/v0.1.0/notebooks/06_nf4_by_hand.ipynb)
#
# After this notebook you can quantize a weight matrix to 4-bit NormalFloat yourself, byte for
# byte as bitsandbytes does, and say how much error it costs.
#
# **You will**
# - build absmax quantization from zero (INT8, then 4 bits) and see why outliers and blocks matter;
# - derive the NF4 table from normal quantiles and compare it with INT4 and FP4;
# - quantize, pack, unpack and dequantize step by step, bit-exact with bitsandbytes' CPU backend,
#   and measure the error on random data, on the course model's trained weights and on its loss —
#   including a setting where the choice of 4-bit type visibly matters.
#
# **Runtime** (measured: top to bottom in a fresh kernel, base model cached, by `bench/course_runtime.py`)
#
# | device | test mode (`LORAKIT_FAST=1`) | learner size |
# |---|---|---|
# | 2-core x86_64 CPU, otherwise idle (load ≤ 2), 2026-11-29 | 9 s | 16 s |

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
#
# Everything is seeded; `FAST` (test mode) only shrinks sizes, never changes the code path.
#
# **Notation.** In this notebook and the next, a *block* is a run of consecutive values that
# share one scale; its size is $\ell$ in formulas and `blocksize` in code (never $B$, which is
# LoRA's matrix). Quantization works on the flattened tensor, so the layout question
# ($xW_0$ or `x @ weight.T`) does not arise until notebook 08.

# %%
import copy
import math

import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator

from lorakit import fast, quant
from lorakit.data import load_splits
from lorakit.exercises.nb06 import check_ex_6_1, check_ex_6_2, check_ex_6_3, check_ex_6_4
from lorakit.quiet import quiet_import
from lorakit.train import base_model, evaluate, fast_mode, set_seed

FAST = fast_mode()
set_seed(0)
N_DEMO = 4096  # values in the small demos
EVAL_BATCHES = 6 if FAST else 20
# the reference libraries, imported without their start-up noise; everything else runs without them
bnb = quiet_import("bitsandbytes")
HAVE_BNB = bnb is not None
if HAVE_BNB:
    import bitsandbytes.functional as bnbF
print(f"test mode: {FAST}, bitsandbytes available: {HAVE_BNB}")

# %% [markdown]
# ## 2. Quantization from zero: absmax INT8, then 4 bits
#
# To store a vector $x \in \mathbb{R}^{n}$ in $k$ bits, scale it so its largest magnitude
# lands on the largest integer $L = 2^{k-1}-1$ and round:
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
    assert torch.equal(x_hat, quant.absmax_int_roundtrip(x, bits)), "our INT quantizer equals lorakit's"

# %% [markdown]
# **Why outliers hurt.** One large value sets absmax for everyone: the step grows, and all the
# ordinary values crowd into a few codes. Real LLM weights and activations do have such outliers.
# The fix: one absmax per **block** of, say, 64 consecutive values. An outlier then spoils only
# its own block.

# %%
x_out = x.clone()
x_out[100] = 40.0  # one outlier, 10x the largest normal value
err_clean = (quant.absmax_int_roundtrip(x, 4) - x).abs().mean().item()
err_outlier = (quant.absmax_int_roundtrip(x_out, 4) - x_out).abs().mean().item()
err_blocks = (quant.absmax_int_roundtrip(x_out, 4, blocksize=64) - x_out).abs().mean().item()
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
# Four bits give 16 codes. A 4-bit **data type** is nothing more than the table of 16 numbers
# those codes stand for; blockwise quantization scales each value into $[-1, 1]$ and picks the
# nearest table entry.
#
# - **INT4**: evenly spaced, $k/7$. Codes 1–15 hold $k = -7..7$, all in $[-1, 1]$; code 0 holds
#   $-8/7 \approx -1.143$, *outside* $[-1, 1]$. A scaled value never goes below $-1$, so code 0 is
#   never chosen: INT4 effectively has 15 levels (asserted below, and drawn in grey).
# - **FP4** (bitsandbytes' E2M1): bit 3 is the sign, bits 2–1 an exponent $e$, bit 0 a mantissa
#   bit $m$. For $e = 1, 2, 3$ the magnitude is $2^{4-e}(1 + m/2)/12$ — i.e. $\{8, 12\}, \{4, 6\},
#   \{2, 3\}$ divided by 12, so the largest is 1 — and $e = 0$ holds 0 ($m = 0$) and one
#   *subnormal* value $0.0625/12 \approx 0.0052$ ($m = 1$): dense near 0, sparse near ±1. The
#   table is indexed by the bit pattern, so it is not sorted.
# - **NF4**: 16 quantiles of the normal distribution (next section).

# %%
for name, table in quant.TABLES.items():
    print(f"{name}: " + " ".join(f"{v:+.3f}" for v in table.tolist()))
assert torch.equal(quant.FP4[:8], -quant.FP4[8:]), "FP4: bit 3 is the sign"
e2m1 = [0.0, 0.0625 / 12] + [2.0 ** (4 - e) * (1 + m / 2) / 12 for e in (1, 2, 3) for m in (0, 1)]
assert torch.allclose(quant.FP4[:8], torch.tensor(e2m1)), "FP4 magnitudes: 2^(4−e)(1 + m/2)/12, and e = 0: 0, 0.0625/12"
assert abs(quant.INT4[0].item() + 8 / 7) < 1e-6, "INT4's code 0 is −8/7, outside [−1, 1]"
int4_codes = quant.nearest_codes(torch.linspace(-1, 1, 100_001), quant.INT4)
assert int(int4_codes.min()) == 1, "no value in [−1, 1] picks INT4's code 0 (−8/7): 15 usable levels"
if HAVE_BNB:
    assert torch.equal(quant.FP4, bnbF.get_4bit_type("fp4", device="cpu")), "FP4 table equals bitsandbytes'"

fig, ax = plt.subplots(figsize=(10, 3))
for row, name in enumerate(["int4", "fp4", "nf4"]):
    levels = quant.TABLES[name].unique()
    usable = levels[levels.abs() <= 1]
    ax.scatter(usable, [row] * len(usable), s=30)
    unused = levels[levels.abs() > 1]
    if len(unused):
        ax.scatter(unused, [row] * len(unused), s=30, color="0.7")
        ax.annotate("−8/7: never used", (unused[0].item(), row), textcoords="offset points", xytext=(0, 8),
                    fontsize=8, color="0.4")
ax.set_yticks([0, 1, 2], ["INT4", "FP4", "NF4"])
ax.set_ylim(-0.5, 2.6)
ax.set_xlabel("value of a code (in units of the block's absmax)")
ax.set_title("Same 16 codes, different places: NF4 packs them where normal weights are")
plt.show()

# %% [markdown]
# ## 4. NF4 from normal quantiles
#
# Weights of trained networks are roughly normal, $w \sim \mathcal N(0, \sigma^2)$ (section 7
# shows the course model's). If every code covered the same probability mass, every code would
# be used equally often — the codes carry the most information a 4-bit code can (4 bits of
# entropy). That is what the QLoRA paper means by "information-theoretically optimal": the codes
# are **quantiles** $\Phi^{-1}(p)$ of the normal distribution, for evenly spaced $p$. It is not
# the quantizer with the smallest error (that would place levels by Lloyd–Max, not by equal
# mass), and it assumes each block's absmax sits at $\Phi^{-1}(\delta)\,\sigma \approx 1.85\sigma$,
# while the largest of 64 normal magnitudes is typically about $2.6\sigma$ (measured below). Yoshida
# (2023) makes both points and proposes AF4, a table built for the block maximum.
#
# QLoRA also wants an exact **zero**: a symmetric set of 16 quantiles has no zero (it has
# $\pm$ a small value), and adding one to a symmetric set of 15 wastes a code. Their answer: a
# discrete zero point *and* all $2^4$ codes, at the price of asymmetry — 8 positive levels
# $\Phi^{-1}(p_i)$ with $p = \text{linspace}(\delta, \tfrac12, 9)[:-1]$, 7 negative levels with
# $p = \text{linspace}(\delta, \tfrac12, 8)[:-1]$, and 0; all divided by the largest so they span
# $[-1, 1]$. The end probability $\delta$ keeps $\Phi^{-1}$ finite: the centre of the last of $n$
# equal-mass bins is $1 - \tfrac{1}{2n}$, and QLoRA's code averages it for $n = 15$ and
# $n = 16$: $\delta = 1 - \tfrac12(\tfrac1{30} + \tfrac1{32}) = 0.9677083$.

# %%
delta = 0.9677083
assert abs(delta - (1 - 0.5 * (1 / 30 + 1 / 32))) < 1e-7, "δ = 1 − ½(1/30 + 1/32)"
positive = torch.special.ndtri(torch.linspace(delta, 0.5, 9)[:-1].double())  # Φ⁻¹, 8 levels
negative = -torch.special.ndtri(torch.linspace(delta, 0.5, 8)[:-1].double())  # 7 levels
nf4_derived = torch.cat([positive, torch.zeros(1, dtype=torch.float64), negative]).float().sort().values
nf4_derived = nf4_derived / nf4_derived.max()

gap = (nf4_derived - quant.NF4).abs().max().item()
print(f"largest difference from bitsandbytes' table: {gap:.2e}")
assert gap <= 1e-6, "the NF4 we derived matches the published table within 1e-6"
assert torch.equal(nf4_derived, quant.nf4_from_quantiles()), "our derivation equals lorakit's"
if HAVE_BNB:
    assert torch.equal(quant.NF4, bnbF.get_4bit_type("nf4", device="cpu")), "lorakit's NF4 is bitsandbytes' table"

# the same recipe with a float64 linspace misses the table by ~1e-7 on a few codes:
p64 = torch.linspace(delta, 0.5, 9, dtype=torch.float64)[:-1]
n64 = torch.linspace(delta, 0.5, 8, dtype=torch.float64)[:-1]
alt = torch.cat([torch.special.ndtri(p64), torch.zeros(1, dtype=torch.float64), -torch.special.ndtri(n64)]).float().sort().values
alt = alt / alt.max()
print(f"with a float64 linspace: off by up to {(alt - quant.NF4).abs().max():.1e} on codes {((alt - quant.NF4) != 0).nonzero().view(-1).tolist()}")

# %% [markdown]
# Here it matched exactly; it holds because torch's float32 `linspace` (which fills half the
# values from each end) is what bitsandbytes used. From now on we use the exact table `quant.NF4`.
#
# **Check the promise: equal use of every code.** Quantize normal data and count how often each
# code is chosen (`quant.code_usage`). INT4 crowds the middle codes; NF4 spreads them out.

# %%
w = torch.randn(64 * 1024)
usage = {name: quant.code_usage(quant.quantize_4bit(w, name)).float() for name in ("int4", "nf4")}
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
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"{name.upper()}: entropy {entropy[name]:.2f} bits")
axes[0].set_ylabel("fraction of values (w ~ N(0,1), blocks of 64)")
fig.suptitle("NF4 spreads normal weights over its codes; INT4 crowds the middle")
plt.show()

# %% [markdown]
# The NF4 usage is not perfectly flat: each block's absmax is the largest of *that block's* 64
# magnitudes — about $2.6\sigma$ — not $\Phi^{-1}(\delta)\,\sigma \approx 1.85\sigma$, so after scaling the
# values crowd a little towards the middle codes. Measured:

# %%
block_max = torch.randn(4096, 64, generator=torch.Generator().manual_seed(3)).abs().amax(dim=1)
phi_delta = torch.special.ndtri(torch.tensor(delta, dtype=torch.float64)).item()
print(f"mean absmax of a block of 64 N(0, 1) values: {block_max.mean():.3f} σ; Φ⁻¹(δ) = {phi_delta:.3f}")
assert 2.4 < block_max.mean().item() < 2.8 and abs(phi_delta - 1.848) < 0.01, "block max ≈ 2.6σ, not Φ⁻¹(δ) ≈ 1.85σ"

# %% [markdown]
# ## 5. Blockwise quantize, pack, unpack, dequantize — step by step
#
# bitsandbytes' recipe, for $x$ of any shape with $n$ values and block size $\ell$ (`blocksize`):
#
# 1. flatten row-major and cut into $\lceil n/\ell \rceil$ blocks (the last may be partial);
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
blocksize = 4
padded = torch.cat([x_small, torch.zeros(-len(x_small) % blocksize)]).view(-1, blocksize)  # padding only for display
absmax_small = padded.abs().amax(dim=1)
scaled_small = (padded / absmax_small[:, None]).view(-1)[: len(x_small)]
codes_small = quant.nearest_codes(scaled_small, quant.NF4)
packed_small = quant.pack_nibbles(torch.cat([codes_small, torch.tensor([7], dtype=torch.uint8)]))  # pad with code of 0.0
print("absmax per block :", [round(v, 3) for v in absmax_small.tolist()])
print("scaled values    :", [round(v, 3) for v in scaled_small.tolist()])
print("4-bit codes      :", codes_small.tolist())
print("packed bytes     :", [f"0x{b:02X}" for b in packed_small.tolist()])
print("unpacked codes   :", quant.unpack_nibbles(packed_small, len(x_small)).tolist())
print("dequantized      :", [round(v, 3) for v in (quant.NF4[codes_small.long()] * absmax_small.repeat_interleave(blocksize)[: len(x_small)]).tolist()])
assert torch.equal(quant.unpack_nibbles(packed_small, len(x_small)), codes_small), "unpack undoes pack"

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
    codes = quant.nearest_codes(scaled.clamp(-1, 1), table)
    return quant.pack_nibbles(codes), absmax


def my_dequantize(packed, absmax, table, shape, blocksize=64, dtype=torch.float32):
    n = math.prod(shape)
    codes = quant.unpack_nibbles(packed, n).long()
    scale = absmax.repeat_interleave(blocksize)[:n]
    return (table[codes] * scale).to(dtype).view(shape)


x_check = torch.randn(300, 70)  # 21000 values: 328 full blocks + a partial one
packed, absmax = my_quantize(x_check, quant.NF4)
q = quant.quantize_4bit(x_check, "nf4", 64)
assert torch.equal(packed, q.packed) and torch.equal(absmax, q.absmax), "our bytes equal lorakit's"
assert torch.equal(my_dequantize(packed, absmax, quant.NF4, x_check.shape), quant.dequantize_4bit(q)), "and so do the values"
print(f"{x_check.numel()} values -> {q.packed.numel()} bytes of codes + {q.absmax.numel()} float32 absmax")

# %% [markdown]
# These steps are what `lorakit/quant.py` runs, in the same order. Two of them have a faster twin
# in `lorakit/fast.py` that gives the same bits: the nearest code by two table reads indexed by
# the top 16 bits of each float32 instead of `bucketize` (checked on all 65,536 possible buckets
# in the tests), and dequantizing by a 256-entry table that holds both values of each byte. One
# switch, `lorakit.fast.ENABLED`, chooses; off, the package runs exactly the steps above:

# %%
fast.ENABLED = False                                   # the readable path only
q_readable = quant.quantize_4bit(x_check, "nf4", 64)
x_readable = quant.dequantize_4bit(q_readable)
fast.ENABLED = True                                    # back to the default
assert torch.equal(q_readable.packed, q.packed) and torch.equal(x_readable, quant.dequantize_4bit(q)), \
    "the fast twins give the readable path's bytes and values"
#
# ## 6. Bit-exact with bitsandbytes (its CPU backend)
#
# bitsandbytes (≥ 0.47) runs NF4 on the CPU; that CPU backend is what we compare with here (its
# CUDA kernels are meant to agree, but this notebook does not check them). We compare packed bytes, absmax and dequantized
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
            q = quant.quantize_4bit(x_b, "nf4", 64)
            same = (torch.equal(q.packed, packed_b.reshape(-1)), torch.equal(q.absmax, state.absmax),
                    torch.equal(quant.dequantize_4bit(q).reshape(-1), bnbF.dequantize_4bit(packed_b, state).reshape(-1)))
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
HAVE_TORCHAO = quiet_import("torchao") is not None
if HAVE_TORCHAO:
    from torchao.quantization.quantize_.workflows.nf4.nf4_tensor import to_nf4

if HAVE_TORCHAO:
    x_ao = torch.randn(256, 256, dtype=torch.bfloat16)
    ao = to_nf4(x_ao, 64, 256)
    ours_q = quant.quantize_4bit(x_ao, "nf4", 64, double_quant=True)
    same_codes = (quant.unpack_nibbles(ao.quantized_data) == quant.unpack_nibbles(ours_q.packed)).float().mean().item()
    x_ao_hat = ao.get_original_weight().float()
    ours_hat = quant.dequantize_4bit(ours_q).float()
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
# $|x-\hat x| = 0.0728$ (and 0.203 for their "mean relative" error, the mean of
# $|x_i-\hat x_i|/|x_i|$ — a different quantity from this course's relative error), FP4 0.0965.
# We measure ours.

# %%
x_ref = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(0))
metrics = {name: quant.error_metrics(x_ref, quant.dequantize_4bit(quant.quantize_4bit(x_ref, name))) for name in ("int4", "fp4", "nf4")}
for name, m in metrics.items():
    print(f"{name.upper()}: mean |x - x̂| = {m['mae']:.4f}, mean relative {m['mean_rel']:.3f}, RMS {m['rmse']:.4f}")
assert abs(metrics["nf4"]["mae"] - 0.0728) < 0.001, "NF4 matches bitsandbytes' published 0.0728"
assert abs(metrics["fp4"]["mae"] - 0.0965) < 0.001, "FP4 matches bitsandbytes' published 0.0965"
assert metrics["nf4"]["mae"] < metrics["int4"]["mae"] < metrics["fp4"]["mae"], "on normal data: NF4 < INT4 < FP4"

# %% [markdown]
# **Are trained weights normal?** NF4 bets on it. The course's base model (cached; trained on
# the standard library's source code) has real trained matrices: all its linear weights,
# standardised, against the normal density — and the values each block actually hands to the
# quantizer ($w / \text{absmax}$ of its block) against the NF4 levels.

# %%
model, info = base_model(progress=False)
linears = {n: m.weight.detach() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
w_all = torch.cat([w.reshape(-1) for n, w in linears.items() if "lm_head" not in n])
z = (w_all - w_all.mean()) / w_all.std()
kurtosis = (z**4).mean().item()
scaled_all = torch.cat([(w.reshape(-1, 64) / w.reshape(-1, 64).abs().amax(dim=1, keepdim=True)).reshape(-1)
                        for n, w in linears.items() if "lm_head" not in n])
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
grid = torch.linspace(-5, 5, 201)
ax1.hist(z.clamp(-5, 5).numpy(), bins=100, density=True, alpha=0.7, label="trained weights (standardised)")
ax1.plot(grid, torch.exp(-grid**2 / 2) / math.sqrt(2 * math.pi), "k", lw=1.5, label="N(0, 1)")
ax1.set(xlabel="w / σ", ylabel="density", title=f"roughly normal, heavier tails (kurtosis {kurtosis:.1f}; normal: 3)")
ax1.legend(fontsize=8, loc="upper left")
ax2.hist(scaled_all.numpy(), bins=120, density=True, alpha=0.7, color="C1")
for v in quant.NF4.tolist():
    ax2.axvline(v, color="k", lw=0.7, ls=":")
ax2.set(xlabel="w / absmax of its block of 64 (dotted: the 16 NF4 levels)", ylabel="density",
        title="what the quantizer sees: dense near 0, like NF4")
fig.suptitle(f"The course model's {w_all.numel():,} linear weights are roughly normal")
plt.tight_layout()
plt.show()
print(f"{w_all.numel():,} weights: kurtosis {kurtosis:.2f} (normal 3); "
      f"{(z.abs() < 1).float().mean():.1%} within 1σ (normal 68.3 %)")
assert 2.5 < kurtosis < 8, "roughly normal: kurtosis of the same order as a normal's 3 (tails a little heavier)"
assert 0.6 < (z.abs() < 1).float().mean().item() < 0.85, "about two thirds within one standard deviation"

# %% [markdown]
# **Error on trained weights.** Per linear layer, the relative error (the course's one
# definition, notebook 01): $\|W - \hat W\|_F / \|W\|_F$.

# %%
rel_err = {name: [] for name in ("int4", "fp4", "nf4")}
for layer, weight in linears.items():
    for name in rel_err:
        w_hat = quant.dequantize_4bit(quant.quantize_4bit(weight, name))
        rel_err[name].append((torch.linalg.norm(w_hat - weight) / torch.linalg.norm(weight)).item())
mean_rel = {name: sum(v) / len(v) for name, v in rel_err.items()}
print(f"{len(linears)} linear layers; mean relative error: " + ", ".join(f"{n.upper()} {v:.3f}" for n, v in mean_rel.items()))
assert mean_rel["nf4"] < mean_rel["int4"] and mean_rel["nf4"] < mean_rel["fp4"], "NF4 has the smallest error on trained weights"
nf4_best = sum(n < i and n < f for n, i, f in zip(rel_err["nf4"], rel_err["int4"], rel_err["fp4"]))
print(f"NF4 has the smallest error on {nf4_best} of {len(linears)} layers")
assert nf4_best > len(linears) / 2, "and on most layers, as the figure's title says"

fig, ax = plt.subplots(figsize=(10, 4))
pos = torch.arange(len(linears)).float()
for k, name in enumerate(rel_err):
    ax.bar(pos + (k - 1) * 0.27, rel_err[name], width=0.27, label=name.upper())
ax.set_xticks(pos.tolist(), [n.replace("blocks.", "b").replace(".weight", "") for n in linears], rotation=60, fontsize=7)
ax.set_ylabel("relative error ‖W − Ŵ‖_F / ‖W‖_F")
best_count = sum(n < i and n < f for n, i, f in zip(rel_err["nf4"], rel_err["int4"], rel_err["fp4"]))
ax.set_title(f"NF4 gives the smallest error on {best_count} of {len(linears)} trained layers")
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))   # outside the axes: never over a bar
plt.tight_layout()
plt.show()

# %% [markdown]
# **On the loss.** Replace every linear weight (except `lm_head`, which QLoRA keeps in 16 bits)
# by its quantize → dequantize round trip (`quant.quantize_model_linears`) and evaluate the
# validation loss on held-out code. The QLoRA paper (Table 2) found NF4 best on large models. At
# learner size this model agrees: NF4 costs the least loss (about +0.013 bits/byte, against +0.024
# for INT4 and +0.030 for FP4; asserted there). The test-mode model is barely trained and moves by
# about a thousandth of a bit whatever the type, so in both modes we assert only the robust part:
# every 4-bit copy stays close to the original, and NF4 is no worse than FP4 beyond noise.

# %%
_, val = load_splits("code", info["settings"]["max_bytes"])
loss = {}
for name in ("none", "int4", "fp4", "nf4"):
    loss[name] = evaluate(quant.quantize_model_linears(model, name, 64), val, 16, EVAL_BATCHES, seed=0)
    print(f"{name.upper():>5}: val loss {loss[name]:.4f} bits/byte ({loss[name] - loss['none']:+.4f})")
for name in ("int4", "fp4", "nf4"):
    assert abs(loss[name] - loss["none"]) < 0.1, f"{name}: 4-bit weights change the loss by < 0.1 bits/byte"
assert loss["nf4"] - loss["none"] <= loss["fp4"] - loss["none"] + 0.01, "NF4 hurts the loss no more than FP4"
if not FAST:
    assert loss["nf4"] < loss["int4"] and loss["nf4"] < loss["fp4"], "at learner size NF4 costs the least loss"

# %% [markdown]
# **When does the choice of type matter? Take bits away.** At 4 bits with blocks of 64 the type
# moves this small model's loss by about a hundredth of a bit at learner size and by about a
# thousandth in test mode (above). Large LLMs are more sensitive (QLoRA's Table 2), and so is any
# model once the grid gets coarse enough. The same recipe builds a
# $k$-bit table of each kind: INT$k$ = $j/L$ with $L = 2^{k-1} - 1$, and NF$k$ from $2^{k-1}$ positive
# and $2^{k-1} - 1$ negative normal quantiles plus 0. Quantize every linear weight (blocks of 64)
# at 4, 3 and 2 bits and measure the loss again:

# %%
def nf_table(k: int) -> torch.Tensor:
    """NF4's recipe for k bits: 2^(k-1) positive and 2^(k-1) − 1 negative quantiles, and 0."""
    half = 2 ** (k - 1)
    pos = torch.special.ndtri(torch.linspace(delta, 0.5, half + 1)[:-1].double())
    neg = -torch.special.ndtri(torch.linspace(delta, 0.5, half)[:-1].double())
    levels = torch.cat([pos, torch.zeros(1, dtype=torch.float64), neg]).float().sort().values
    return levels / levels.max()


def int_table(k: int) -> torch.Tensor:
    L = 2 ** (k - 1) - 1
    return torch.arange(-L, L + 1).float() / L


def with_table(model, table, blocksize=64):
    """A copy of `model` whose linear weights (not lm_head) went through blockwise absmax + `table`."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, module in out.named_modules():
            if isinstance(module, torch.nn.Linear) and "lm_head" not in name:
                w = module.weight.reshape(-1, blocksize)
                absmax = w.abs().amax(dim=1, keepdim=True)
                codes = quant.nearest_codes((w / absmax).reshape(-1), table).long().view_as(w)
                module.weight.copy_((table[codes] * absmax).view_as(module.weight))
    return out


assert torch.equal(nf_table(4), quant.NF4), "the k-bit recipe at k = 4 is NF4 itself"
bits_loss = {}
for k in (4, 3, 2):
    for kind, table in (("INT", int_table(k)), ("NF", nf_table(k))):
        bits_loss[(kind, k)] = evaluate(with_table(model, table), val, 16, EVAL_BATCHES, seed=0) - loss["none"]
        print(f"{kind}{k}: {len(table):>2} levels, loss change {bits_loss[(kind, k)]:+.4f} bits/byte")

fig, ax = plt.subplots(figsize=(6, 4))
for kind in ("INT", "NF"):
    ax.plot([4, 3, 2], [bits_loss[(kind, k)] for k in (4, 3, 2)], "o-", label=f"{kind}k")
ax.axhline(0, color="0.6", lw=1)
ax.set_xticks([4, 3, 2])
ax.invert_xaxis()
ax.set(xlabel="bits per weight (blocks of 64)", ylabel="loss change (bits/byte)",
       title="Fewer bits: the type starts to matter, and NF hurts less than INT")
ax.legend()
plt.show()

# %%
assert bits_loss[("NF", 2)] > bits_loss[("NF", 4)] + 0.005, "2 bits cost clearly more than 4"
assert bits_loss[("NF", 2)] < bits_loss[("INT", 2)], "at 2 bits NF hurts less than INT"
if not FAST:
    assert all(bits_loss[("NF", k)] < bits_loss[("INT", k)] for k in (4, 3, 2)), "at learner size NF wins at every width"
    assert bits_loss[("NF", 2)] > 10 * bits_loss[("NF", 4)], "and 2 bits cost far more than 4"

# %% [markdown]
# As levels run out, where they sit decides how much of the model survives — NF keeps more levels
# where normal weights are dense (near zero). At learner size NF loses less than INT at 4, 3 and 2
# bits, and 2 bits cost tens of times what 4 do (about +0.9 against +0.013 bits/byte for NF); in
# test mode the effect shows at 2 bits (all asserted). The quantization error on the weights (section 7)
# predicts this ordering at every bit width; how much of it reaches the loss depends on the model.

# %% [markdown]
# ## 8. Block size: error against overhead
#
# Smaller blocks track local scale better but store more float32 constants: $32/\ell$ extra bits
# per parameter for blocks of $\ell$ values. `quant.blocksize_tradeoff(x, blocksize)` returns both,
# measured from the stored bytes.

# %%
BLOCKSIZES = [16, 32, 64, 128, 256, 512, 1024, 4096]
x_bs = torch.randn(256, 256, generator=torch.Generator().manual_seed(1))


def plot_tradeoff(x, quant_type="nf4", highlight=64):
    """Error and overhead over block sizes; the pure function does the work."""
    results = [quant.blocksize_tradeoff(x, b, quant_type) for b in BLOCKSIZES]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(BLOCKSIZES, [r[0] for r in results], "o-")
    ax2.plot(BLOCKSIZES, [r[1] for r in results], "o-", color="C1")
    mae, overhead = quant.blocksize_tradeoff(x, highlight, quant_type)
    ax1.plot([highlight], [mae], "r*", ms=14)
    ax2.plot([highlight], [overhead], "r*", ms=14)
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("block size ℓ (values)")
    ax1.set_ylabel("mean |x − x̂|  (x ~ N(0, 1))")
    ax2.set_ylabel("constants: extra bits / parameter")
    fig.suptitle(f"{quant_type.upper()}, ℓ = {highlight}: error {mae:.4f}, overhead {overhead:.3f} bits/param — "
                 "bigger blocks: more error, fewer bits")
    plt.show()
    return results


results = plot_tradeoff(x_bs, "nf4", 64)
errors = [r[0] for r in results]
assert all(a <= b for a, b in zip(errors, errors[1:])), "error grows with block size on normal data"
assert [r[1] for r in results] == [32 / b for b in BLOCKSIZES], "overhead is 32/ℓ bits per parameter"

# %% [markdown]
# Move the slider: block size (as a power of two) and data type.

# %%
# NBVAL_IGNORE_OUTPUT
import ipywidgets as widgets

widgets.interact(
    lambda log2_blocksize, quant_type: plot_tradeoff(x_bs, quant_type, 2**log2_blocksize) and None,
    log2_blocksize=widgets.IntSlider(value=6, min=4, max=12, description="log2 ℓ", continuous_update=False),
    quant_type=widgets.Dropdown(options=["nf4", "fp4", "int4"], value="nf4"),
);

# %% [markdown]
# ## 9. After NF4: MXFP4 and NVFP4, by hand
#
# Two newer 4-bit formats are what learners now meet in checkpoints and on hardware. Both store
# every weight as an **E2M1** float — 1 sign bit, 2 exponent bits (bias 1), 1 mantissa bit, no
# infinities or NaN — whose 8 magnitudes are $0, 0.5, 1, 1.5, 2, 3, 4, 6$ (bitsandbytes' FP4 of
# section 3 is a cousin with the same bit layout but the levels $0, 0.0625, 2, 3, 4, 6, 8, 12$, ÷ 12).
# What differs is the block and how its scale is stored:
#
# | format | block | scale per block | per tensor | bits per parameter |
# |---|---|---|---|---|
# | NF4 (bitsandbytes) | 64 | float32 absmax | — | $4 + 32/64 = 4.5$ (4.127 with notebook 07's double quantization) |
# | **MXFP4** (OCP Microscaling v1.0; gpt-oss) | 32 | **E8M0**: a power of two $2^{e-127}$, 8 bits | — | $4 + 8/32 = 4.25$ |
# | **NVFP4** (NVIDIA Blackwell) | 16 | **FP8 E4M3**, 8 bits | one float32 | $4 + 8/16 + 32/n \approx 4.5$ |
#
# **MXFP4's scale** (the spec's rule): $e = \lfloor \log_2 \text{absmax} \rfloor - 2$, where 2 is the
# exponent of E2M1's top power of two (4). Then $\text{absmax}/2^e \in [4, 8)$: a block may use
# only two thirds of the grid (absmax near 4) or have its top values saturated to 6 (between 6
# and 8) — the price of a scale that is a pure exponent.
# **NVFP4's scales**: the tensor scale $s = \text{absmax}(W)/(448 \cdot 6)$ lets the block scales
# $\text{e4m3}(\text{absmax}_\text{block} / 6 / s)$ use E4M3's whole range up to 448; a value is
# then multiplied by $1/(s \cdot \text{scale}_\text{block})$ and rounded to E2M1.
# Rounding to E2M1 goes to the nearest value, **ties to the even code** (IEEE style; NF4's ties go
# down), and the first value of a pair goes in the **low** nibble (bitsandbytes: the high one).
#
# First the E2M1 table from its bit fields, then MXFP4 from these rules, by hand.

# %%
from lorakit import mxfp


def e2m1_value(code: int) -> float:
    """The E2M1 number with bit pattern `code`: sign | 2 exponent bits (bias 1) | 1 mantissa bit."""
    sign, exponent, mantissa = code >> 3, (code >> 1) & 0b11, code & 1
    magnitude = mantissa * 0.5 if exponent == 0 else 2.0 ** (exponent - 1) * (1 + mantissa / 2)  # subnormal, normal
    return -magnitude if sign else magnitude


E2M1_BY_HAND = torch.tensor([e2m1_value(c) for c in range(16)])


def mxfp4_by_hand(w: torch.Tensor) -> torch.Tensor:
    """w (last dim a multiple of 32) → MXFP4 → back: power-of-two scale per 32, nearest E2M1, ties to even."""
    blocks = w.float().reshape(-1, 32)
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    exponent = torch.floor(torch.log2(absmax)) - 2                      # floor(log2 absmax) − floor(log2 6)
    scale = torch.exp2(exponent.clamp(-127, 127))                       # E8M0: 2^(e) stored as the byte e + 127
    scaled = (blocks / scale).clamp(-6, 6)                               # saturate beyond ±6
    grid = E2M1_BY_HAND[:8]
    distance = (scaled.abs().unsqueeze(-1) - grid).abs()
    nearest = distance.min(dim=-1, keepdim=True).values
    is_nearest = distance == nearest                                     # one, or two on a tie …
    even_first = is_nearest & (torch.arange(8) % 2 == 0)                 # … then the even code wins
    code = torch.where(even_first.any(-1), even_first.float().argmax(-1), is_nearest.float().argmax(-1))
    return (torch.sign(scaled) * grid[code] * scale).view(w.shape)


w_up = linears["blocks.0.mlp.up_proj"]                                  # a trained weight (out×in)
q_mx, q_nv = mxfp.quantize_mxfp4(w_up), mxfp.quantize_nvfp4(w_up)
print("E2M1 levels:", E2M1_BY_HAND[:8].tolist())
print(f"{w_up.numel():,} weights: MXFP4 stores {q_mx.nbytes:,} bytes = {mxfp.bits_per_parameter(q_mx):.4f} bits/param, "
      f"NVFP4 {q_nv.nbytes:,} bytes = {mxfp.bits_per_parameter(q_nv):.4f}, "
      f"NF4 {quant.quantize_4bit(w_up).nbytes:,} bytes = {quant.bits_per_parameter(quant.quantize_4bit(w_up)):.4f}")
print(f"MXFP4 scales of the first blocks: 2^{(q_mx.scales[:4].int() - 127).tolist()}; "
      f"NVFP4 tensor scale {q_nv.tensor_scale.item():.3e}, block scales (E4M3) "
      f"{q_nv.scales[:4].view(torch.float8_e4m3fn).float().tolist()}")

# %%
assert torch.equal(E2M1_BY_HAND, mxfp.E2M1), "our table from the bit fields = lorakit.mxfp's"
assert torch.equal(mxfp4_by_hand(w_up), mxfp.dequantize_mx(q_mx)), "our MXFP4 round trip = lorakit.mxfp's, bit for bit"
assert torch.equal(mxfp.quantize_mxfp4(mxfp4_by_hand(w_up)).packed, q_mx.packed), "decoded values re-encode to the same bytes"
assert mxfp.bits_per_parameter(q_mx) == 4.25, "MXFP4: 4 bits + one byte per 32 weights"
assert mxfp.bits_per_parameter(q_nv) == 4.5 + 32 / w_up.numel(), "NVFP4: 4 bits + a byte per 16 + one float32"
ratio = w_up.float().reshape(-1, 32).abs().amax(1) / mxfp.block_scales(q_mx)
assert bool(((ratio >= 4) & (ratio < 8)).all()), "MXFP4: every block's absmax lands in [4, 8) of its scale"

# %% [markdown]
# **Against a reference.** torchao's prototypes (`torchao.prototype.mx_formats`: `to_mx` and
# `nvfp4_quantize`) run on the CPU. lorakit's bytes — codes and scales — must equal theirs.

# %%
mx_ref = quiet_import("torchao.prototype.mx_formats.mx_tensor")
nv_ref = quiet_import("torchao.prototype.mx_formats.nvfp4_tensor")
if mx_ref is not None and nv_ref is not None:
    scale_ref, data_ref = mx_ref.to_mx(w_up.contiguous(), torch.float4_e2m1fn_x2, 32)
    tensor_scale_ref = nv_ref.per_tensor_amax_to_scale(w_up.abs().max())
    scale_nv_ref, data_nv_ref = nv_ref.nvfp4_quantize(w_up.contiguous(), 16, tensor_scale_ref)
    same = {"MXFP4 codes": torch.equal(data_ref.view(torch.uint8).reshape(-1), q_mx.packed),
            "MXFP4 scales": torch.equal(scale_ref.view(torch.uint8).reshape(-1), q_mx.scales),
            "NVFP4 codes": torch.equal(data_nv_ref.view(torch.uint8).reshape(-1), q_nv.packed),
            "NVFP4 scales": torch.equal(scale_nv_ref.view(torch.uint8).reshape(-1), q_nv.scales)}
    print("equal to torchao, byte for byte:", same)
    assert all(same.values()), "lorakit's MXFP4/NVFP4 bytes equal torchao's"
else:
    print("torchao's MX prototypes do not import here: tests/test_mxfp.py checks the OCP spec's rules instead.")

# %% [markdown]
# **Error on the trained weights and on the loss**, beside section 7's NF4 and INT4 (blocks of
# 64). Relative error per layer as in section 7; the loss with every linear weight but `lm_head`
# replaced by its round trip.

# %%
fmt_err = {name: [] for name in ("int4", "nf4", "mxfp4", "nvfp4")}
for weight in (w for n, w in linears.items() if "lm_head" not in n):
    for name in fmt_err:
        w_hat = mxfp.roundtrip(weight, name) if name in mxfp.FORMATS else quant.dequantize_4bit(quant.quantize_4bit(weight, name))
        fmt_err[name].append((torch.linalg.norm(w_hat - weight) / torch.linalg.norm(weight)).item())
fmt_mean = {name: sum(v) / len(v) for name, v in fmt_err.items()}
for name in ("mxfp4", "nvfp4"):
    loss[name] = evaluate(mxfp.quantize_model_linears(model, name), val, 16, EVAL_BATCHES, seed=0)
fmt_bits = {"int4": 4.5, "nf4": 4.5, "mxfp4": mxfp.bits_per_parameter(q_mx), "nvfp4": mxfp.bits_per_parameter(q_nv)}
for name in fmt_err:
    print(f"{name.upper():>6}: {fmt_bits[name]:.3f} bits/param, mean relative error {fmt_mean[name]:.4f}, "
          f"val loss {loss[name]:.4f} bits/byte ({loss[name] - loss['none']:+.4f})")

fig, ax = plt.subplots(figsize=(6, 4))
for name in fmt_err:
    ax.plot(fmt_bits[name], fmt_mean[name], "o", ms=9, label=name.upper())
ax.set(xlabel="bits per parameter (from the stored bytes)", ylabel="mean relative error ‖W − Ŵ‖/‖W‖",
       title=f"MXFP4 saves {4.5 - fmt_bits['mxfp4']:.2f} bits/param and pays in error "
             f"({fmt_mean['mxfp4'] / fmt_mean['nvfp4']:.2f}× NVFP4's)")
ax.legend(loc="upper right")
plt.show()

# %%
assert fmt_mean["mxfp4"] > fmt_mean["nvfp4"] and fmt_mean["mxfp4"] > fmt_mean["nf4"], \
    "on trained weights MXFP4 has the largest error of the three float formats"
assert abs(fmt_mean["nvfp4"] - fmt_mean["nf4"]) < 0.1 * fmt_mean["nf4"], "NVFP4 and NF4 are within 10 % of each other"
assert all(abs(loss[n] - loss["none"]) < 0.1 for n in ("mxfp4", "nvfp4")), "both change the loss by < 0.1 bits/byte"
if not FAST:
    assert loss["mxfp4"] > loss["nvfp4"] and loss["mxfp4"] > loss["nf4"], "at learner size MXFP4 costs the most loss"

# %% [markdown]
# So on this model **NVFP4 ≈ NF4 < MXFP4** in error at about the same storage (4.5, 4.5 and 4.25
# bits/param; asserted), and at learner size the loss agrees (MXFP4 costs the most; in test mode
# the barely trained model moves by a thousandth of a bit whatever the format). NVFP4 buys its
# precision with blocks of 16 and a scale with 3 mantissa bits; MXFP4's power-of-two scale
# wastes up to a third of the grid or clips the top of a block (exercise 6.5 measures how much of
# its error that costs). Their point is hardware: both decode in the tensor cores of recent GPUs,
# where NF4 needs a table lookup first. The real MiniLM-style checkpoints are not available
# offline here, so this section measures the course model only.

# %% [markdown]
# ## Summary
#
# - Absmax quantization maps the largest magnitude onto the largest code; one outlier inflates
#   every value's error, and blocks of 64 contain it.
# - A 4-bit type is a table of 16 values; INT4 uses 15 of them, FP4 is E2M1 scaled by 1/12, NF4
#   places them at normal quantiles (derived here within 1e-6, in fact bit for bit), with an exact
#   zero and all 16 codes, and uses its codes more evenly than INT4 (asserted). Equal use is its
#   sense of "optimal"; the block maximum (≈ 2.6σ, asserted) is not where NF4 assumes it.
# - Quantize = flatten, blocks, absmax, nearest code (ties down), pack high nibble first; our
#   version equals `lorakit.quant` and both equal bitsandbytes' CPU backend byte for byte;
#   torchao is a close, different dialect.
# - NF4 error on `randn(1024, 1024)`: 0.0728, as published; NF4 is also best on the trained
#   weights (on average and on most layers); the model's loss barely moves at 4 bits with blocks
#   of 64.
# - The loss at 4 bits: NF4 costs the least at learner size (asserted). Take bits away and the type
#   matters more: at learner size NF beats INT at 4, 3 and 2 bits (asserted).
# - Block size trades error for $32/\ell$ bits of constants: 0.5 bits/param at $\ell = 64$ —
#   notebook 07 shrinks that.
#
# ## Exercises
#
# Each checker says whether your answer is right and, if not, what the usual mistake is; it
# states its tolerance, and numbers may be any numeric type. Worked solutions, with the
# reasoning: `notebooks/solutions/nb06.py` (try first).
#
# **Exercise 6.1 — one code by hand.** A value scaled by its block's absmax is $s = 0.3$.
# Which NF4 code (a whole number 0–15, exact) does it get? Hint: find the two neighbouring table
# values and compare $s$ with their midpoint.

# %%
answer = None  # your answer here
check_ex_6_1(answer)

# %% [markdown]
# **Exercise 6.2 — pack the nibbles.** Pack the NF4 codes `[3, 12, 7]` into bytes the way
# bitsandbytes does. Answer: a sequence of whole numbers, one per byte (a list, a tuple, a tensor
# or `bytes`; exact). Hint: section 5 says which nibble the first code goes in and what an odd
# count is padded with.

# %%
answer = None  # your answer here
check_ex_6_2(answer)

# %% [markdown]
# **Exercise 6.3 — the price of a block size.** How many bits per parameter does NF4 with
# blocks of 128 (float32 absmax, no double quantization) store? Answer: a number, accepted
# within 1e-4. Hint: 4 bits of code plus the constant's bits shared by the block.

# %%
answer = None  # your answer here
check_ex_6_3(answer)

# %% [markdown]
# **Exercise 6.4 — predict, then measure: heavy tails (an experiment).** Real weights have heavier
# tails than a normal (kurtosis above 3, section 7). Take the extreme case, a **Laplace**
# distribution (kurtosis 6): `w = torch.distributions.Laplace(0.0, 1.0).sample((1024, 1024))`
# after `torch.manual_seed(0)`. First predict: with blocks of 64, which of INT4, FP4 and NF4 has
# the smallest relative error $\|w - \hat w\|_F / \|w\|_F$ now, and does INT4 lose more or less
# ground than on normal data? Then measure all three (`quant.quantize_4bit`, `quant.dequantize_4bit`).
# Answer: a dict `{"int4": ..., "fp4": ..., "nf4": ...}` of the three relative errors, each
# accepted within 2 % of the checker's own measurement (any seed passes: seeds differ by about 0.1 %).

# %%
answer = None  # your answer here: {"int4": ..., "fp4": ..., "nf4": ...}
check_ex_6_4(answer)

# %% [markdown]
# **Exercise 6.5 — what does MXFP4's power-of-two scale cost? (an experiment)** With
# `W = torch.randn(64, 256, generator=torch.Generator().manual_seed(65))`, measure the relative
# error $\|W - \hat W\|_F/\|W\|_F$ of MXFP4 (`mxfp.roundtrip(W, "mxfp4")`), and of the same E2M1
# codes in blocks of 32 with a **real-valued** scale $\text{absmax}/6$ per block (nothing clipped, the
# whole grid used). Predict first: which share of MXFP4's error is the scale's fault? Answer: the pair
# `(error_mxfp4, error_real_scale)`, each within 1e-4. Hint: `mxfp.e2m1_codes(block / scale)` gives
# the codes and `mxfp.E2M1[codes]` their values.

# %%
from lorakit.exercises.nb06 import check_ex_6_5

answer = None  # your answer here: (error_mxfp4, error_real_scale)
check_ex_6_5(answer)

# %% [markdown]
# ## References
#
# - T. Dettmers, A. Pagnoni, A. Holtzman, L. Zettlemoyer, *QLoRA: Efficient Finetuning of
#   Quantized LLMs*, 2023, arXiv:2305.14314 — NF4 (§3, Appendix E), the exact zero, Table 2
#   (Int4, FP4 E2M1/E3M0, NF4 perplexities).
# - T. Dettmers, M. Lewis, S. Shleifer, L. Zettlemoyer, *8-bit Optimizers via Block-wise
#   Quantization*, 2021, arXiv:2110.02861 — blockwise absmax quantization.
# - T. Dettmers et al., *LLM.int8()*, 2022, arXiv:2208.07339 — outliers in LLM weights and
#   activations (section 2's reason for blocks).
# - D. Yoshida, *NF4 Isn't Information Theoretically Optimal (and that's Good)*, 2023,
#   arXiv:2306.06965 — the block-maximum argument and AF4.
# - S. P. Lloyd, *Least squares quantization in PCM*, 1957/1982 — the minimum-error quantizer NF4
#   is not.
# - bitsandbytes: `bitsandbytes.functional.quantize_4bit` / `dequantize_4bit` (`quant_type="nf4"`
#   or `"fp4"`, `blocksize`), `get_4bit_type` (the tables), `create_normal_map` (NF4 from
#   quantiles, `offset=0.9677083`), `QuantState` (absmax, shape, dtype). torchao:
#   `to_nf4` in `torchao.quantization.quantize_.workflows.nf4.nf4_tensor` (the second dialect). PEFT/transformers reach these through
#   `BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")`.
# - OCP, *Microscaling Formats (MX) Specification v1.0*, 2023 (Open Compute Project) — E2M1, the
#   E8M0 shared scale, blocks of 32 and the scale rule of §6.3 (section 9); B. D. Rouhani et al.,
#   *Microscaling Data Formats for Deep Learning*, 2023, arXiv:2310.10537.
# - NVIDIA, *Introducing NVFP4 for Efficient and Accurate Low-Precision Inference* (NVIDIA technical
#   blog, 2025) and the Blackwell documentation — E2M1 in blocks of 16 with an FP8 E4M3 scale and a
#   per-tensor FP32 scale (section 9). torchao: `torchao.prototype.mx_formats` (`to_mx`,
#   `nvfp4_quantize`, `MXTensor`, `NVFP4Tensor`), the reference section 9 is checked against.
