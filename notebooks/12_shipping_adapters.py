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
# # 12 · Shipping adapters
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lorakit/lorakit/blob/v0.1.0/notebooks/12_shipping_adapters.ipynb)
#
# Take trained adapters to the places they run: serve many of them on one base in one batch,
# merge several into one, and export a fine-tune to llama.cpp's quantized formats without
# losing it on the way.
#
# **You will**
# - compute a batch whose rows use different adapters three ways (loop, gathered, segmented), equal to PEFT's `adapter_names=`, and measure what each costs;
# - merge adapters with linear, cat, TIES and DARE from scratch, equal to PEFT's `add_weighted_adapter`, and measure which keeps both skills;
# - quantize a merged model to Q8_0 and Q4_0 by hand, byte-equal to the `gguf` package, write a GGUF file, and measure how much of the fine-tune survives.
#
# **What runs where.** Everything here runs on a CPU: a tiny Llama (random weights) for the
# equalities with PEFT and gguf, and the course GPT for what is measured on real text. The GPU
# servers (vLLM, SGLang) and llama.cpp itself are described in section 4 with the exact steps.
#
# **Runtime** (measured: top to bottom in a fresh kernel, base model cached)
#
# | device | test mode (`LORAKIT_FAST=1`) | learner size |
# |---|---|---|
# | 2-core x86_64 CPU, shared with other jobs, 2026-12-06 | 19 s under nbval (load 3.4) | 6.8 min wall at load 6–7, 43 % of one core (172 s of CPU): ≈ 3 min idle (estimate) |

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
import tempfile
import time
import warnings
from importlib import metadata

import matplotlib.pyplot as plt
import numpy as np
import torch

from lorakit import export, merging, serving, sft
from lorakit.data import load_splits
from lorakit.lora import LoRAConfig, inject_lora
from lorakit.quiet import quiet_import
from lorakit.train import base_model, evaluate, fast_mode, set_seed, train

peft = quiet_import("peft")
transformers = quiet_import("transformers")
gguf = quiet_import("gguf")
FAST = fast_mode()
print(f"test mode: {FAST}; everything below runs on the CPU (torch {torch.__version__}, "
      f"peft {peft.__version__}, gguf {metadata.version('gguf')})")

# %% [markdown]
# ## 1. Many adapters in one batch
#
# A server hosts one base $W_0 \in \mathbb{R}^{m \times n}$ and $k$ adapters
# $(A_j \in \mathbb{R}^{m \times r_j},\ B_j \in \mathbb{R}^{r_j \times n},\ s_j = \alpha_j / r_j)$.
# A batch $X \in \mathbb{R}^{b \times m}$ arrives whose row $i$ asks for adapter $a(i)$ (or none).
# Because LoRA is unmerged, every row shares the expensive product and adds its own small one:
#
# $$y_i = x_i W_0 + s_{a(i)}\, (x_i A_{a(i)})\, B_{a(i)} .$$
#
# Three ways to compute the second term, one idea each:
#
# - **loop** (PEFT's `adapter_names=`): for each adapter, select its rows, multiply, put back;
# - **gathered** (BGMV, Punica/S-LoRA): stack all $A_j$ into $k{+}1$ slots padded to
#   $r_{\max}$ (slot $k$ = zeros = "no adapter"), gather one slot per row, one batched matmul;
# - **segmented** (SGMV): sort the rows so each adapter's rows are contiguous, one matmul per
#   segment at the adapter's own rank, unsort.
#
# Build them on one layer first, with three adapters of different ranks.

# %%
g = torch.Generator().manual_seed(0)
m, n, b = 64, 48, 7
W0 = torch.randn(m, n, generator=g) / m**0.5
layer_adapters = [(torch.randn(m, r, generator=g) / m**0.5, torch.randn(r, n, generator=g) / r**0.5, 2.0)
                  for r in (4, 8, 16)]
X = torch.randn(b, m, generator=g)
rows = torch.tensor([0, 2, 3, 1, 0, 2, 3])   # 3 = no adapter


def loop_lora(X, adapters, rows):
    out = torch.zeros(X.shape[0], adapters[0][1].shape[1])
    for j, (A, B, s) in enumerate(adapters):
        picked = rows == j
        out[picked] = s * (X[picked] @ A) @ B
    return out


def gathered_lora(X, adapters, rows):
    r_max = max(A.shape[1] for A, _, _ in adapters)
    A_stack = torch.zeros(len(adapters) + 1, X.shape[1], r_max)        # (k+1)×m×r_max
    B_stack = torch.zeros(len(adapters) + 1, r_max, adapters[0][1].shape[1])
    for j, (A, B, s) in enumerate(adapters):
        A_stack[j, :, : A.shape[1]], B_stack[j, : B.shape[0]] = A, s * B   # pad with zeros
    h = torch.bmm(X[:, None, :], A_stack[rows])                         # b×1×r_max
    return torch.bmm(h, B_stack[rows])[:, 0]                            # b×n


def segmented_lora(X, adapters, rows):
    order = torch.argsort(rows, stable=True)
    counts = torch.bincount(rows, minlength=len(adapters) + 1).tolist()
    Xs, parts, start = X[order], [], 0
    for j, c in enumerate(counts):
        seg = Xs[start : start + c]
        parts.append(adapters[j][2] * (seg @ adapters[j][0]) @ adapters[j][1] if j < len(adapters)
                     else seg.new_zeros(c, W0.shape[1]))
        start += c
    out = torch.empty(X.shape[0], W0.shape[1])
    out[order] = torch.cat(parts)
    return out


loop_y = X @ W0 + loop_lora(X, layer_adapters, rows)
gathered_y = X @ W0 + gathered_lora(X, layer_adapters, rows)
segmented_y = X @ W0 + segmented_lora(X, layer_adapters, rows)
per_row = torch.stack([X[i] @ W0 + (layer_adapters[j][2] * X[i] @ layer_adapters[j][0] @ layer_adapters[j][1]
                                     if j < 3 else 0) for i, j in enumerate(rows.tolist())])
linear = torch.nn.Linear(m, n, bias=False)
with torch.no_grad():
    linear.weight.copy_(W0.t())
package_layer = serving.MultiLoRALinear(linear, layer_adapters, "gathered")
package_layer.rows = rows
with torch.no_grad():
    package_y = package_layer(X)
for name, y in [("loop", loop_y), ("gathered", gathered_y), ("segmented", segmented_y), ("package", package_y)]:
    err = (y - per_row).abs().max().item()
    print(f"{name:>9}: max |y − per-row reference| = {err:.2e}")
    assert err < 1e-5, f"{name} must equal computing each row with its own adapter"

# %% [markdown]
# **Now on a real architecture, against PEFT.** A tiny Llama (grouped-query attention, SwiGLU
# MLP, tied embeddings, random weights) with three PEFT adapters of ranks 4, 8 and 16 on
# `q_proj`, `v_proj` and `down_proj`. PEFT runs a mixed batch with
# `model(input_ids, adapter_names=[...])` (`"__base__"` = no adapter). `lorakit.serving` reads
# the adapters out of PEFT (`lora_A.weight` = $A^\top$) and runs the same batch in each mode.

# %%
llama_dir = tempfile.mkdtemp()
torch.manual_seed(0)
llama_config = transformers.LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                        tie_word_embeddings=True)
llama = transformers.LlamaForCausalLM(llama_config).eval()
plain_llama = copy.deepcopy(llama)
TARGETS = ["q_proj", "v_proj", "down_proj"]
RANKS = {"sql": 4, "math": 8, "code": 16}
torch.manual_seed(1)
peft_llama = None
for name, r in RANKS.items():   # init_lora_weights=False: B is random too, as after training
    cfg = peft.LoraConfig(r=r, lora_alpha=2 * r, target_modules=TARGETS, init_lora_weights=False)
    with warnings.catch_warnings():   # transformers 5 renamed a property PEFT reads (FutureWarning)
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        if peft_llama is None:
            peft_llama = peft.get_peft_model(llama, cfg, adapter_name=name)
        else:
            peft_llama.add_adapter(name, cfg)
peft_llama.eval()
adapters = {name: serving.peft_factors(peft_llama, name) for name in RANKS}

ids = torch.randint(0, 512, (8, 24), generator=torch.Generator().manual_seed(1))
row_names = ["sql", "math", "__base__", "code", "sql", "code", "__base__", "math"]
with torch.no_grad():
    peft_logits = peft_llama(input_ids=ids, adapter_names=row_names).logits
    ours = {}
    for mode in serving.MODES:
        model = copy.deepcopy(plain_llama)
        serving.attach_adapters(model, adapters, mode)
        with serving.use_rows(model, row_names):
            ours[mode] = model(input_ids=ids).logits
    tenant = serving.merged_copy(plain_llama, adapters["code"])(input_ids=ids[3:4]).logits
for mode, logits in ours.items():
    err = (logits - peft_logits).abs().max().item()
    print(f"{mode:>9} vs PEFT adapter_names: max |Δ logit| = {err:.2e} (8 rows, 3 adapters + base)")
    assert err < 1e-4, f"{mode} must equal PEFT's mixed batch row by row"
print(f"row 3 vs the model with 'code' merged (one model per tenant): {(ours['gathered'][3] - tenant[0]).abs().max():.2e}")
assert torch.allclose(ours["gathered"][3], tenant[0], atol=1e-4), "a row equals its tenant's merged model"
assert (ours["gathered"][0] - ours["gathered"][1]).abs().max() > 1e-3, "different adapters, different rows"

# %% [markdown]
# **Memory, counted in bytes.** One base plus $k$ adapters against $k$ merged copies; and the
# price of a gathered kernel: every slot is padded to the largest rank. Servers therefore fix
# the largest rank when they start (vLLM's `--max-lora-rank`, default 16) and refuse adapters of
# larger rank: the buffers are allocated for $r_{\max}$ up front.

# %%
base_bytes = serving.model_nbytes(plain_llama)
adapter_bytes = {name: serving.factors_nbytes(f) for name, f in adapters.items()}
k = len(adapters)
one_base = base_bytes + sum(adapter_bytes.values())
padded = serving.padded_nbytes(adapters)
print(f"one base + {k} adapters: {one_base / 1e3:,.1f} kB; {k} merged copies: {k * base_bytes / 1e3:,.1f} kB")
print(f"adapters at their own ranks {list(RANKS.values())}: {sum(adapter_bytes.values()) / 1e3:.1f} kB; "
      f"padded to r_max = {max(RANKS.values())}: {padded / 1e3:.1f} kB "
      f"({padded / sum(adapter_bytes.values()):.2f}×)")
assert one_base < k * base_bytes, "unmerged serving stores the base once"
per_rank = sum(A.shape[0] + B.shape[1] for A, B, _ in adapters["sql"].values()) * 4   # bytes per unit of rank
assert padded == k * max(RANKS.values()) * per_rank, "padding: k slots of r_max"
assert sum(adapter_bytes.values()) == sum(RANKS.values()) * per_rank

# %% [markdown]
# **Throughput, measured once on this CPU (printed, never asserted).** A slightly larger Llama,
# rank-16 adapters on the same layers, batches of requests spread evenly over $k$ tenants.
# *Merged per tenant* runs each tenant's rows through its own merged model ($k$ smaller
# forward passes, $k$ copies in memory); *loop* and *gathered* run one forward pass of the whole
# batch on the shared base.

# %%
big = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4) if not FAST else \
    dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2)
torch.manual_seed(2)
bench_base = transformers.LlamaForCausalLM(transformers.LlamaConfig(
    vocab_size=512, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    tie_word_embeddings=True, **big)).eval()
KS = [1, 4] if FAST else [1, 4, 16]
BATCHES = [8] if FAST else [8, 32]
SEQ, REPS = (16, 1) if FAST else (64, 3)


def random_factors(model, r, seed):
    gen = torch.Generator().manual_seed(seed)
    return {p: (torch.randn(mod.in_features, r, generator=gen) * 0.02, torch.randn(r, mod.out_features, generator=gen) * 0.02, 2.0)
            for p, mod in model.named_modules() if p.split(".")[-1] in TARGETS}


def seconds(fn):
    fn()   # warm-up
    start = time.perf_counter()
    for _ in range(REPS):
        fn()
    return (time.perf_counter() - start) / REPS


throughput = {}
with torch.no_grad():
    for k_ in KS:
        bench_adapters = {f"t{j}": random_factors(bench_base, 16, j) for j in range(k_)}
        merged_models = [serving.merged_copy(bench_base, f) for f in bench_adapters.values()]
        served = copy.deepcopy(bench_base)
        serving.attach_adapters(served, bench_adapters, "loop")
        for batch in BATCHES:
            tokens = torch.randint(0, 512, (batch, SEQ), generator=torch.Generator().manual_seed(batch))
            names = [f"t{i % k_}" for i in range(batch)]
            groups = [[i for i in range(batch) if i % k_ == j] for j in range(k_)]

            def per_tenant():
                for j, rows_j in enumerate(groups):
                    if rows_j:
                        merged_models[j](input_ids=tokens[rows_j])

            def one_pass(mode):
                serving.set_mode(served, mode)
                with serving.use_rows(served, names):
                    served(input_ids=tokens)

            for label, fn in [("merged per tenant", per_tenant), ("loop", lambda: one_pass("loop")),
                              ("gathered", lambda: one_pass("gathered")), ("segmented", lambda: one_pass("segmented"))]:
                throughput[(label, k_, batch)] = batch * SEQ / seconds(fn)
load = open("/proc/loadavg").read().split()[0] if sys.platform.startswith("linux") else "n/a"
print(f"tokens/s on this CPU ({torch.get_num_threads()} threads, load {load}); model "
      f"{serving.model_nbytes(bench_base) / 1e6:.1f} MB float32, sequence {SEQ}")
for (label, k_, batch), tps in throughput.items():
    print(f"  k = {k_:>2} adapters, batch {batch:>2}: {label:<18} {tps:>10,.0f} tokens/s")

# %%
fig, ax = plt.subplots(figsize=(6, 4))
batch = BATCHES[-1]
for label in ["merged per tenant", "loop", "gathered", "segmented"]:
    ax.plot(KS, [throughput[(label, k_, batch)] for k_ in KS], "o-", label=label)
ax.set_xscale("log", base=2)
ax.set_xticks(KS, [str(k_) for k_ in KS])
ax.set_xlabel("adapters in the batch (k)")
ax.set_ylabel("tokens / s (CPU, one run)")
ax.set_title(f"Mixed-adapter batch of {batch}: throughput vs number of adapters")
ax.legend(loc="best")
plt.show()

# %% [markdown]
# What the numbers say on a CPU, and what the GPU kernels add:
#
# - *Merged per tenant* splits the batch into $k$ small forward passes: as $k$ grows each pass
#   gets fewer rows, so fixed per-call costs weigh more — and the memory holds $k$ full models.
#   On a GPU, small batches waste most of the chip, which is the whole problem Punica solves.
# - *Loop* pays one small matmul pair per adapter; *gathered* pays for $r_{\max}$ on every row,
#   whatever its adapter's rank; both share the one large base matmul. Compare the printed
#   numbers on your machine (on a busy one they move from run to run). Punica's SGMV kernel (arXiv 2310.18547) fuses the segments into one launch
#   (up to 12× the throughput of the alternatives they measured, +2 ms per token);
#   S-LoRA (arXiv 2311.03285) adds paging of thousands of adapters between CPU and GPU memory
#   in one pool with the KV cache.
# - Padding to $r_{\max}$ is why servers ask for `max_lora_rank` at start-up: the stacked
#   buffers above are $k \cdot r_{\max}$ wide: for ranks 4/8/16 they hold the ratio printed above
#   (padded / own bytes) — one rank-64 adapter among rank-8 ones would multiply it again.

# %% [markdown]
# ## 2. Merging several adapters into one
#
# Given adapters $\Delta W_i = s_i A_i B_i$ and weights $w_i$, the update one would like is
# $\sum_i w_i \Delta W_i$. PEFT's `add_weighted_adapter` offers several ways to get one adapter:
#
# - **cat**: $A = [w_1 s_1 A_1,\ w_2 s_2 A_2]$ (columns), $B = [B_1; B_2]$ (rows). Then
#   $AB = \sum_i w_i s_i A_i B_i$ exactly; the rank is $\sum_i r_i$.
# - **linear**: average $A$ and $B$ *separately*, each weighted by $\sqrt{w_i s_i}$:
#   $(\sum_i \sqrt{w_i s_i} A_i)(\sum_j \sqrt{w_j s_j} B_j) = \sum_i w_i \Delta W_i + \sum_{i \ne j} \sqrt{w_i s_i w_j s_j}\, A_i B_j$.
#   The cross terms $A_i B_j$ pair an input direction learned by one adapter with an output
#   direction learned by another: noise. Rank stays $r$, all ranks must be equal.
# - **TIES** (Yadav et al. 2023): per factor keep the `density` share of largest entries (trim),
#   elect each entry's sign by the sum of the trimmed factors, average the weighted entries that
#   agree with it.
# - **DARE** (Yu et al. 2023): drop each entry with probability $1-$`density`, rescale the rest by
#   $1/$`density`, then linear (`dare_linear`) or TIES (`dare_ties`).
#
# PEFT applies TIES and DARE to $A$ and $B$ separately too (not to $\Delta W$; its `*_svd`
# variants do that), with the sign on $A$'s weight. First TIES by hand on one factor, then every
# type from the package against PEFT on the tiny Llama.

# %%
def ties_by_hand(factors, w, density):
    """TIES on one factor (PEFT's layout), as PEFT computes it."""
    trimmed = []
    for t in factors:   # trim: keep the int(density·numel) largest magnitudes
        keep = torch.zeros(t.numel())
        keep[t.abs().flatten().topk(int(density * t.numel())).indices] = 1
        trimmed.append(t * keep.reshape(t.shape))
    stacked = torch.stack(trimmed)
    elected = torch.where(stacked.sum(0) >= 0, 1.0, -1.0)      # elect: the sign of the total
    agree = stacked.sign() == elected
    weighted = stacked * torch.tensor(w, dtype=torch.float32).reshape(-1, 1, 1)
    return (weighted * agree).sum(0) / agree.sum(0).clamp(min=1)  # disjoint mean


# a second rank-4 adapter: TIES, DARE and linear need equal ranks
torch.manual_seed(3)
peft_llama.add_adapter("sql2", peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False))
adapters["sql2"] = serving.peft_factors(peft_llama, "sql2")
pair = [adapters["sql"], adapters["sql2"]]
path0 = next(iter(adapters["sql"]))
w_pair, density = [0.6, 0.4], 0.5
w_A = [float(np.sign(w * f[path0][2]) * abs(w * f[path0][2]) ** 0.5) for w, f in zip(w_pair, pair)]  # √(w·s), sign on A
ours_A = ties_by_hand([f[path0][0].t() for f in pair], w_A, density)
package_A = merging.merge_adapters(pair, w_pair, "ties", density=density)[path0][0].t()
print(f"TIES by hand vs lorakit.merging on {path0}'s A: max |Δ| = {(ours_A - package_A).abs().max():.1e}")
assert torch.equal(ours_A, package_A), "our TIES is the package's"

# %% [markdown]
# Ranks must agree for linear, TIES and DARE ("sql" has r = 4, "code" r = 16: only cat can merge
# them; `merge_adapters` refuses before computing anything). PEFT draws DARE's masks from the global random generator *after* it has initialised the
# new adapter's weights; re-seeding right after that step lets the same seed give the same masks.

# %%
LoraModel = type(peft_llama.base_model)
inject = LoraModel.inject_adapter
SEED = 7


def inject_then_seed(self, *args, **kwargs):
    out = inject(self, *args, **kwargs)
    torch.manual_seed(SEED)
    return out


LoraModel.inject_adapter = inject_then_seed
try:
    for combo in merging.COMBINATIONS:
        names = ["sql", "code"] if combo == "cat" else ["sql", "sql2"]
        dens = None if combo in ("linear", "cat") else 0.5
        peft_llama.add_weighted_adapter(names, [0.6, 0.4], f"m_{combo}", combination_type=combo, density=dens)
        theirs = serving.peft_factors(peft_llama, f"m_{combo}")
        mine = merging.merge_adapters([adapters[x] for x in names], [0.6, 0.4], combo, density=dens, seed=SEED)
        err = max(max((mine[p][0] - theirs[p][0]).abs().max().item(), (mine[p][1] - theirs[p][1]).abs().max().item())
                  for p in mine)
        rank = next(iter(mine.values()))[0].shape[1]
        print(f"{combo:>11}: rank {rank:>2}, max |Δ| vs add_weighted_adapter = {err:.1e}")
        assert err < 1e-6, f"{combo} must equal PEFT's add_weighted_adapter"
finally:
    LoraModel.inject_adapter = inject

exact = merging.weighted_delta([adapters["sql"], adapters["sql2"]], [0.5, 0.5])
as_linear = merging.delta_of(merging.merge_adapters([adapters["sql"], adapters["sql2"]], [0.5, 0.5], "linear"))
as_cat = merging.delta_of(merging.merge_adapters([adapters["sql"], adapters["sql2"]], [0.5, 0.5], "cat"))
rel = lambda d: sum((d[p] - exact[p]).norm() ** 2 for p in exact) ** 0.5 / sum(exact[p].norm() ** 2 for p in exact) ** 0.5
print(f"‖merged ΔW − ½(ΔW₁ + ΔW₂)‖ / ‖½(ΔW₁ + ΔW₂)‖: cat {rel(as_cat):.1e}, linear {rel(as_linear):.2f}")
assert rel(as_cat) < 1e-5 and rel(as_linear) > 0.3, "cat is the average of the updates; linear is not"

# %% [markdown]
# **Measured on the course's own tasks.** The course GPT (pretrained on the standard library's
# code) gets one LoRA adapter for the Python language reference (`docs`) and one for the
# standard library's tests (`tests`), same rank, targets and steps; a third adapter is trained
# on both (multi-task, the same total steps as one adapter each). Each merge combines the two
# single-task adapters with weights 1 and 1 (task arithmetic: add both updates); TIES and DARE
# keep half the entries.

# %%
base, info = base_model(progress=False)
base.eval()
MAX_BYTES = 300_000 if FAST else 3_000_000
docs_train, docs_val = load_splits("docs", max_bytes=MAX_BYTES)
tests_train, tests_val = load_splits("tests", max_bytes=MAX_BYTES)
STEPS = 40 if FAST else 150
EVAL = dict(batch_size=16, n_batches=4 if FAST else 16)
LORA = LoRAConfig(r=8, alpha=16, targets=("q_proj", "v_proj", "down_proj"))


def lora_on(train_data, seed):
    model = copy.deepcopy(base)
    set_seed(seed)
    inject_lora(model, config=LORA)
    train(model, train_data, steps=STEPS, batch_size=16, lr=3e-3, seed=seed, progress=False)
    return serving.lorakit_factors(model)


n_mix = min(len(docs_train), len(tests_train))
mixed = torch.cat([docs_train[:n_mix], tests_train[:n_mix]])
trained = {"docs": lora_on(docs_train, 0), "tests": lora_on(tests_train, 1), "multi-task": lora_on(mixed, 2)}

both = [trained["docs"], trained["tests"]]
candidates = {"base": None, "docs adapter": trained["docs"], "tests adapter": trained["tests"],
              "multi-task adapter": trained["multi-task"],
              "cat (exact sum)": merging.merge_adapters(both, [1, 1], "cat"),
              "linear": merging.merge_adapters(both, [1, 1], "linear"),
              "TIES (density 0.5)": merging.merge_adapters(both, [1, 1], "ties", density=0.5),
              "DARE-TIES (density 0.5)": merging.merge_adapters(both, [1, 1], "dare_ties", density=0.5, seed=0)}
scores = {}
with torch.no_grad():
    for label, factors in candidates.items():
        model = base if factors is None else serving.merged_copy(base, factors)
        scores[label] = (evaluate(model, docs_val, **EVAL), evaluate(model, tests_val, **EVAL))
print("val bits/byte      docs    tests")
for label, (d, t) in scores.items():
    print(f"{label:<24} {d:6.3f}  {t:6.3f}")

# %%
b_docs, b_tests = scores["base"]
assert scores["docs adapter"][0] < b_docs and scores["tests adapter"][1] < b_tests, "each adapter learns its task"
total = {label: d + t for label, (d, t) in scores.items()}
merges = ["cat (exact sum)", "linear", "TIES (density 0.5)", "DARE-TIES (density 0.5)"]
assert all(total["multi-task adapter"] < total[m] for m in merges), "training on both beats every merge of two specialists"
assert total["cat (exact sum)"] < total["linear"], "the exact sum beats averaging A and B separately (cross terms)"
assert scores["docs adapter"][1] > b_tests, "a specialist can cost the other task: docs costs tests"
kept = {label: ((b_docs - d) / (b_docs - scores["docs adapter"][0]), (b_tests - t) / (b_tests - scores["tests adapter"][1]))
        for label, (d, t) in scores.items() if label != "base"}
for label, (kd, kt) in kept.items():
    print(f"{label:<24} keeps {kd:6.1%} of the docs gain, {kt:6.1%} of the tests gain")

# %% [markdown]
# **The instruction task of notebook 09** (a function's source → its docstring's summary, loss on
# the response bytes only) is a third skill, trained with `sft.train_sft` on the same targets,
# rank and steps. Merge it with the docs adapter and score both tasks.

# %%
CONTEXT = base.cfg.context
MAX_SUMMARY = 28 if FAST else 60   # as in 09: a 64-byte test-mode context needs short answers
instr_train = sft.byte_examples(sft.docstring_pairs("train", MAX_SUMMARY), CONTEXT)
instr_val = sft.byte_examples(sft.docstring_pairs("val", MAX_SUMMARY)[: 64 if FAST else 200], CONTEXT)
instr_model = copy.deepcopy(base)
set_seed(3)
inject_lora(instr_model, config=LORA)
sft.train_sft(instr_model, instr_train, STEPS, 16, 1e-2, pad_id=0, seed=3, progress=False)
trained["instruction"] = serving.lorakit_factors(instr_model)
pair_di = [trained["docs"], trained["instruction"]]
instr_candidates = {"base": None, "docs adapter": trained["docs"], "instruction adapter": trained["instruction"],
                    "cat docs + instruction": merging.merge_adapters(pair_di, [1, 1], "cat"),
                    "TIES docs + instruction": merging.merge_adapters(pair_di, [1, 1], "ties", density=0.5),
                    "cat of all three": merging.merge_adapters(
                        [trained["docs"], trained["tests"], trained["instruction"]], [1, 1, 1], "cat")}
instr_scores = {}
with torch.no_grad():
    for label, factors in instr_candidates.items():
        model = base if factors is None else serving.merged_copy(base, factors)
        instr_scores[label] = (evaluate(model, docs_val, **EVAL), sft.evaluate_sft(model, instr_val, pad_id=0))
print("                         docs (bits/byte)  instruction responses (bits/byte)")
for label, (d, i) in instr_scores.items():
    print(f"{label:<26} {d:8.3f}  {i:12.3f}")
assert instr_scores["instruction adapter"][1] < instr_scores["base"][1], "the instruction adapter learns its task"
assert instr_scores["cat docs + instruction"][1] < instr_scores["base"][1], "the merge keeps part of the instruction skill"
assert instr_scores["cat docs + instruction"][0] > instr_scores["base"][0], "… and loses all of the docs gain: interference"

# %% [markdown]
# Measured here: the exact merge of docs + instruction keeps part of the instruction skill and
# loses all of the docs gain (its docs loss is worse than the base's). Adding updates is exact
# arithmetic, but the two updates act on the same layers and inputs: when one task's update moves
# the other task's predictions, no merge rule can undo it. Serve such adapters side by side
# (section 1), or train one adapter on both.

# %%
fig, ax = plt.subplots(figsize=(6, 4))
for label, (d, t) in scores.items():
    ax.scatter(d, t, s=40)
    ax.annotate(label, (d, t), textcoords="offset points", xytext=(4, 4), fontsize=8)
ax.set_xlabel("docs val (bits/byte, lower is better)")
ax.set_ylabel("tests val (bits/byte, lower is better)")
ax.set_title("Merged adapters: how much of both skills each keeps")
plt.show()

# %% [markdown]
# **Bad inputs are refused before anything changes.** Two adapters of different ranks cannot be
# averaged entry by entry, and an adapter trained for another base does not fit its layers.

# %%
victim = copy.deepcopy(plain_llama)
for label, call in [
    ("TIES on ranks 4 and 16", lambda: merging.merge_adapters([adapters["sql"], adapters["code"]], [1, 1], "ties", density=0.5)),
    ("the course GPT's docs adapter on the Llama", lambda: serving.attach_adapters(victim, {"docs": trained["docs"]})),
    ("adapters with different targets", lambda: serving.attach_adapters(
        victim, {"sql": adapters["sql"], "half": dict(list(adapters["sql"].items())[:1])})),
]:
    try:
        call()
        raise AssertionError(f"{label} should have been refused")
    except ValueError as error:
        print(f"{label}: ValueError: {str(error)[:110]}…")
assert not any(isinstance(mod, serving.MultiLoRALinear) for mod in victim.modules()), "the model was not touched"

# %% [markdown]
# What this measures (asserted above): training one adapter on both tasks beats every merge of
# the two specialists on the two tasks together, and the exact sum (cat) beats averaging $A$ and
# $B$ separately (linear). The table of kept gains shows the rest: a specialist can cost the
# other task, and a merge keeps only part of each gain — merging is cheap, not free. With
# weights other than 1 and 1, or a larger `density`, the balance moves: exercise territory.

# %% [markdown]
# ## 3. Export to llama.cpp's quantized formats
#
# llama.cpp runs GGUF files whose weight matrices are stored in blocks of 32 consecutive
# weights of a row (of `nn.Linear.weight`, out×in: blocks run along the input). Two of its
# oldest formats, derived from the same idea as 06's blockwise absmax:
#
# - **Q8_0**: per block $d = \max|x| / 127$ (stored fp16), $q = \mathrm{round}(x/d)$ as int8
#   (halves away from zero); value $= d\,q$. 34 bytes per 32 weights: 8.5 bits/weight.
# - **Q4_0**: per block the *signed* value of largest magnitude $x_{\max}$ gives $d = x_{\max} / -8$;
#   $q = \lfloor x/d + 8.5 \rfloor$ clipped to 0..15; value $= (q - 8)\,d$. The largest value maps
#   exactly to $q = 0$, so the grid reaches it with −8·d and the other side only to +7·d.
#   Weights 0–15 of a block go to the low nibbles, 16–31 to the high ones. 18 bytes: 4.5 bits/weight.
#
# The codes are computed with the float32 $d$; the file stores it in fp16 and dequantizes with
# that. Build Q4_0 by hand and compare with the package and with `gguf.quants.quantize`.

# %%
def q4_0_by_hand(x):
    blocks = x.float().reshape(-1, 32)
    x_max = blocks.gather(1, blocks.abs().argmax(1, keepdim=True))     # signed, largest magnitude
    d = x_max / -8
    inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    q = torch.trunc(blocks * inv + 8.5).clamp(0, 15).to(torch.uint8)
    nibbles = q[:, :16] | (q[:, 16:] << 4)                             # weight j with weight j+16
    return torch.cat([d.half().view(torch.uint8), nibbles], 1).reshape(*x.shape[:-1], -1)


W = plain_llama.model.layers[0].self_attn.q_proj.weight.detach()
for fmt, ours_bytes in [("Q4_0", q4_0_by_hand(W)), ("Q4_0 (package)", export.quantize_q4_0(W)),
                        ("Q8_0 (package)", export.quantize_q8_0(W))]:
    qtype = gguf.GGMLQuantizationType[fmt.split()[0]]
    theirs = gguf.quants.quantize(W.numpy(), qtype)
    same = np.array_equal(ours_bytes.numpy(), theirs)
    print(f"{fmt:<15} {tuple(W.shape)} → {ours_bytes.shape[-1]} bytes per row "
          f"({ours_bytes.numel() * 8 / W.numel():.2f} bits/weight); equal to gguf's bytes: {same}")
    assert same, f"{fmt} must be byte-equal to gguf.quants.quantize"
    assert np.array_equal(export.roundtrip(W, fmt.split()[0]).numpy(), gguf.quants.dequantize(theirs, qtype))

# %% [markdown]
# **A GGUF file of the tiny Llama**, written with `gguf.GGUFWriter` (architecture keys, tensors
# under llama.cpp's names such as `blk.0.attn_q.weight`, linear weights in Q4_0 by our
# quantizer), read back with `gguf.GGUFReader`, dequantized by `gguf`, and loaded into a fresh
# Llama: it computes what our quantized copy computes. (`convert_hf_to_gguf.py` also writes the
# tokenizer and permutes q/k rows for llama.cpp's RoPE; we leave those out, so llama.cpp itself
# would not run this file.)

# %%
gguf_path = export.write_gguf(plain_llama, f"{llama_dir}/tiny-llama-Q4_0.gguf", "Q4_0")
keys, tensors, types = export.read_gguf(gguf_path)
n_layers = llama_config.num_hidden_layers
reloaded = transformers.LlamaForCausalLM(llama_config).eval()
state = {name: tensors[export.gguf_name(name, n_layers)] for name in plain_llama.state_dict() if name != "lm_head.weight"}
reloaded.load_state_dict(state, strict=False)
reloaded.tie_weights()
with torch.no_grad():
    ref = export.quantized_copy(plain_llama, "Q4_0")(input_ids=ids).logits
    got = reloaded(input_ids=ids).logits
print(f"{gguf_path.name}: {gguf_path.stat().st_size:,} bytes, {len(tensors)} tensors "
      f"({sum(t == 'Q4_0' for t in types.values())} in Q4_0), keys {keys['general.architecture']}/"
      f"{keys['llama.block_count']} blocks/{keys['llama.attention.head_count_kv']} KV heads")
print(f"logits of the model read back vs our Q4_0 copy: max |Δ| = {(got - ref).abs().max():.1e}")
assert keys["llama.block_count"] == n_layers and len(tensors) == len(state)
assert torch.equal(got, ref), "the file holds exactly our quantized weights"

# %% [markdown]
# **How much of the fine-tune survives each format?** Export the docs adapter of section 2:
# merge it exactly ($W_0 + \Delta$; for a QLoRA adapter $\widehat W + \Delta$ with the dequantized
# base, `qlora.merge_into_dequantized`, notebooks 08/09), then store base and fine-tune in each
# format. Three measures, as in 08 §6, with $\Delta_\text{real} = Q(W_0 + \Delta) - Q(W_0)$, the
# change between the exported base and the exported fine-tune:
#
# - the **projection** $\langle \Delta_\text{real}, \Delta\rangle / \|\Delta\|^2$: 1 if the update
#   survives on average, 0 if it is rounded away;
# - the **noise ratio** $\|\Delta_\text{real} - \Delta\| / \|\Delta\|$;
# - the **task metric**: the share of the docs gain (bits/byte) the exported model keeps over the
#   exported base.

# %%
docs_model = serving.merged_copy(base, trained["docs"])
FORMATS = ["F32", "Q8_0", "Q4_0", "NF4"]


def kept_gain(model, fmt, keep=None):
    """Share of the docs gain that survives exporting base and fine-tune in fmt."""
    q_base = evaluate(export.quantized_copy(base, fmt, keep), docs_val, **EVAL)
    return (q_base - evaluate(export.quantized_copy(model, fmt, keep), docs_val, **EVAL)) / gain


survival = {}
with torch.no_grad():
    gain = evaluate(base, docs_val, **EVAL) - evaluate(docs_model, docs_val, **EVAL)
    for fmt in FORMATS:
        survival[fmt] = dict(export.update_survival(base, docs_model, fmt), kept=kept_gain(docs_model, fmt))
        print(f"{fmt:>5} ({export.bits_per_weight(fmt):4.1f} bits/weight): projection {survival[fmt]['projection']:.3f}, "
              f"noise {survival[fmt]['noise']:5.2f}× the update, keeps {survival[fmt]['kept']:6.1%} of the docs gain")
assert survival["F32"]["projection"] > 0.999 and survival["F32"]["noise"] < 1e-3
assert survival["Q8_0"]["kept"] > 0.8, "8 bits keep the fine-tune"
assert all(abs(survival[f]["projection"] - 1) < 0.2 for f in FORMATS), "quantizing from scratch is unbiased"
assert survival["Q4_0"]["noise"] > 2 * survival["Q8_0"]["noise"], "4 bits add more noise to the update than 8"

# %% [markdown]
# **The failure people report: "my fine-tune disappeared after GGUF conversion".** Scale the
# trained update by $c$ (a shorter or gentler fine-tune) and export it two ways:
#
# - *merged in 16/32 bits, then quantized* (the recommended path): each weight changes code only
#   if $W_0 + \Delta$ crosses a midpoint, which happens with a probability proportional to
#   $|\Delta|$ — unbiased (projection ≈ 1), but the noise ratio grows like $1/\sqrt{c}$: a small
#   update drowns;
# - *merged into the already quantized base* (adding the update to a dequantized GGUF and
#   quantizing again, or 08's merge into 4 bits): $Q(W_0)$ sits on the grid, an entry moves only
#   if $|\Delta|$ exceeds half a step, so a small update is **rounded away** (projection → 0).
#
# Then the task metric at the smallest scale, for three exports. Cures, measured: keep the
# fine-tuned layers in Q8_0 while the rest go to Q4_0 (llama.cpp's mixed types keep chosen
# tensors in more bits the same way: recent `llama-quantize --tensor-type`), or train a larger update;
# and merge in 16/32 bits, never into the quantized file.

# %%
SCALES = [0.03, 0.1, 0.3, 1.0, 3.0]
scaled = {}
for c in SCALES:
    model_c = serving.merged_copy(base, {p: (A, B, s * c) for p, (A, B, s) in trained["docs"].items()})
    scaled[c] = {(fmt, into): export.update_survival(base, model_c, fmt, into_quantized=into)
                 for fmt in ["Q8_0", "Q4_0", "NF4"] for into in (False, True)}
    print(f"update × {c:<4}: " + "; ".join(
        f"{fmt} noise {scaled[c][(fmt, False)]['noise']:5.2f}, projection into quantized {scaled[c][(fmt, True)]['projection']:5.2f}"
        for fmt in ["Q8_0", "Q4_0", "NF4"]))
small = SCALES[0]
fine_tuned = {p: "Q8_0" for p in trained["docs"]}
model_small = serving.merged_copy(base, {p: (A, B, s * small) for p, (A, B, s) in trained["docs"].items()})
with torch.no_grad():
    gain_small = evaluate(base, docs_val, **EVAL) - evaluate(model_small, docs_val, **EVAL)
    q4_base = evaluate(export.quantized_copy(base, "Q4_0"), docs_val, **EVAL)
    mixed_base = evaluate(export.quantized_copy(base, "Q4_0", fine_tuned), docs_val, **EVAL)
    kept_small = {
        "Q4_0, merged then quantized": (q4_base - evaluate(export.quantized_copy(model_small, "Q4_0"), docs_val, **EVAL)),
        "Q4_0, merged into the Q4_0 base": (q4_base - evaluate(
            export.quantized_copy(model_small, "Q4_0", into=base), docs_val, **EVAL)),
        "fine-tuned layers Q8_0, merged into it": (mixed_base - evaluate(
            export.quantized_copy(model_small, "Q4_0", fine_tuned, into=base), docs_val, **EVAL)),
    }
for label, kept in kept_small.items():
    kept_small[label] = kept / gain_small
    print(f"update × {small}: {label:<40} keeps {kept_small[label]:7.1%} of its docs gain")

# %%
noise = lambda c, fmt="Q4_0": scaled[c][(fmt, False)]["noise"]          # noqa: E731
into = lambda c, fmt="Q4_0": scaled[c][(fmt, True)]["projection"]       # noqa: E731
assert noise(small) > 3 * noise(1.0), "merged then quantized: the smaller the update, the larger the noise relative to it"
assert into(small) < 0.5 * into(3.0), "merged into the quantized base: a small update is rounded away"
assert into(small, "Q8_0") > 2 * into(small), "the same small update survives in 8 bits"
assert kept_small["Q4_0, merged into the Q4_0 base"] < 0.5, "rounded away: the task gain is gone too"
assert kept_small["fine-tuned layers Q8_0, merged into it"] > 2 * kept_small["Q4_0, merged into the Q4_0 base"], \
    "keeping the fine-tuned layers in 8 bits brings the small update back"
assert kept_small["Q4_0, merged then quantized"] > 2 * kept_small["Q4_0, merged into the Q4_0 base"], \
    "merging in float then quantizing keeps more of the task than merging into the quantized base"

# %% [markdown]
# On this model the noise of "merged then quantized" is random across weights and the task gain
# survives it; the rounding of "merged into the quantized base" is systematic and takes the gain
# with it. Both are the same bytes on disk for a large update, which is why the failure shows up
# only for gentle fine-tunes (small learning rate, few steps, small α/r).

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
for fmt in ["Q8_0", "Q4_0", "NF4"]:
    ax1.plot(SCALES, [scaled[c][(fmt, False)]["noise"] for c in SCALES], "o-", label=fmt)
    ax2.plot(SCALES, [scaled[c][(fmt, True)]["projection"] for c in SCALES], "o-", label=fmt)
for ax in (ax1, ax2):
    ax.set_xscale("log")
    ax.set_xlabel("update scale c (1 = the trained docs adapter)")
    ax.legend(loc="best")
ax1.set_yscale("log")
ax1.set_ylabel("noise ratio ‖Δ_real − Δ‖ / ‖Δ‖")
ax1.set_title("Merged, then quantized:\nsmall updates drown in noise", fontsize=10)
ax2.axhline(1.0, color="gray", lw=0.8, ls="--")
ax2.set_ylabel("projection (1 = survives, 0 = rounded away)")
ax2.set_title(f"Merged into the quantized base:\nQ4_0 keeps {scaled[small][('Q4_0', True)]['projection']:.2f} "
              f"of the update at c = {small}", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. What the CPU cannot show: the exact steps, and their traps
#
# **vLLM** (multi-LoRA on a GPU, Punica-style kernels). Start the server with the adapters and
# the largest rank you will serve, then name an adapter as the `model` of a request:
#
# ```bash
# vllm serve meta-llama/Llama-3.2-3B-Instruct --enable-lora \
#     --lora-modules sql=./sql-adapter docs=./docs-adapter --max-lora-rank 64 --max-loras 4
# ```
#
# Traps: an adapter whose `r` exceeds `--max-lora-rank` is refused (the default is 16; a larger
# cap reserves more memory for every slot, as the padding above shows); `--max-loras` is how many
# adapters one batch may mix, `--max-cpu-loras` how many are cached in CPU memory; the adapter
# folder is PEFT's (`adapter_config.json` + `adapter_model.safetensors`); vLLM serves LoRA
# adapters on a 16-bit base, so a QLoRA adapter runs against the 16-bit weights, not the
# $\widehat W$ it was trained on (08 §6 measured what that costs; the exact alternative is to
# merge into $\widehat W$ and serve the merged model).
#
# **SGLang** (S-LoRA and Punica techniques). `python -m sglang.launch_server --model-path ...
# --enable-lora --lora-paths sql=./sql-adapter docs=./docs-adapter --max-loras-per-batch 4`,
# then `"lora_path": "sql"` per request (a list for a batch); `--lora-backend` picks the kernel
# (`triton` or the chunked SGMV `csgmv`). Trap: `max_loras_per_batch` reserves GPU memory.
#
# **S-LoRA** itself (arXiv 2311.03285) keeps all adapters in host memory and pages the active
# ones into a unified GPU pool shared with the KV cache (both are vectors of the hidden size),
# so thousands of adapters share one GPU.
#
# **llama.cpp, adapter kept separate.** Convert the PEFT adapter against its base:
# `python convert_lora_to_gguf.py ./docs-adapter --base ./base-hf-folder --outtype f16
# --outfile docs-lora.gguf`, then `llama-cli -m base-Q4_0.gguf --lora docs-lora.gguf`
# (`--lora-scaled docs-lora.gguf 0.5` to weight it; `llama-server` takes the same flags, and its
# `/lora-adapters` endpoint changes their scales while it runs). Or bake it in: `llama-export-lora -m base-f16.gguf --lora
# docs-lora.gguf -o merged-f16.gguf`, then `llama-quantize merged-f16.gguf merged-Q4_0.gguf Q4_0`.
# Traps: the base GGUF must come from the same checkpoint the adapter was trained on; merging
# then quantizing to 4 bits is exactly section 3's experiment — check the projection of your
# update, and keep the fine-tuned tensors in 8 bits if it is small.
#
# **Ollama.** A `Modelfile` with `FROM <the base>` and `ADAPTER ./docs-adapter` (a safetensors
# PEFT adapter folder for Llama, Mistral and Gemma architectures, or a GGUF adapter), then
# `ollama create docs-model -f Modelfile` and `ollama run docs-model`. Traps: the `FROM` base
# must be the one the adapter was tuned from (otherwise the behaviour is undefined); a merged
# safetensors folder (`FROM ./merged-folder`) is imported in 16 bits unless you pass
# `ollama create --quantize q4_K_M ...`, and an imported GGUF is never re-quantized — so the
# 4-bit step of section 3 happens wherever you quantize: measure your update there.

# %% [markdown]
# ## Summary
#
# - A mixed-adapter batch computed by a loop, by gathering padded stacks (BGMV) or by sorted
#   segments (SGMV) equals PEFT's `adapter_names=` row by row; one base + k adapters takes far
#   fewer bytes than k merged copies; padding to $r_{\max}$ is what `max_lora_rank` caps.
#   Throughput was measured and printed, not asserted.
# - `lorakit.merging` reproduces `add_weighted_adapter` for linear, cat, TIES, DARE-linear and
#   DARE-TIES; cat is the exact weighted sum of the updates, linear is not (cross terms
#   $A_iB_j$). On docs + tests, one adapter trained on both beats every merge of the two
#   specialists, and cat beats linear; the tables show how much of each skill (docs, tests, the
#   instruction task of 09) each merge keeps. Bad inputs are refused before anything changes.
# - Q8_0 and Q4_0 by hand are byte-equal to `gguf`; a GGUF file round-trips through
#   `GGUFWriter`/`GGUFReader`. Q8_0 keeps the trained update. Merged in 16/32 bits then quantized,
#   an update survives on average but a small one drowns in rounding noise; merged into the
#   quantized base, a small one is rounded away. Keeping the fine-tuned layers in 8 bits (or a
#   larger update) brings it back.
#
# ## Exercises
#
# Worked solutions: `notebooks/solutions/nb12.py` (try first; each checker says what is wrong).

# %%
from lorakit.exercises.nb12 import check_ex_12_1, check_ex_12_2, check_ex_12_3, check_ex_12_4

# %% [markdown]
# **Exercise 12.1 — The price of `max_lora_rank`.** A server hosts 8 adapters on a model with 32
# decoder layers; each adapter targets `q_proj` (4096×4096) and `v_proj` (4096×1024, in×out) of
# every layer. Ranks: two adapters at r = 64, six at r = 8. How many **MB** (1e6 bytes) do the
# stacked A and B take in fp16 when every adapter is padded to r_max = 64, and how many at their
# own ranks? Answer: a pair `(padded_MB, own_MB)` (within 0.5 %). Hint: one unit of rank on one
# layer costs (in + out) numbers.

# %%
answer = None  # your answer here: (padded_MB, own_MB)
check_ex_12_1(answer)

# %% [markdown]
# **Exercise 12.2 — Q8_0 by hand.** Write `q8_0(x)` that takes a float32 tensor whose last
# dimension is a multiple of 32 and returns the Q8_0 bytes as a `torch.uint8` tensor of shape
# `(*x.shape[:-1], x.shape[-1] // 32 * 34)`, byte-equal to `gguf.quants.quantize(x.numpy(),
# GGMLQuantizationType.Q8_0)`. The checker uses values with exact halves and an all-zero block.
# Hint: `torch.round` rounds halves to even; C's `roundf` rounds them away from zero.

# %%
answer = None  # your answer here: def q8_0(x): ... ; answer = q8_0
check_ex_12_2(answer)

# %% [markdown]
# **Exercise 12.3 — An exact merge of two adapters.** Write `merge_exact(a1, a2, w1, w2)` where
# each adapter is `(A, B, scaling)` (A in×r_i, B r_i×out) and return `(A, B)` such that
# `A @ B == w1·scaling1·A1 B1 + w2·scaling2·A2 B2` (within 1e-5). Any factorization is accepted;
# the ranks may differ. Hint: section 2's cat.

# %%
answer = None  # your answer here: def merge_exact(a1, a2, w1, w2): ... ; answer = merge_exact
check_ex_12_3(answer)

# %% [markdown]
# **Exercise 12.4 — Predict, then measure: exported from 16 bits, or merged into the quantized file?**
# With `g = torch.Generator().manual_seed(12)`, draw `W = 0.02 * torch.randn(256, 256, generator=g)`
# **first**, then `dW = 1e-4 * torch.randn(256, 256, generator=g)`. Before running, predict for
# Q4_0: is `dW` kept on average when `W + dW` is quantized from scratch? And when it is added to
# the already quantized `W_q = export.roundtrip(W, "Q4_0")` and quantized again? Then return
# `(projection_scratch, noise_scratch, projection_into_quantized)` as defined in section 3, each
# measured from the quantized base `W_q` (within 0.001). Hint: `export.roundtrip(x, "Q4_0")`.

# %%
answer = None  # your answer here: (projection_scratch, noise_scratch, projection_into_quantized)
check_ex_12_4(answer)

# %% [markdown]
# ## References
#
# | idea | paper | in the reference libraries and runtimes |
# |---|---|---|
# | many adapters in one batch: SGMV / BGMV kernels | Chen et al. 2023, *Punica*, [arXiv:2310.18547](https://arxiv.org/abs/2310.18547) | PEFT `model(..., adapter_names=[...])`; vLLM `--enable-lora --max-lora-rank --max-loras`; SGLang `--lora-paths --max-loras-per-batch --lora-backend` |
# | thousands of adapters, unified paging with the KV cache | Sheng et al. 2023, *S-LoRA*, [arXiv:2311.03285](https://arxiv.org/abs/2311.03285) | SGLang's LoRA serving (S-LoRA and Punica techniques) |
# | TIES merging: trim, elect sign, disjoint merge | Yadav et al. 2023, [arXiv:2306.01708](https://arxiv.org/abs/2306.01708) | `peft.LoraModel.add_weighted_adapter(combination_type="ties", density=..., majority_sign_method="total")`, `peft.utils.merge_utils.ties` |
# | DARE: drop and rescale | Yu et al. 2023, [arXiv:2311.03099](https://arxiv.org/abs/2311.03099) | `combination_type="dare_linear"` / `"dare_ties"`, `peft.utils.merge_utils.dare_linear` |
# | task arithmetic (adding updates) | Ilharco et al. 2022, *Editing models with task arithmetic*, [arXiv:2212.04089](https://arxiv.org/abs/2212.04089) | `combination_type="cat"` (exact for LoRA) / `"svd"` |
# | LoRA, merging one adapter | Hu et al. 2021, [arXiv:2106.09685](https://arxiv.org/abs/2106.09685) | `merge_and_unload()` |
# | Q8_0, Q4_0, GGUF | llama.cpp (`ggml-quants.c`, `gguf-py`) | `gguf.quants.quantize`/`dequantize`, `gguf.GGUFWriter`, `gguf.GGUFReader`; `convert_hf_to_gguf.py`, `convert_lora_to_gguf.py`, `llama-quantize`, `llama-export-lora`, `llama-cli --lora` |
# | the exact merge of a QLoRA adapter into Ŵ | Dettmers et al. 2023, *QLoRA*, [arXiv:2305.14314](https://arxiv.org/abs/2305.14314); notebooks 08 §6, 09 | `lorakit.qlora.merge_into_dequantized` |
# | Ollama import | Ollama docs, `docs/import.mdx` and the Modelfile `ADAPTER` instruction | `ollama create NAME -f Modelfile` |
