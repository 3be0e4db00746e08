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
# # 01 — Low-rank updates: why $\Delta W = AB$
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lorakit/lorakit/blob/v0.1.0/notebooks/01_low_rank_updates.ipynb)
#
# After this notebook you can say why a fine-tuning update can be stored as two thin matrices,
# what that saves on real model shapes, and what a real fine-tuning update's spectrum looks like.
#
# **You will**
# - state the notation used in the whole course and write full fine-tuning as $W' = W_0 + \Delta W$;
# - state the best rank-$r$ approximation from the SVD (Eckart–Young), sketch its proof and check
#   it numerically;
# - count parameters on GPT-3 175B and Llama-7B shapes, then **measure** the spectrum of a real
#   full fine-tuning update $\Delta W$ against a random matrix of the same shape and size.
#
# **Runtime** (measured: top to bottom in a fresh kernel, base model cached, by `bench/course_runtime.py`)
#
# | device | test mode (`LORAKIT_FAST=1`) | learner size |
# |---|---|---|
# | 2-core x86_64 CPU, otherwise idle (load ≤ 2), 2026-11-29 | 6 s | 67 s |

# %%
# Colab only: install lorakit (does nothing anywhere else).
# Written by scripts/colab.py from pyproject.toml [tool.lorakit.colab]: a fork edits that, not this.
import sys

if "google.colab" in sys.modules:
    import glob
    import subprocess

    uploaded = sorted(glob.glob("/content/lorakit-*.whl"))  # a wheel uploaded by hand wins
    source = "file://" + uploaded[-1] if uploaded else "git+https://github.com/lorakit/lorakit@v0.1.0"
    if subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"lorakit @ {source}"]).returncode:
        raise SystemExit(f"Installing lorakit from {source} failed (pip says why above). Instead: on your "
                         "computer, in the course folder, run `make wheel`; upload dist/lorakit-0.1.0-py3-none-any.whl "
                         "with Colab's Files panel (left), then run this cell again.")

# %%
import copy

import matplotlib.pyplot as plt
import torch
from matplotlib import cbook

from lorakit import lowrank
from lorakit.data import load_splits
from lorakit.exercises.nb01 import check_ex_1_1, check_ex_1_2, check_ex_1_3, check_ex_1_4, exercise_matrix
from lorakit.memory import MODEL_SHAPES, linear_shapes, parameter_counts
from lorakit.train import base_model, evaluate, fast_mode, set_seed, train
from lorakit.widgets import rank_figure

FAST = fast_mode()
FT_STEPS = 60 if FAST else 300       # full fine-tuning steps on the new domain
BATCH = 16 if FAST else 32
EVAL_BATCHES = 6 if FAST else 10
FT_LR = 1e-3
R_SHOW = 8                           # the rank we report energies at
_ = torch.manual_seed(0)             # (it returns the generator; nothing to print)

# %% [markdown]
# ## 1. Notation (used in every notebook)
#
# We use the **row-vector convention**: an input is a row $x \in \mathbb{R}^{1 \times m}$ and a
# linear layer computes
#
# $$y = x W_0, \qquad W_0 \in \mathbb{R}^{m \times n}\quad (m = \text{in},\ n = \text{out}).$$
#
# **Full fine-tuning** changes every entry: $W' = W_0 + \Delta W$ with $\Delta W \in
# \mathbb{R}^{m \times n}$, i.e. $m n$ new numbers per layer. **LoRA** bets that $\Delta W$ has
# low rank and stores it as a product
#
# $$\Delta W = A B,\qquad A \in \mathbb{R}^{m \times r},\quad B \in \mathbb{R}^{r \times n},\quad r \ll \min(m, n),$$
#
# which is $r(m + n)$ numbers. (The LoRA paper and PEFT write the transpose, $W_0 + BA$ acting on
# column vectors; notebook 02 maps one onto the other.) PyTorch's `nn.Linear(m, n)` stores
# $W_0^\top$ ($n \times m$) as `weight`, so $W_0$ = `linear.weight.T`:

# %%
layer = torch.nn.Linear(6, 4, bias=False)
W0 = layer.weight.detach().T            # m×n = 6×4
x = torch.randn(3, 6)                   # three input rows
assert torch.allclose(layer(x), x @ W0, atol=1e-6), "nn.Linear computes y = x W0 with W0 = weight.T"
print(f"W0 is {tuple(W0.shape)} (in×out); nn.Linear.weight is {tuple(layer.weight.shape)} (out×in)")

# %% [markdown]
# ## 2. Rank
#
# The rank of a matrix is the number of linearly independent columns (equivalently rows). A
# product $AB$ with $A \in \mathbb{R}^{m\times r}$ has rank at most $r$: every column of $AB$ is a
# combination of the $r$ columns of $A$. Equivalently $AB = \sum_{k=1}^{r} a_k b_k$, a sum of $r$
# outer products of a column $a_k$ of $A$ with a row $b_k$ of $B$.

# %%
m, n, r = 64, 48, 3
A, B = torch.randn(m, r, dtype=torch.float64), torch.randn(r, n, dtype=torch.float64)
dW = A @ B
outer_sum = sum(torch.outer(A[:, k], B[k]) for k in range(r))
assert torch.allclose(dW, outer_sum), "AB is the sum of r outer products"
assert torch.linalg.matrix_rank(dW) == r, "a product through r dimensions has rank r"
print(f"ΔW = AB is {m}×{n} ({m * n:,} numbers) but has rank {int(torch.linalg.matrix_rank(dW))}; "
      f"A and B hold {r * (m + n):,} numbers")

# %% [markdown]
# ## 3. The singular value decomposition
#
# Every real $W \in \mathbb{R}^{m \times n}$ factors as
#
# $$W = U \Sigma V^\top = \sum_{i=1}^{k} \sigma_i\, u_i v_i^\top,\qquad k = \min(m, n),$$
#
# with orthonormal columns $U \in \mathbb{R}^{m\times k}$, $V \in \mathbb{R}^{n \times k}$ and
# $\sigma_1 \ge \sigma_2 \ge \dots \ge \sigma_k \ge 0$. The rank is the number of non-zero
# $\sigma_i$, and $\|W\|_F^2 = \sum_i \sigma_i^2$: the squared singular values split the
# matrix's "energy" among orthogonal directions.

# %%
W = torch.randn(40, 30, dtype=torch.float64)
U, s, Vh = torch.linalg.svd(W, full_matrices=False)
assert torch.allclose(U @ torch.diag(s) @ Vh, W), "U Σ Vᵀ rebuilds W"
assert torch.allclose(U.T @ U, torch.eye(30, dtype=torch.float64)), "U has orthonormal columns"
assert torch.allclose(s.square().sum(), W.square().sum()), "‖W‖_F² = Σ σ_i²"
assert torch.allclose(s, lowrank.singular_values(W)), "lorakit.lowrank.singular_values agrees"
print(f"σ1 = {s[0]:.3f}, σ30 = {s[-1]:.3f}; ‖W‖_F² = {W.square().sum():.1f} = Σσ² = {s.square().sum():.1f}")

# %% [markdown]
# ## 4. Eckart–Young: the best rank-$r$ matrix
#
# Keep the top $r$ terms of the sum: $W_r = \sum_{i \le r} \sigma_i u_i v_i^\top$. Two norms
# measure how far $W_r$ is from $W$: the **Frobenius norm** $\|M\|_F = \sqrt{\sum_{ij} M_{ij}^2}
# = \sqrt{\sum_i \sigma_i^2}$ (all the energy), and the **spectral norm** $\|M\|_2 =
# \max_{\|x\| = 1} \|xM\| = \sigma_1$ (the most any unit input can be stretched). The
# **Eckart–Young theorem** (we state it, sketch why, and check it) says no rank-$r$ matrix is
# closer to $W$ in either norm, and the error is exactly the tail of the singular values:
#
# $$\min_{\operatorname{rank} M \le r} \|W - M\|_F = \|W - W_r\|_F = \sqrt{\sigma_{r+1}^2 + \dots + \sigma_k^2},
# \qquad \|W - W_r\|_2 = \sigma_{r+1}.$$
#
# *Proof sketch.* The error of $W_r$ is the tail, because $W - W_r = \sum_{i > r}\sigma_i u_i v_i^\top$
# is itself an SVD. No $M$ of rank $\le r$ does better: Weyl's inequality for singular values,
# $\sigma_{i+j-1}(X + Y) \le \sigma_i(X) + \sigma_j(Y)$, with $X = W - M$, $Y = M$ and $j = r + 1$
# (where $\sigma_{r+1}(M) = 0$) gives $\sigma_{i+r}(W) \le \sigma_i(W - M)$ for every $i$. Taking
# $i = 1$ is the spectral statement; squaring and summing over $i$ gives
# $\|W - M\|_F^2 \ge \sum_{i > r} \sigma_i^2$.
#
# Throughout the course, **relative error** means one thing: $\|M - \hat M\|_F / \|M\|_F$ for an
# approximation $\hat M$ of $M$ (`lowrank.relative_errors`; notebook 06 uses the same for
# quantization). The **energy kept** by $W_r$ is then $1 - \text{relative error}^2$.
#
# Build $W_r$ from scratch, then compare with `lorakit.lowrank.truncate`:

# %%
r = 5
W_r = (U[:, :r] * s[:r]) @ Vh[:r]                       # from scratch: top-r singular triplets
assert torch.allclose(W_r, lowrank.truncate(W, r)), "our W_r equals lorakit.lowrank.truncate"
assert torch.linalg.matrix_rank(W_r) == r

err_fro = torch.linalg.matrix_norm(W - W_r, "fro").item()
err_spec = torch.linalg.matrix_norm(W - W_r, 2).item()
assert abs(err_fro - s[r:].square().sum().sqrt().item()) < 1e-9, "Frobenius error = sqrt(σ_{r+1}² + … )"
assert abs(err_spec - s[r].item()) < 1e-9, "spectral error = σ_{r+1}"
assert abs(err_fro - lowrank.tail_error(s, r, "fro")) < 1e-9
assert abs(err_spec - lowrank.tail_error(s, r, "spectral")) < 1e-9

# "best": 200 other rank-r matrices (projections of W onto random r-dim column spaces) all do worse
others = []
for seed in range(200):
    Q, _ = torch.linalg.qr(torch.randn(40, r, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
    others.append(torch.linalg.matrix_norm(W - Q @ (Q.T @ W)).item())
assert min(others) > err_fro, "no random rank-r competitor beats the truncated SVD"
print(f"rank {r}: ‖W − W_r‖_F = {err_fro:.4f} (tail of σ: {lowrank.tail_error(s, r):.4f}), "
      f"‖W − W_r‖_2 = {err_spec:.4f} = σ_{r + 1}; best of 200 random rank-{r} fits: {min(others):.4f}")

# %% [markdown]
# A random matrix has no structure, so its error falls slowly with $r$. A photograph is
# different: neighbouring pixels agree, a few directions carry most of it. The same function
# that draws notebook 03's rank slider shows it:

# %%
photo = torch.tensor(plt.imread(cbook.get_sample_data("grace_hopper.jpg"))).float().mean(-1)[::2, ::2] / 255
fig = rank_figure(photo, 20, "a photo")
plt.show()
photo_err = lowrank.relative_errors(photo)[19].item()
random_err = lowrank.relative_errors(lowrank.random_like(photo))[19].item()
assert photo_err < 0.25 < 0.8 < random_err, "a photo is nearly rank 20; a random matrix is not"
assert abs(lowrank.energy(photo, 20) - (1 - photo_err**2)) < 1e-6, "energy kept = 1 − relative error²"
print(f"relative error at rank 20: photo {photo_err:.3f} (energy kept 1 − {photo_err:.3f}² = "
      f"{1 - photo_err**2:.1%}), random matrix of the same shape {random_err:.3f} ({1 - random_err**2:.1%})")

# %% [markdown]
# ## 5. Parameter counts on real shapes
#
# A dense update of an $m \times n$ layer has $mn$ numbers; a rank-$r$ one has $r(m+n)$. The
# saving grows with the width: for a square $d \times d$ layer it is $d / (2r)$.
#
# **GPT-3 175B** (LoRA paper): $d = 12288$, 96 layers, LoRA with $r = 4$ on $W_q$ and $W_v$ only.
# The paper reports "10,000× fewer trainable parameters" and a checkpoint of "35 MB instead of
# 350 GB". Reproduce both by arithmetic:

# %%
d, layers, r = 12288, 96, 4
trainable = layers * 2 * r * (d + d)                     # by hand: 2 matrices per layer
g = lowrank.gpt3_lora_savings(r=4)
assert trainable == g["lora_trainable"], "our count equals lorakit.lowrank.gpt3_lora_savings"
ratio = 175e9 / trainable
assert 0.85e4 < ratio < 1.15e4, f"'10,000× fewer trainable parameters' (we get {ratio:,.0f}×)"
full_gb, lora_mb = 175e9 * 2 / 1e9, trainable * 2 / 1e6    # fp16: 2 bytes per number
assert abs(full_gb - 350) < 1 and 30 < lora_mb < 40, "'350 GB -> 35 MB' (fp16 checkpoints)"
print(f"GPT-3 175B, r = 4 on Wq, Wv: {trainable:,} trainable parameters = {trainable / 1e6:.1f} M, "
      f"{ratio:,.0f}× fewer than 175 B; checkpoint {full_gb:.0f} GB -> {lora_mb:.1f} MB "
      f"({trainable * 2 / 2**20:.1f} MiB; the paper rounds to 35 MB)")

# %% [markdown]
# **Llama-7B**: $d = 4096$, 32 layers, MLP width 11008 (gate, up, down), vocabulary 32000.
# Its total, counted from the shapes (`lorakit.memory.MODEL_SHAPES`, the course's one shape table,
# keyed like a Hugging Face `config.json`), is the "7B" of its name; LoRA on the attention
# projections adds a fraction of a percent.

# %%
llama = MODEL_SHAPES["7B"]  # the course's one shape table, with a Hugging Face config's key names
total = parameter_counts(llama)["total"]
assert abs(total - 6.74e9) < 0.01e9, "the shapes add up to Llama-7B's 6.74 B parameters"
per_layer = linear_shapes(llama)  # (in, out) of q_proj … down_proj in one decoder layer
rows = [("q_proj, v_proj", ("q_proj", "v_proj"), 8),
        ("q, k, v, o", ("q_proj", "k_proj", "v_proj", "o_proj"), 8),
        ("all linear (QLoRA)", ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"), 64)]
print(f"Llama-7B: {total:,} parameters ({total / 1e9:.2f} B)")
for label, targets, r in rows:
    sav = lowrank.lora_savings(total, [per_layer[t] for t in targets] * llama["num_hidden_layers"], r)
    print(f"  r = {r:>2} on {label:<20} {sav['lora_trainable'] / 1e6:7.2f} M trainable "
          f"({100 / sav['ratio']:.3f} % of the model), adapter {sav['lora_checkpoint_bytes'] / 1e6:6.1f} MB in fp16")
qv = lowrank.lora_savings(total, [per_layer["q_proj"], per_layer["v_proj"]] * llama["num_hidden_layers"], 8)
assert qv["lora_trainable"] == 32 * 2 * 8 * (4096 + 4096) == 4_194_304
assert qv["ratio"] > 1000, "r = 8 on q, v trains under 0.1 % of Llama-7B"

# %% [markdown]
# ## 6. Measured: is a real fine-tuning update low-rank?
#
# The saving above only helps if the update we need really has (approximately) low rank. The
# LoRA paper argues it does. Here we **measure** it: fully fine-tune the course's pretrained
# base GPT (trained on the standard library's source code) on a new domain — the Python
# language reference (`"docs"`) — then take $\Delta W = W_{\text{ft}} - W_0$ for every linear
# layer (`lorakit.lowrank.delta_weights`, in×out like $W_0$).

# %%
base, info = base_model(progress=not FAST)
docs_train, docs_val = load_splits("docs")
ft = copy.deepcopy(base)
set_seed(0)
hist = train(ft, docs_train, steps=FT_STEPS, batch_size=BATCH, lr=FT_LR, seed=0, desc="full fine-tuning",
             progress=not FAST)
before = evaluate(base, docs_val, BATCH, EVAL_BATCHES)
after = evaluate(ft, docs_val, BATCH, EVAL_BATCHES)
assert after < before - 0.1, "full fine-tuning adapts the model to the new domain"
print(f"val loss on docs: base {before:.3f} -> fully fine-tuned {after:.3f} bits/byte "
      f"({FT_STEPS} steps, {hist.seconds:.1f} s)")

dWs = lowrank.delta_weights(base, ft)
for name in list(dWs)[:3]:
    W0_layer = base.get_submodule(name).weight.detach().T
    print(f"{name:<26} W0 {tuple(W0_layer.shape)}, ‖ΔW‖_F / ‖W0‖_F = {dWs[name].norm() / W0_layer.norm():.3f}")

# %% [markdown]
# Is $\Delta W$ low-rank? Compare its singular values with those of a **random matrix of the
# same shape and the same Frobenius norm** (`lowrank.random_like`): both have the same total
# energy $\sum \sigma_i^2$, so the question is only how it is distributed. The energy captured
# by the top $r$ directions is
#
# $$E_r(\Delta W) = \frac{\sum_{i \le r} \sigma_i^2}{\sum_i \sigma_i^2} = 1 - \frac{\|\Delta W - \Delta W_r\|_F^2}{\|\Delta W\|_F^2}.$$

# %%
name = "blocks.0.attn.q_proj"
dW_q = dWs[name]
s_dW = lowrank.singular_values(dW_q)
s_rand = lowrank.singular_values(lowrank.random_like(dW_q, seed=0))
fig, ax = plt.subplots(figsize=(6, 4))
ax.semilogy(range(1, len(s_dW) + 1), s_dW.numpy(), "o-", ms=3, label="ΔW (full fine-tuning)")
ax.semilogy(range(1, len(s_rand) + 1), s_rand.numpy(), "s-", ms=3, label="random, same shape and ‖·‖_F")
ax.axvline(R_SHOW, color="0.6", ls=":", label=f"r = {R_SHOW}")
ax.set_xlabel("index i")
ax.set_ylabel("singular value σ_i (log scale)")
ax.set_title(f"ΔW's spectrum falls faster than a random matrix's ({name})")
ax.legend()
plt.show()
top_dW, top_rand = lowrank.energy(s_dW, R_SHOW), lowrank.energy(s_rand, R_SHOW)
assert s_dW[0] > s_rand[0], "ΔW's top singular value is larger than the random matrix's"
assert top_dW > 1.5 * top_rand, f"ΔW's top {R_SHOW} directions hold far more energy than a random matrix's"
print(f"{name}: σ1 of ΔW is {s_dW[0] / s_rand[0]:.2f}× the random matrix's; top-{R_SHOW} energy "
      f"{100 * top_dW:.1f} % vs {100 * top_rand:.1f} %")

# %% [markdown]
# Now every layer: the energy in the top $r = 8$ directions of $\Delta W$ against the random
# matrix with the same shape and norm.

# %%
rows = []
for name, dW in dWs.items():
    E_dW = lowrank.energy(dW, R_SHOW)
    E_rand = lowrank.energy(lowrank.random_like(dW, seed=1), R_SHOW)
    rows.append((name, tuple(dW.shape), E_dW, E_rand))
    print(f"{name:<26} {str(tuple(dW.shape)):<11} top-{R_SHOW} energy: ΔW {100 * E_dW:5.1f} %, random {100 * E_rand:5.1f} %")

fig, ax = plt.subplots(figsize=(10, 4))
idx = torch.arange(len(rows)).numpy()
ax.bar(idx - 0.2, [100 * e for _, _, e, _ in rows], 0.4, label="ΔW (full fine-tuning)")
ax.bar(idx + 0.2, [100 * e for _, _, _, e in rows], 0.4, label="random, same shape and ‖·‖_F")
ax.set_xticks(idx, [n.replace("blocks.", "b").replace("attn.", "").replace("mlp.", "") for n, *_ in rows],
              rotation=45, ha="right")
ax.set_ylabel(f"energy in the top {R_SHOW} directions (%)")
ax.set_ylim(0, 100)
ax.set_title(f"In every layer, ΔW's top {R_SHOW} directions hold more than a random matrix's")
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)   # outside: never over a bar
plt.tight_layout()
plt.show()

E = torch.tensor([e for _, _, e, _ in rows])
E_random = torch.tensor([e for _, _, _, e in rows])
assert bool((E > E_random).all()), "in every layer ΔW's top-r energy exceeds the random matrix's"
assert float((E / E_random).median()) > 1.5, "typically by a wide margin (median ratio > 1.5)"
is_mlp = torch.tensor(["mlp" in name for name, *_ in rows])
E_attn, E_mlp = E[~is_mlp].mean().item(), E[is_mlp].mean().item()
print(f"median top-{R_SHOW} energy: ΔW {100 * E.median():.1f} %, random {100 * E_random.median():.1f} % "
      f"(ratio {float((E / E_random).median()):.2f}); lowest ΔW layer {100 * E.min():.1f} %; "
      f"attention {100 * E_attn:.1f} % vs MLP {100 * E_mlp:.1f} % on average")
assert E_mlp < E_attn, "the wider MLP layers are less concentrated than the attention projections"
if not FAST:  # the learner-size numbers the text below quotes
    assert 0.3 < float(E.median()) < 0.7, "at learner size the top 8 of 128 directions hold roughly half the energy"
    assert 1.5 < float((E / E_random).median()) < 4, "two to three times what a random matrix holds"

# %% [markdown]
# **What the measurement shows, honestly.** In every layer the fine-tuning update is clearly
# more concentrated than a random matrix of the same size — at learner size the top 8 of 128
# directions hold roughly half of $\Delta W$'s energy, two to three times what they hold in a
# random matrix (in test mode, with a smaller model and a shorter run, even more). But $\Delta W$
# is **not** low-rank in the strict sense: the other half of its energy is spread over the
# remaining directions, and the MLP layers (wider, $d \times 4d$) are less concentrated than
# the attention projections. How concentrated it is also depends on the run: a short, gentle
# fine-tuning moves few directions; longer training spreads the update. So the claim we
# asserted is the robust one — *"ΔW's top-r energy exceeds a random matrix's, in every layer,
# typically by more than 1.5×"* — not "ΔW has rank 8". That is weaker than the LoRA paper's
# picture. LoRA does not need $\Delta W$ to be exactly low-rank: it only needs a rank-$r$ update
# to capture enough of what matters *for the loss*, which a spectrum cannot tell. Notebook 02
# measures it for one setting — LoRA on `q_proj`, `v_proj` against full fine-tuning, same steps —
# and finds a clear gain that is only a fraction of full fine-tuning's; notebook 03 varies $r$,
# and notebook 04 ("choosing a fine-tune") measures how the target modules, rank and learning
# rate close the gap.

# %% [markdown]
# ## Summary
#
# - Notation: $y = xW_0$, $W_0 \in \mathbb{R}^{m\times n}$, full fine-tuning $W' = W_0 + \Delta W$,
#   LoRA $\Delta W = AB$ with $A \in \mathbb{R}^{m \times r}$, $B \in \mathbb{R}^{r \times n}$.
# - A product through $r$ dimensions has rank $\le r$ and costs $r(m+n)$ numbers instead of $mn$.
# - Eckart–Young: truncating the SVD gives the best rank-$r$ matrix; its error is the tail of the
#   singular values (Frobenius: $\sqrt{\sum_{i>r}\sigma_i^2}$, spectral: $\sigma_{r+1}$) — checked.
# - GPT-3 175B with $r=4$ on $W_q, W_v$: 18.9 M trainable parameters, ≈ 9,300× fewer
#   ("10,000×"), 37.7 MB instead of 350 GB ("35 MB"); Llama-7B: r = 8 on q, v is 4.2 M (0.06 %).
# - Measured: a real full fine-tuning update puts more energy in its top 8 directions than a
#   random matrix of the same shape and norm, in every layer (median ratio > 1.5, asserted) — but
#   it is not exactly low-rank (at learner size about half its energy lies outside the top 8),
#   and the MLP layers are less concentrated than the attention projections (asserted).

# %% [markdown]
# ## Exercises
#
# Each checker says whether your answer is right and, if not, what the usual mistake is; it
# states its tolerance, and numbers may be any numeric type. Worked solutions, with the
# reasoning: `notebooks/solutions/nb01.py` (try first).
#
# **Exercise 1.1 — the saving on one Llama MLP layer.** Llama-7B's `up_proj` maps 4096 → 11008.
# How many times fewer numbers does a rank-8 update $AB$ need than a dense $\Delta W$? Answer: a
# number, accepted within 0.5 %. *Hint:* count both matrices.

# %%
answer = None  # your answer here
check_ex_1_1(answer)

# %% [markdown]
# **Exercise 1.2 — Eckart–Young by hand.** For `M = exercise_matrix()` (8×6), compute
# $\|M - M_2\|_F$, the Frobenius error of its best rank-2 approximation. Answer: a number,
# accepted within 0.1 %. *Hint:* you do not need $M_2$: use `torch.linalg.svdvals(M)` and the tail.

# %%
M = exercise_matrix()
answer = None  # your answer here
check_ex_1_2(answer)

# %% [markdown]
# **Exercise 1.3 — how many directions?** A $\Delta W$ has singular values
# $(5, 3, 2, 1, 0.5, 0.1)$. What is the smallest $r$ whose top-$r$ directions hold at least 90 %
# of $\|\Delta W\|_F^2$? Answer: a whole number (exact). *Hint:* energy is $\sigma^2$, not $\sigma$.

# %%
answer = None  # your answer here
check_ex_1_3(answer)

# %% [markdown]
# **Exercise 1.4 — does one gradient step have few directions? (an experiment).** One gradient step changes a
# linear layer by $-\text{lr}\cdot\nabla_W L$, and for a batch of $k$ input rows
# $\nabla_{W} L = X^\top G$ ($X$: $k \times m$ inputs, $G$: $k \times n$ output gradients). Write
# `gradient_rank(k)` that builds `torch.nn.Linear(64, 48, bias=False)`, feeds it a random batch of
# `k` rows, backpropagates any scalar loss (e.g. `((y - target)**2).sum()` against a random target)
# and returns the rank of `layer.weight.grad` (`torch.linalg.matrix_rank`). Predict first, then
# let the checker call it for several `k`. What does that say about a fine-tuning run of a few
# hundred steps on batches of 32 × 128 tokens? Answer: the function.

# %%
def gradient_rank(k):
    ...  # your code here


answer = None  # set to gradient_rank once written
check_ex_1_4(answer)

# %% [markdown]
# ## References
#
# - E. J. Hu et al., *LoRA: Low-Rank Adaptation of Large Language Models*, 2021, arXiv:2106.09685 —
#   $\Delta W = BA$ (here $AB$), GPT-3 175B counts (§4.2, Table 4), the low-rank hypothesis.
# - A. Aghajanyan, L. Zettlemoyer, S. Gupta, *Intrinsic Dimensionality Explains the Effectiveness
#   of Language Model Fine-Tuning*, 2020, arXiv:2012.13255 — the hypothesis LoRA builds on.
# - C. Eckart, G. Young, *The approximation of one matrix by another of lower rank*,
#   Psychometrika 1, 1936 (no arXiv) — the theorem of section 4; L. Mirsky, 1960, for every
#   unitarily invariant norm.
# - H. Touvron et al., *LLaMA*, 2023, arXiv:2302.13971 — the Llama-7B shapes of section 5.
# - PEFT: `peft.LoraConfig(r=..., target_modules=...)` and `PeftModel.print_trainable_parameters()`
#   count what section 5 counts; `lorakit.lowrank` holds this notebook's functions.
