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
# # 02 — LoRA from scratch
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lorakit/lorakit/blob/v0.1.0/notebooks/02_lora_from_scratch.ipynb)
#
# Build a LoRA layer by hand, put it into a pretrained GPT by module name, train it on a new
# domain, and show that what you built computes exactly what Hugging Face PEFT computes.
#
# **You will**
# - build $y = xW_0 + \mathrm{dropout}(x)\,A B \cdot \frac{\alpha}{r}$ and check it against `lorakit.lora`;
# - train only $A$ and $B$ (a few percent of the weights) on the Python docs, against full
#   fine-tuning, and measure how much of full fine-tuning's gain LoRA gets;
# - merge, unmerge, save a kilobyte-sized adapter, switch between two domains, and round-trip
#   the adapter through PEFT's file format.
#
# **Runtime** (measured: top to bottom in a fresh kernel, base model cached, by `bench/course_runtime.py`)
#
# | device | test mode (`LORAKIT_FAST=1`) | learner size |
# |---|---|---|
# | 2-core x86_64 CPU, otherwise idle (load ≤ 2), 2026-11-29 | 10 s | 69 s |

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
import copy
import json
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
from matplotlib import patches

from lorakit.quiet import quiet_import

peft = quiet_import("peft")  # the reference library, imported without its start-up noise

from lorakit import lora
from lorakit.data import load_splits
from lorakit.exercises.nb02 import check_ex_2_1, check_ex_2_2, check_ex_2_3, check_ex_2_4, toy_problem
from lorakit.adapters import adapter_state, load_adapter, load_peft_adapter, save_adapter, save_peft_adapter
from lorakit.lora import (
    LoRAConfig, inject_lora, lora_layers, merge_lora, parameter_report, remove_lora, unmerge_lora,
)
from lorakit.train import base_model, evaluate, fast_mode, save_model, set_seed, train

FAST = fast_mode()
STEPS = 40 if FAST else 100          # training steps, the same for every run below
BATCH = 16 if FAST else 32
EVAL_EVERY = 10 if FAST else 20
EVAL_BATCHES = 6 if FAST else 8
R, ALPHA = 8, 16                     # rank and alpha of every adapter in this notebook
LORA_LR, FULL_LR = 1e-2, 1e-3
TARGETS = ["q_proj", "v_proj"]       # the LoRA paper's choice
WORK = Path(tempfile.mkdtemp(prefix="lorakit02-"))

base, info = base_model(progress=not FAST)
docs_train, docs_val = load_splits("docs", 400_000 if FAST else None)
tests_train, tests_val = load_splits("tests", 1_000_000 if FAST else 4_000_000)
base_docs = evaluate(base, docs_val, BATCH, EVAL_BATCHES)
base_tests = evaluate(base, tests_val, BATCH, EVAL_BATCHES)
print(f"base GPT: {info['config']['n_layer']} layers, d={info['config']['d_model']}, "
      f"context {info['config']['context']}; val loss on docs {base_docs:.3f} bits/byte, "
      f"on tests {base_tests:.3f} bits/byte")

# %% [markdown]
# ## 1. The layer
#
# A pretrained linear layer computes $y = x W_0$ with $x \in \mathbb{R}^{1 \times m}$ and
# $W_0 \in \mathbb{R}^{m \times n}$ ($m$ = in, $n$ = out). Full fine-tuning learns
# $W_0 + \Delta W$; LoRA restricts the update to rank $r$:
#
# $$\Delta W = A B,\qquad A \in \mathbb{R}^{m \times r},\; B \in \mathbb{R}^{r \times n},\qquad
# y = x W_0 + \mathrm{dropout}(x)\, A B \cdot s,\qquad s = \frac{\alpha}{r}\ \ (\text{rsLoRA: } s = \tfrac{\alpha}{\sqrt r}).$$
#
# - $W_0$ is frozen: no gradient, no optimizer state.
# - $A$ starts random, uniform in $\pm 1/\sqrt{m}$ (PEFT's `kaiming_uniform(a=√5)`), and $B$ starts at
#   **zero**, so $AB = 0$: before training the model is exactly the pretrained one.
# - **Why one factor at zero, and why $B$?** One factor must be zero for $AB = 0$ at the start; it
#   cannot be both, because each factor's gradient is proportional to the other
#   ($\partial L/\partial A = s\,x^\top G B^\top$, $\partial L/\partial B = s\,(xA)^\top G$ with
#   $G = \partial L/\partial y$): from $A = B = 0$ nothing ever moves. Either single choice trains
#   (exercise 2.4 measures all three); the LoRA paper and PEFT zero $B$, so at step 0 only $B$
#   moves, driven through a fixed random $A$. Hayou et al. (2024) compare the two choices and find
#   zeroing $B$ tolerates larger learning rates.
# - Dropout acts on the input of the LoRA path only; the frozen path sees the clean $x$.
# - `nn.Linear` stores $W_0^\top$ ($n \times m$) as `weight` and computes `x @ weight.T`.

# %%
class LoRALinear(nn.Module):
    """LoRA written out in full: frozen base + dropout(x) @ A @ B * scaling.

    The package's ``lorakit.lora.LoRALinear`` is this class with its hyper-parameters in one
    ``LoRAConfig`` (below), a ``merged`` flag (§4) and A, B placed where a 4-bit base keeps its
    weights (notebook 08); ``inject_lora`` checks the inputs before it builds one."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        m, n = base.in_features, base.out_features
        A_t = torch.empty(r, m)                         # PEFT initialises the r×m matrix ...
        nn.init.kaiming_uniform_(A_t, a=5 ** 0.5)       # ... uniform in ±1/sqrt(m)
        self.A = nn.Parameter(A_t.t().contiguous())     # m×r
        self.B = nn.Parameter(torch.zeros(r, n))        # r×n, zero
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        return self.base(x) + self.dropout(x) @ self.A @ self.B * self.scaling


torch.manual_seed(0)
linear = nn.Linear(128, 96, bias=False)
set_seed(1)
mine = LoRALinear(linear, r=R, alpha=ALPHA)          # ours, built above
set_seed(1)
theirs = lora.LoRALinear(linear, lora.LoRAConfig(r=R, alpha=ALPHA))   # the package's
x = torch.randn(4, 10, 128)
print(f"A: {tuple(mine.A.shape)} (in×r), B: {tuple(mine.B.shape)} (r×out), scaling α/r = {mine.scaling}")
print(f"|A| max = {mine.A.abs().max():.4f}, bound 1/sqrt(in) = {128 ** -0.5:.4f}")

# %%
assert torch.equal(mine(x), linear(x)), "at init (B = 0) the LoRA layer must equal the base exactly"
assert torch.equal(mine.A, theirs.A) and torch.equal(mine.B, theirs.B), "same seed: same A and B as lorakit"
assert mine.A.abs().max() <= 128 ** -0.5, "A must lie within ±1/sqrt(in)"
with torch.no_grad():
    mine.B.normal_(); theirs.B.copy_(mine.B)     # pretend B has trained
want = x @ linear.weight.T + x @ mine.A @ mine.B * (ALPHA / R)
assert torch.allclose(mine(x), want, atol=1e-5), "forward must be x W0 + x A B · α/r"
assert torch.allclose(mine(x), theirs(x), atol=1e-6), "our from-scratch layer must equal lorakit.lora.LoRALinear"
print("from-scratch layer == lorakit.lora.LoRALinear; init output == base output")

# %% [markdown]
# The layer as a picture (the LoRA paper's Figure 1, redrawn in this course's row-vector notation,
# with the shapes of the course model's attention projections):

# %%
def draw_lora(m: int, n: int, r: int):
    """LoRA's two paths with their shapes: frozen x W0 and trainable x A B · α/r, added."""
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.set_xlim(0, 10.4)
    ax.set_ylim(0, 5.2)
    ax.set_axis_off()

    def box(x, y, w, h, text, color):
        ax.add_patch(patches.FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=color, ec="k"))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=10)

    def arrow(x0, y0, x1, y1):
        ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="->", lw=1.5))

    box(0.2, 2.1, 1.3, 1.0, f"x\n1×m = 1×{m}", "white")
    box(3.0, 3.3, 3.2, 1.5, f"W₀ (frozen)\nm×n = {m}×{n}\nno gradient, no optimizer state", "0.85")
    box(2.4, 0.3, 1.9, 1.4, f"A (trainable)\nm×r = {m}×{r}\nrandom at init", "#cfe2f3")
    box(5.0, 0.3, 1.9, 1.4, f"B (trainable)\nr×n = {r}×{n}\nzero at init", "#cfe2f3")
    box(7.4, 0.55, 1.1, 0.9, "· α/r", "#fff2cc")
    ax.add_patch(patches.Circle((8.95, 2.6), 0.3, fc="white", ec="k"))
    ax.text(8.95, 2.6, "+", ha="center", va="center", fontsize=14)
    box(9.45, 2.1, 0.9, 1.0, f"y\n1×{n}", "white")
    arrow(1.5, 2.8, 3.0, 4.0)
    arrow(1.5, 2.4, 2.4, 1.0)
    arrow(4.3, 1.0, 5.0, 1.0)
    ax.text(4.65, 1.15, f"1×{r}", ha="center", fontsize=8)
    arrow(6.9, 1.0, 7.4, 1.0)
    arrow(6.2, 4.0, 8.8, 2.85)
    arrow(8.5, 1.0, 8.8, 2.35)
    arrow(9.25, 2.6, 9.45, 2.6)
    ax.set_title(f"y = x W₀ + x A B · α/r: rank(AB) ≤ r = {r}; A, B hold r(m + n) = {r * (m + n):,} "
                 f"numbers, W₀ holds m·n = {m * n:,}", fontsize=10)
    plt.show()


d_model = info["config"]["d_model"]
draw_lora(d_model, d_model, R)

# %% [markdown]
# The update has rank at most $r$ however large the layer is: a picture of $\Delta W = s\,AB$
# with $B$ filled in shows it: $r = 8$ singular values out of 96 stand above $10^{-4}\,\sigma_1$; the rest
# are float32 rounding noise (an exact zero in exact arithmetic).

# %%
dW = (mine.A @ mine.B * mine.scaling).detach()
sv = torch.linalg.svdvals(dW)
fig, ax = plt.subplots(figsize=(6, 4))
ax.semilogy(range(1, len(sv) + 1), sv.clamp_min(1e-12), "o-", ms=3)
ax.axvline(R, color="gray", ls="--", label=f"r = {R}")
n_above = (sv > 1e-4 * sv[0]).sum().item()
ax.axhline(1e-4 * sv[0].item(), color="tab:red", ls=":", label="10⁻⁴ σ₁ (below: float32 rounding)")
ax.set(title=f"ΔW = s·AB: {n_above} singular values above 10⁻⁴ σ₁ (r = {R})", xlabel="index i",
       ylabel="singular value σᵢ (log)")
ax.legend(); plt.show()
assert n_above == R, "ΔW = AB must have rank r: exactly r singular values above 1e-4 of σ1"

# %% [markdown]
# ## 2. Injecting LoRA into the GPT by module name
#
# `inject_lora(model, targets, r, alpha)` walks `model.named_modules()`, replaces every
# `nn.Linear` whose path ends in a target name (`"q_proj"` matches `blocks.0.attn.q_proj`) by a
# `LoRALinear`, and freezes **everything** except the new $A$ and $B$ (the matching and the swap by
# dotted name live in `lorakit.targets`: `resolve_targets`, `replace_module`). Per targeted
# $m \times n$ matrix LoRA adds $r(m + n)$ trainable parameters instead of $mn$. The
# hyper-parameters travel as one frozen record, `LoRAConfig(r, alpha, dropout, rslora, targets)`
# (PEFT's `LoraConfig`): every injected layer holds it as `layer.config`, with
# `config.scaling` $= \alpha/r$, and an adapter file stores it.

# %%
lora_model = copy.deepcopy(base)
before = parameter_report(lora_model)
names = inject_lora(lora_model, TARGETS, r=R, alpha=ALPHA)
after = parameter_report(lora_model)
d = info["config"]["d_model"]
print(f"wrapped {len(names)} layers: {names[:2]} ...")
print(lora_layers(lora_model)[names[0]].config)
print(f"before: trainable {before['trainable']:,} of {before['total']:,}")
print(f"after:  trainable {after['trainable']:,} of {after['total']:,} ({after['percent']:.2f} %)")

# %%
assert after["trainable"] == len(names) * R * (d + d), "each d×d target adds r(d + d) parameters"
assert after["total"] == before["total"] + after["trainable"], "the base weights are all still there"
assert after["percent"] < 5, "LoRA trains a few percent of the model"
assert all(layer.config == LoRAConfig(r=R, alpha=ALPHA, targets=TARGETS) for layer in lora_layers(lora_model).values()), \
    "every layer holds the one LoRAConfig the keywords describe"
probe = docs_val[: 2 * base.cfg.context].long().view(2, -1)
assert torch.equal(lora_model(probe)[0], base(probe)[0]), "after injection the model is exactly the base"
print("only A and B are trainable; the injected model still equals the base exactly")

# %% [markdown]
# The share is printed above: about 1.9 % at learner size and 2.9 % in test mode (a smaller
# model, so the same $r$ is a larger share); the assert checks it stays under 5 %.
#
# ## 3. Training on a new domain: LoRA against full fine-tuning
#
# The base learned the standard library's source code. The new domain is the Python language
# reference (`pydoc_data.topics`): prose, not code. Same data, same number of steps, same
# batches for both runs.
#
# **Why LoRA gets a 10× larger learning rate.** AdamW moves each trainable entry by about the
# learning rate per step, whatever the gradient's size. Full fine-tuning moves every entry of
# $W$ directly; LoRA moves $\Delta W = s\,AB$ only through $B$ at first, and each step's change
# $s\,A\,\delta B$ passes through $A$, whose entries are about $1/\sqrt{m}$ — so at one learning
# rate, LoRA's update to $W$ is much smaller per step. A larger learning rate compensates. The
# factor 10 here is a common starting point, not a law: notebook 04 ("choosing a fine-tune")
# tunes the learning rate of each method and measures the rule.

# %%
set_seed(0)
hist_lora = train(lora_model, docs_train, docs_val, steps=STEPS, batch_size=BATCH, lr=LORA_LR,
                  eval_every=EVAL_EVERY, eval_batches=EVAL_BATCHES, desc="LoRA on docs", progress=not FAST)
full_model = copy.deepcopy(base)
for p in full_model.parameters():
    p.requires_grad_(True)
set_seed(0)
hist_full = train(full_model, docs_train, docs_val, steps=STEPS, batch_size=BATCH, lr=FULL_LR,
                  eval_every=EVAL_EVERY, eval_batches=EVAL_BATCHES, desc="full fine-tune on docs",
                  progress=not FAST)
lora_docs = evaluate(lora_model, docs_val, BATCH, EVAL_BATCHES)
full_docs = evaluate(full_model, docs_val, BATCH, EVAL_BATCHES)
print(f"val loss on docs: base {base_docs:.3f}, LoRA {lora_docs:.3f}, full fine-tune {full_docs:.3f} bits/byte")
print(f"trainable parameters: LoRA {after['trainable']:,}, full {before['total']:,}; "
      f"time LoRA {hist_lora.seconds:.1f} s, full {hist_full.seconds:.1f} s")

# %% [markdown]
# `train` evaluates *after* each optimizer step, so its first point is after one step (where full
# fine-tuning, with every weight moving at once, is briefly worse than the base). The curves
# below count the optimizer steps taken and start both at step 0 = the base itself, which LoRA
# was just asserted to equal.

# %%
def steps_taken(hist):
    return [0] + [s + 1 for s in hist.eval_steps], [base_docs] + list(hist.val_bpb)


fig, ax = plt.subplots(figsize=(6, 4))
ax.axhline(base_docs, color="gray", ls="--", label="frozen base")
ax.plot(*steps_taken(hist_full), "s-", label=f"full fine-tune ({before['total']:,} params)")
ax.plot(*steps_taken(hist_lora), "o-", label=f"LoRA r={R} ({after['trainable']:,} params)")
ax.set(title="LoRA adapts to the docs; full fine-tuning goes further", xlabel="optimizer steps taken",
       ylabel="val loss on docs (bits/byte)")
ax.legend(); plt.show()

# %% [markdown]
# What this measures, for this one setting ($r = 8$ on `q_proj`, `v_proj`, these steps and
# learning rates): both methods clearly improve on the new domain, and full fine-tuning — every
# weight trainable — goes further. LoRA gets a fraction of full
# fine-tuning's gain (printed below: half at learner size, about a quarter in test mode). Notebook 04
# measures how the target modules, the rank and a tuned learning rate change that fraction.

# %%
gain_lora, gain_full = base_docs - lora_docs, base_docs - full_docs
print(f"LoRA gains {gain_lora:.3f} bits/byte, full fine-tuning {gain_full:.3f}: "
      f"LoRA reaches {gain_lora / gain_full:.0%} of full fine-tuning's gain")
assert gain_lora > 0.03, "LoRA must clearly improve on the new domain"
assert gain_full > 0.03, "full fine-tuning must clearly improve on the new domain"
assert gain_full > gain_lora, "full fine-tuning goes further than LoRA on q, v in the same steps"
assert 0.1 < gain_lora / gain_full < 1, "LoRA gets a real fraction of full fine-tuning's gain, not all of it"

# %% [markdown]
# ## 4. Merging: the adapter costs nothing at inference
#
# Because $xW_0 + x\,AB\,s = x(W_0 + s\,AB)$, the update can be folded into the weight. In
# `nn.Linear`'s layout that is `weight += s * (A @ B).T`. A merged layer is a plain matrix
# multiply again; unmerging subtracts the same product and restores $W_0$ up to rounding.

# %%
merged = copy.deepcopy(lora_model).eval()
W0 = merged.blocks[0].attn.q_proj.base.weight.detach().clone()
with torch.no_grad():
    y_unmerged = merged(probe)[0]
merge_lora(merged)
with torch.no_grad():
    y_merged = merged(probe)[0]
plain = copy.deepcopy(merged)
remove_lora(plain, merge=True)          # plain nn.Linear layers holding the merged weights


from lorakit.siblings import compare_latency, forward_flops  # noqa: E402  (notebook 05 §7 builds them)

contenders = {"plain": plain, "merged": merged, "unmerged": lora_model.eval()}
flops = {name: forward_flops(m, probe.shape[1], probe.shape[0]) for name, m in contenders.items()}
# interleaved, under torch.inference_mode(), median of several rounds: load hits all three alike
latency = compare_latency(contenders, probe.shape[0], probe.shape[1], repeats=3 if FAST else 5, calls=5 if FAST else 10)
print(f"max |merged - unmerged| logit = {(y_merged - y_unmerged).abs().max():.2e}")
print("FLOPs per forward (exact): " + ", ".join(f"{n} {f:,}" for n, f in flops.items()))
print(f"time per forward, relative to plain (interleaved, a shared machine: a ratio near 1 is noise): "
      f"merged {latency['merged'] / latency['plain']:.2f}×, unmerged {latency['unmerged'] / latency['plain']:.2f}× "
      f"(plain {1e3 * latency['plain']:.2f} ms)")

# %%
assert torch.allclose(y_merged, y_unmerged, atol=1e-4), "merging must not change the outputs"
assert flops["merged"] == flops["plain"] < flops["unmerged"], "merged: the plain model's arithmetic, nothing more"
with torch.no_grad():
    assert torch.equal(plain(probe)[0], y_merged), "a merged LoRA model computes what a plain one does"
unmerge_lora(merged)
assert torch.allclose(merged.blocks[0].attn.q_proj.base.weight, W0, atol=1e-6), "unmerge must restore W0"
print("merge keeps the outputs; unmerge restores W0 (max diff "
      f"{(merged.blocks[0].attn.q_proj.base.weight - W0).abs().max():.1e})")

# %% [markdown]
# ## 5. The adapter file
#
# Only $A$ and $B$ need saving: the base is shared. `save_adapter` writes them as safetensors
# (no pickle, nothing executes on load) with its `LoRAConfig` (the targets as exact paths) in the metadata.
# `load_adapter` checks every name and shape before touching the model, injects LoRA into a
# fresh base if needed, and copies the tensors bit for bit.

# %%
docs_adapter = save_adapter(lora_model, WORK / "docs.safetensors")
save_model(base, WORK / "base.safetensors")
kb_adapter = docs_adapter.stat().st_size / 1024
kb_base = (WORK / "base.safetensors").stat().st_size / 1024
print(f"adapter {kb_adapter:.1f} kB vs base {kb_base:.0f} kB ({100 * kb_adapter / kb_base:.2f} %)")

fresh, _ = base_model(progress=False)
load_adapter(fresh, docs_adapter)
with torch.no_grad():
    same = torch.equal(fresh(probe)[0], lora_model(probe)[0])
print(f"fresh base + adapter file == trained model: {same}")

# %%
assert kb_adapter < 0.05 * kb_base, "the adapter must be a small fraction of the base"
assert same, "loading the adapter into a fresh base must reproduce the trained model exactly"

# %% [markdown]
# ## 6. Two adapters on one base
#
# One frozen base, one small file per domain. Train a second adapter on another domain — the
# standard library's **tests** — from the same base, then switch by loading files. Each adapter
# should help its own domain most, and the base weights must not change at all.

# %%
shared, _ = base_model(progress=False)
W_base = {k: v.clone() for k, v in shared.state_dict().items()}
inject_lora(shared, TARGETS, r=R, alpha=ALPHA)
set_seed(0)
train(shared, tests_train, tests_val, steps=STEPS, batch_size=BATCH, lr=LORA_LR, desc="LoRA on tests",
      progress=not FAST)
tests_adapter = save_adapter(shared, WORK / "tests.safetensors")

table = {"base": (base_docs, base_tests)}
for name, path in (("docs adapter", docs_adapter), ("tests adapter", tests_adapter)):
    load_adapter(shared, path)                      # switching = loading a file
    table[name] = (evaluate(shared, docs_val, BATCH, EVAL_BATCHES), evaluate(shared, tests_val, BATCH, EVAL_BATCHES))
for name, (dv, tv) in table.items():
    print(f"{name:>14}: docs {dv:.3f}  tests {tv:.3f} bits/byte")

# %%
fig, ax = plt.subplots(figsize=(6, 4))
xs = torch.arange(2).float()
for i, (name, vals) in enumerate(table.items()):
    ax.bar(xs + (i - 1) * 0.27, vals, width=0.27, label=name)
ax.set_xticks(xs, ["docs val", "tests val"])
ax.set_ylim(min(min(v) for v in table.values()) * 0.9, max(max(v) for v in table.values()) * 1.03)
ax.set(title="Each adapter improves its own domain most", ylabel="val loss (bits/byte)")
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))   # outside the axes: never over a bar
plt.tight_layout(); plt.show()

# %%
(d_docs, d_tests), (t_docs, t_tests) = table["docs adapter"], table["tests adapter"]
assert d_docs < base_docs and d_docs < t_docs, "the docs adapter must be best on docs"
assert t_tests < base_tests and t_tests < d_tests, "the tests adapter must be best on tests"
base_now = {k.replace(".base.", "."): v for k, v in shared.state_dict().items() if not k.endswith((".A", ".B"))}
assert base_now.keys() == W_base.keys() and all(torch.equal(base_now[k], W_base[k]) for k in W_base), \
    "training and switching adapters must leave every base weight bit-for-bit unchanged"
print("two adapters, one untouched base: each adapter wins on its own domain")

# %% [markdown]
# ## 7. The same adapter in PEFT
#
# The LoRA paper and PEFT write the layer as $h = W_0 x + B_{\text{peft}} A_{\text{peft}} x$ (column
# vectors), and PEFT stores both factors as `nn.Linear` weights (out×in). Matching the two:
#
# | lorakit (row vectors) | shape | PEFT | shape |
# |---|---|---|---|
# | `A` | $m \times r$ | `lora_A.weight` $= A^\top$ | $r \times m$ |
# | `B` | $r \times n$ | `lora_B.weight` $= B^\top$ | $n \times r$ |
#
# since `lora_B(lora_A(x))` $= x A_{\text{peft}}^\top B_{\text{peft}}^\top = x A B$. Give PEFT the
# transposed weights on the same base and it must compute the same logits.

# %%
peft_model = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=R, lora_alpha=ALPHA, target_modules=TARGETS))
with torch.no_grad():
    for name, layer in lora_layers(lora_model).items():
        target = peft_model.base_model.model.get_submodule(name)
        target.lora_A["default"].weight.copy_(layer.A.T)      # r×in
        target.lora_B["default"].weight.copy_(layer.B.T)      # out×r
    peft_model.eval()
    diff = (peft_model(probe)[0] - lora_model(probe)[0]).abs().max().item()
name0 = names[0]
print(f"{name0}: lorakit A {tuple(lora_layers(lora_model)[name0].A.shape)} -> PEFT lora_A.weight "
      f"{tuple(peft_model.base_model.model.get_submodule(name0).lora_A['default'].weight.shape)}")
print(f"max |PEFT - lorakit| logit = {diff:.2e}")

# %%
assert diff < 1e-4, "PEFT with lora_A.weight = Aᵀ, lora_B.weight = Bᵀ must compute our outputs"

# %% [markdown]
# `save_peft_adapter` writes the folder PEFT itself writes — `adapter_config.json` and
# `adapter_model.safetensors` with keys `base_model.model.<path>.lora_A.weight` — so
# `PeftModel.from_pretrained` loads a lorakit adapter, and `load_peft_adapter` brings a PEFT
# adapter back.

# %%
folder = save_peft_adapter(lora_model, WORK / "docs-peft")
config = json.loads((folder / "adapter_config.json").read_text())
print({k: config[k] for k in ("peft_type", "r", "lora_alpha", "use_rslora")}, "targets:", config["target_modules"][:2], "...")
for f in sorted(folder.iterdir()):
    print(f"  {f.name}: {f.stat().st_size / 1024:.1f} kB")
from_peft = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(folder)).eval()
back = copy.deepcopy(base)
load_peft_adapter(back, folder)
with torch.no_grad():
    diff_peft = (from_peft(probe)[0] - lora_model(probe)[0]).abs().max().item()
    same_back = torch.equal(back(probe)[0], lora_model(probe)[0])
print(f"PeftModel.from_pretrained vs lorakit: max diff {diff_peft:.2e}; back into lorakit bit-exact: {same_back}")

# %%
assert diff_peft < 1e-4, "PEFT must load our PEFT-format adapter and compute the same outputs"
assert same_back, "lorakit -> PEFT format -> lorakit must be bit-exact"

# %% [markdown]
# ## Summary
#
# - A LoRA layer is $xW_0 + \mathrm{dropout}(x)AB\cdot\alpha/r$; with $B = 0$ it equals the base exactly, and our build equals `lorakit.lora.LoRALinear`.
# - One factor starts at zero so the adapted model starts as the base; not both, or nothing moves.
# - Injection by module name leaves only $A$ and $B$ trainable: a few percent of the weights (< 5 %, asserted).
# - On the new domain LoRA ($r = 8$ on q, v) clearly improves the validation loss, and reaches a
#   fraction of full fine-tuning's gain in the same steps (asserted between 10 % and 100 %);
#   notebook 04 measures what closes the gap.
# - Merging folds $s\,(AB)^\top$ into the weight: same outputs, plain-Linear cost; unmerging restores $W_0$.
# - An adapter file is a small fraction of the base and reloads bit for bit; two adapters share one untouched base, each best on its own domain.
# - PEFT stores $A^\top$ and $B^\top$; given those it computes our outputs, and loads our PEFT-format folder.
#
# ## Exercises
#
# Each checker says whether your answer is right and, if not, what the usual mistake is; it
# states its tolerance. Worked solutions, with the reasoning: `notebooks/solutions/nb02.py`
# (try first).

# %% [markdown]
# **Exercise 2.1 — LoRA's backward by hand.** For $y = xW_0 + s\,xAB$ with $x$ of shape $k \times m$
# and an upstream gradient $G = \partial L / \partial y$ ($k \times n$), write
# `lora_backward(x, W0, A, B, s, G)` returning `(grad_A, grad_B, grad_x)` with matrix products
# only (no autograd). The checker compares with autograd in float64 (tolerance 1e-8). Which of
# the three is zero at initialisation, and what does that mean for the first step?
# *Hint:* for $z = xM$, $\partial L/\partial M = x^\top\,\partial L/\partial z$ and
# $\partial L/\partial x = \partial L/\partial z\,M^\top$; apply it one factor at a time.

# %%
def lora_backward(x, W0, A, B, s, G):
    ...  # your code here: return grad_A, grad_B, grad_x


answer = None  # set to lora_backward once written
check_ex_2_1(answer)

# %% [markdown]
# **Exercise 2.2 — merge by hand.** Write a function `merge(W0, A, B, scaling)` that returns the
# merged `nn.Linear` weight, where `W0` is the layer's `weight` (out×in), `A` is in×r and `B` is
# r×out. It must return a new tensor and leave `W0` unchanged (the base is shared; unmerging
# needs it). Answer: the function, checked within 1e-5. *Hint:* which layout is $AB$ in, and
# which is `weight`?

# %%
answer = None  # your answer here: a function merge(W0, A, B, scaling) -> tensor (out×in)
check_ex_2_2(answer)

# %% [markdown]
# **Exercise 2.3 — to PEFT's orientation.** Write `to_peft(A, B)` returning the pair
# `(lora_A_weight, lora_B_weight)` that PEFT would store for our `A` (in×r) and `B` (r×out).
# Answer: the function (exact). *Hint:* see the table in section 7.

# %%
answer = None  # your answer here: a function to_peft(A, B) -> (tensor r×in, tensor out×r)
check_ex_2_3(answer)

# %% [markdown]
# **Exercise 2.4 — which factor starts at zero? (an experiment).** `x, W0, target = toy_problem()`
# is a small regression whose answer is $W_0 + \Delta W^*$ with a rank-2 $\Delta W^*$. Write
# `final_loss(A0, B0)` that trains $A$ and $B$ (rank 2; $W_0$ frozen) with Adam from the given
# start for about 100 steps and returns the final mean squared error of
# $xW_0 + xAB$ against `target`. Predict first: starting from (A random, B = 0), (A = 0, B random)
# and (A = 0, B = 0) — all three begin at the same loss, since $AB = 0$ — which ones learn? The
# checker runs all three (the ones that learn must halve the loss; the one that does not must
# not move by more than 1e-6 relative). *Hint:* `torch.optim.Adam([A, B], lr=2e-2)`.

# %%
def final_loss(A0, B0):
    ...  # your code here


answer = None  # set to final_loss once written
check_ex_2_4(answer)

# %% [markdown]
# ## References
#
# - E. J. Hu et al., *LoRA: Low-Rank Adaptation of Large Language Models*, 2021, arXiv:2106.09685 —
#   the layer, its initialisation (B = 0), α/r, merging for free inference, Figure 1.
# - S. Hayou, N. Ghosh, B. Yu, *The Impact of Initialization on LoRA Finetuning Dynamics*, 2024,
#   arXiv:2406.08447 — zeroing B rather than A allows larger learning rates.
# - D. Kalajdzievski, *A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA* (rsLoRA),
#   2023, arXiv:2312.03732 — the α/√r scaling (notebook 03).
# - PEFT: `peft.LoraConfig` (`r`, `lora_alpha`, `target_modules`, `lora_dropout`, `use_rslora`),
#   `peft.get_peft_model` (injection), `peft.tuners.lora.layer.Linear` (the layer:
#   `lora_A`/`lora_B`, `reset_lora_parameters` for the init, `merge`/`unmerge`),
#   `PeftModel.merge_and_unload`, `PeftModel.save_pretrained`/`PeftModel.from_pretrained`
#   (the adapter folder of section 7).
