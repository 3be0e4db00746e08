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
# # 11 — LoRA after SFT: preferences (DPO) and reinforcement learning (GRPO)
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lorakit/lorakit/blob/v0.1.0/notebooks/11_lora_after_sft.ipynb)
#
# Take notebook 09's fine-tuned model further with LoRA: teach it preferences with DPO and a
# reward with GRPO, both from scratch, and measure what rank RL really needs against full
# fine-tuning and against SFT on the same task.
#
# **You will**
# - write a reward that Python itself checks, and watch a policy find the hole in it;
# - derive DPO from the Bradley–Terry model and train it with the reference model for free: the
#   same network with its adapter switched off;
# - build GRPO (group-normalised advantages, clipped ratio, KL), compare rank 1, rank 8 and full
#   fine-tuning under RL and under SFT, and diagnose the four failures RL with LoRA is known for.
#
# **Where the numbers come from.** The DPO runs (§2), the GRPO comparison (§3) and the SFT
# comparison (§4) are 20 training runs: at learner size their results ship with lorakit
# (`lorakit/results/11_*.json`; `shipped.load` prints each file's card: when, where, how long, and
# the command that regenerates it). One representative run (§4: SFT at rank 8) is re-run live and
# checked against the shipped runs; everything else that needs a model (the checks of §2, §5,
# §6) runs here. To recompute everything: start Jupyter with `LORAKIT_RECOMPUTE=1`, or set
# `os.environ["LORAKIT_RECOMPUTE"] = "1"` in the first code cell; `make results NB=11`
# regenerates the shipped files.
#
# **Short of time?** Run §1–§4 and stop there: with the shipped results they skip 20 training
# runs and take seconds once notebook 09's fine-tune is cached (the first run trains it, about
# 2 minutes on 2 cores); §4's live run is the check that the shipped numbers hold on your
# machine. §5 (a Hugging Face model) and §6 (planted failures) can wait.
#
# **Runtime** (top to bottom in a fresh kernel; default: shipped results + one live point;
# recompute: `LORAKIT_RECOMPUTE=1`, every run of §2–§4 trained here)
#
# | device | test mode (`LORAKIT_FAST=1`) | learner size, default: shipped results + live point | learner size, everything recomputed (`LORAKIT_RECOMPUTE=1`) |
# |---|---|---|---|
# | 2-core x86_64 CPU, otherwise idle (load ≤ 1.7), 2026-12-06 | 12 s (load 0.8) | 53 s (notebook 09's SFT start trained in the run, then cached) | 272 s (the SFT start trained too) |
# | Colab T4 (16 GB), SmolLM2-360M-Instruct (§5) | — | not yet measured | — |

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
import math
import os
import statistics
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from lorakit import doctor, hf, preference, rl, sft, shipped
from lorakit.data import encode
from lorakit.exercises.nb11 import check_ex_11_1, check_ex_11_2, check_ex_11_3
from lorakit.lora import inject_lora, lora_layers
from lorakit.model import count_parameters
from lorakit.train import base_model, fast_mode, pick_device, set_seed

FAST = fast_mode()
DEVICE = pick_device()
print(f"test mode: {FAST}; device: {DEVICE}")

# %% [markdown]
# ## 1. A reward that Python itself can check
#
# Reinforcement learning needs a score for every answer the model writes. For notebook 09's task
# (read a function, write its docstring's first line) `lorakit.rl.reward` checks three things a
# learner can read in one screen (`rl.reward_parts`):
#
# | part | weight | passes when |
# |---|---|---|
# | `stops` | 0.25 | the answer ends with the end-of-sequence marker within the byte budget |
# | `sentence` | 0.25 | one line, a capital first letter, a full stop at the end |
# | `overlap` | 0.5 | content words shared with the true line ÷ the *larger* of the two word counts |
#
# Why the overlap cannot be gamed by listing likely words: its denominator is the longer word
# list, so every guessed word that misses *lowers* the score; common words ("Return the value")
# are stop words and count for nothing. The true line scores 1.0.

# %%
pair = next(p for p in sft.docstring_pairs("val", 60) if p.name == "isleap") if not FAST else \
    sft.docstring_pairs("val", 28)[0]
cases = {"the true line": (pair.summary, True), "true line, never stopped": (pair.summary, False),
         "a padded guess": ("Return " + " ".join(sorted(rl.content_words(pair.summary))) + " values dates times "
                            "months weeks days calendars.", True),
         "a one-word sentence": ("Rod.", True), "babble": ("return the the and the", False)}
for name, (answer, stopped) in cases.items():
    print(f"{name:>26}: {rl.reward(answer, stopped, pair.summary):.3f}  {rl.reward_parts(answer, stopped, pair.summary)}")

# %%
scores = {name: rl.reward(a, s, pair.summary) for name, (a, s) in cases.items()}
assert scores["the true line"] == 1.0, "the true line, ended, gets full marks"
assert scores["a padded guess"] < scores["the true line"] and scores["babble"] < 0.25
assert scores["a one-word sentence"] == 0.5, "format alone is worth half: the hole a policy can find (§3)"

# %% [markdown]
# ## 2. DPO: preferences without a reward model, and without a second model
#
# **Derivation.** Under the Bradley–Terry model a reward $r$ prefers answer $y_w$ to $y_l$ with
# probability $\sigma(r(x,y_w) - r(x,y_l))$. The policy that maximises
# $\mathbb{E}[r] - \beta\,\mathrm{KL}(\pi\,\|\,\pi_{\mathrm{ref}})$ is
# $\pi(y|x) \propto \pi_{\mathrm{ref}}(y|x)\,e^{r(x,y)/\beta}$, so
# $r(x,y) = \beta \log\frac{\pi(y|x)}{\pi_{\mathrm{ref}}(y|x)} + \beta\log Z(x)$. The $\log Z(x)$
# cancels in the difference, and the likelihood of the preferences becomes a loss on the policy
# alone (Rafailov et al. 2023):
#
# $$L_{\mathrm{DPO}} = -\log\sigma\Big(\beta\big[(\log\pi(y_w|x) - \log\pi_{\mathrm{ref}}(y_w|x)) -
# (\log\pi(y_l|x) - \log\pi_{\mathrm{ref}}(y_l|x))\big]\Big)$$
#
# with $\log\pi(y|x)$ summed over the answer's tokens only (notebook 09's loss mask). $\beta$ is
# the leash: it sets how far the policy may move from $\pi_{\mathrm{ref}}$ for a given preference.
#
# **The reference for free.** With LoRA, $\pi_{\mathrm{ref}}$ is the same network with the
# adapter switched off: `preference.adapter_disabled(model)` swaps each LoRA layer for its own
# base layer inside a `with` block (for a PEFT model: its `disable_adapter()`). No weights are
# copied. Full-fine-tuning DPO needs a frozen second copy of the model.
#
# **The pairs, offline.** Chosen: the true summary. Rejected: what notebook 09's fine-tuned model
# itself answers (greedy) to the same function — the habits DPO should unlearn.

# %%
start, start_settings = rl.sft_start(progress=not FAST)  # notebook 09 §3's fine-tune, cached after the first run
MAX_SUMMARY, CONTEXT = start_settings["max_summary"], start.cfg.context
CODE_BYTES = 12 if FAST else 24        # each prompt: the template around the first CODE_BYTES of the code
MAX_NEW = 20 if FAST else 48           # the answer budget in bytes
train_pairs, val_pairs = sft.docstring_pairs("train", MAX_SUMMARY), sft.docstring_pairs("val", MAX_SUMMARY)
train_task = rl.byte_task(train_pairs, CODE_BYTES, CONTEXT)
val_task = rl.byte_task(val_pairs, CODE_BYTES, CONTEXT)
val_task.prompts, val_task.summaries = val_task.prompts[:32], val_task.summaries[:32]
print(f"notebook 09's model: context {CONTEXT} bytes, {count_parameters(start):,} parameters; "
      f"{len(train_task.prompts):,} training and {len(val_task.prompts)} held-out prompts")

N_DPO = 32 if FAST else 128
dpo_pairs = [p for p in train_pairs if len(encode(p.code)) >= CODE_BYTES][:N_DPO]

# what every shipped result below depends on: notebook 09's fine-tune (its settings and the base
# model it starts from) and the task; each section adds its own sizes, grids and seeds
_, base_info = base_model(progress=False)
TASK = dict(start=start_settings, base=base_info.get("sha256") or base_info.get("key") or str(base_info.get("path")),
            config=start.cfg.to_dict(), code_bytes=CODE_BYTES, max_new=MAX_NEW, held_out=len(val_task.prompts))

# %% [markdown]
# Build the loss by hand, then check it against the package's `dpo_loss` (TRL's argument order:
# policy chosen, policy rejected, reference chosen, reference rejected). The tests check both and
# the gradient against the paper's formula written out with Python floats.

# %%
def my_dpo_loss(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr)))


g = torch.Generator().manual_seed(0)
logps = [torch.randn(8, generator=g) * 10 for _ in range(4)]
assert torch.allclose(my_dpo_loss(*logps, 0.1), preference.dpo_loss(*logps, beta=0.1))
assert math.isclose(preference.dpo_loss(*[torch.zeros(1)] * 4, beta=0.1).item(), math.log(2), rel_tol=1e-6), \
    "at the reference every pair costs log 2"

# %%
check_pairs = dpo_pairs[-8:]  # 8 held-out pairs, built here: the model's own greedy answer is the rejected one
check_own = rl.greedy_answers(start, rl.byte_task(check_pairs, CODE_BYTES, CONTEXT), MAX_NEW)
batch = preference.preference_batch([preference.preference_example(p, text, None, CONTEXT)
                                     for p, (text, _) in zip(check_pairs, check_own)], pad_id=0)
policy = copy.deepcopy(start)
inject_lora(policy, "all-linear", r=8, alpha=8)
with torch.no_grad():
    for layer in lora_layers(policy).values():  # pretend it trained: B away from zero
        layer.B.normal_(0, 0.05)
    adapted = preference.sequence_logps(policy, batch)
    n_before = count_parameters(policy)
    with preference.adapter_disabled(policy):
        reference = preference.sequence_logps(policy, batch)
        inside = {id(p) for p in policy.parameters()}
    plain = preference.sequence_logps(start, batch)
print(f"log π(y|x) of 8 answers, adapter on vs off: max |Δ| = {(adapted - reference).abs().max():.3f} nats; "
      f"off vs notebook 09's model: max |Δ| = {(reference - plain).abs().max():.1e}")

# %%
assert torch.equal(reference, plain), "switched off, the adapter model IS the SFT model, bit for bit"
assert not torch.allclose(adapted, reference), "switched on, it differs"
assert inside <= {id(p) for p in policy.parameters()} and count_parameters(policy) == n_before, \
    "the reference used the policy's own tensors: no second model exists"
assert lora_layers(policy), "the adapters are back after the with block"

# %% [markdown]
# **Train it, and sweep β.** Two LoRA runs (rank 8) that differ in β only. We read two numbers on
# the held-out pairs: the *reward accuracy* (share of pairs whose implicit reward
# $\beta\log\frac{\pi}{\pi_{\mathrm{ref}}}$ prefers the chosen answer; TRL's `rewards/accuracies`)
# and the *drift* $|\log\pi - \log\pi_{\mathrm{ref}}|$ per answer — how far the policy moved.
# At learner size these numbers ship (`11_dpo`, card printed below); the cell trains both runs
# when you recompute (about half a minute on 2 cores) or change a setting.

# %%
BETAS = (0.1, 1.0)
DPO = dict(TASK, pairs=N_DPO, steps=6 if FAST else 30, batch_size=8, lr=3e-3, betas=BETAS, r=8, alpha=8, seed=0)
dpo = shipped.load("11_dpo", DPO)
if dpo is None:
    t0 = time.perf_counter()
    own = rl.greedy_answers(start, rl.byte_task(dpo_pairs, CODE_BYTES, CONTEXT), MAX_NEW)
    dpo_examples = [preference.preference_example(p, text, None, CONTEXT) for p, (text, _) in zip(dpo_pairs, own)]
    dpo_train, dpo_val = dpo_examples[: N_DPO * 3 // 4], dpo_examples[N_DPO * 3 // 4 :]
    dpo = dict(n_train=len(dpo_train), n_val=len(dpo_val), chosen=dpo_pairs[0].summary, rejected=own[0][0], runs={})
    for beta in BETAS:
        set_seed(DPO["seed"])  # the adapter's initial A, then the batches
        policy = copy.deepcopy(start)
        inject_lora(policy, "all-linear", r=DPO["r"], alpha=DPO["alpha"])
        hist = preference.train_dpo(policy, dpo_train, DPO["steps"], DPO["batch_size"], DPO["lr"], beta, pad_id=0,
                                    seed=DPO["seed"], progress=not FAST, desc=f"DPO β={beta}")
        dpo["runs"][str(beta)] = dict(loss=[float(x) for x in hist["loss"]],
                                      accuracy=float(preference.reward_accuracy(policy, dpo_val, 0)),
                                      drift=float(preference.drift(policy, dpo_val, 0)))
    shipped.record("11_dpo", DPO, dpo, time.perf_counter() - t0)
dpo_runs = {beta: dpo["runs"][str(beta)] for beta in BETAS}
print(f"{dpo['n_train']} training and {dpo['n_val']} held-out preference pairs; one of them:")
print(f"  chosen:   {dpo['chosen']!r}\n  rejected: {dpo['rejected']!r}")
for beta, run in dpo_runs.items():
    print(f"β = {beta}: loss {run['loss'][0]:.3f} → {statistics.mean(run['loss'][-3:]):.3f} (last 3 steps), "
          f"held-out reward accuracy {run['accuracy']:.2f}, drift {run['drift']:.2f} nats/answer")

# %%
for run in dpo_runs.values():
    assert len(run["loss"]) == DPO["steps"] and abs(run["loss"][0] - math.log(2)) < 1e-5, \
        "step 0: the policy is the reference"
    assert run["drift"] > 0
if not FAST:
    for run in dpo_runs.values():
        assert run["accuracy"] > 0.8, "DPO learned to prefer the true summary over its own babble, on held-out pairs"
    assert dpo_runs[0.1]["drift"] > dpo_runs[1.0]["drift"], "a smaller β lets the policy drift further"

# %%
fig, ax = plt.subplots(figsize=(6, 4))
for beta, run in dpo_runs.items():
    ax.plot(run["loss"], label=f"β = {beta} (held-out accuracy {run['accuracy']:.2f})")
ax.axhline(math.log(2), color="gray", ls="--", label="log 2: the policy equals the reference")
ax.set_xlabel("step")
ax.set_ylabel("DPO loss (nats)")
ax.set_title("DPO with LoRA: the reference is the adapter switched off")
ax.legend(loc="upper right")
plt.show()

# %% [markdown]
# ## 3. GRPO from scratch, and what rank RL needs
#
# GRPO (Shao et al. 2024) drops PPO's value model: for each prompt it samples a **group** of $G$
# answers, scores them, and uses the group as its own baseline,
# $\hat A_i = \frac{r_i - \mathrm{mean}(r)}{\mathrm{std}(r)}$. Every token of answer $i$ gets
# $\hat A_i$. The loss is PPO's clipped ratio $\rho = \pi/\pi_{\mathrm{old}}$ minus a KL penalty
# to the reference, estimated per token as $\frac{\pi_{\mathrm{ref}}}{\pi} - \log\frac{\pi_{\mathrm{ref}}}{\pi} - 1 \ge 0$:
#
# $$L = -\frac{1}{G}\sum_i \frac{1}{|o_i|}\sum_t \Big[\min\big(\rho_{i,t}\hat A_i,\ \mathrm{clip}(\rho_{i,t}, 1-\varepsilon, 1+\varepsilon)\hat A_i\big) - \beta_{\mathrm{KL}}\,\mathrm{KL}_{i,t}\Big]$$
#
# A group whose answers all score the same has $\hat A = 0$: it teaches nothing (§6).

# %%
rewards = torch.tensor([[0.5, 0.75, 0.25, 0.5], [0.25, 0.25, 0.25, 0.25]])
mine = (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)
print("advantages:", mine.numpy().round(3).tolist())
assert torch.allclose(mine, rl.group_advantages(rewards)), "ours equals lorakit.rl.group_advantages"
assert torch.equal(mine[1], torch.zeros(4)), "an all-equal group has zero advantage"

# %% [markdown]
# **The comparison.** From notebook 09's model: LoRA rank 1, LoRA rank 8 (both on every linear
# layer, α = 8 fixed, as "LoRA Without Regret" does) and full fine-tuning, each at the better of
# two learning rates (notebook 04's protocol: tune on seed 0, then rerun the best with seed 1).
# A LoRA run's reference is its adapter switched off; the full fine-tune needs a frozen copy.
# "Reward" below is the mean verifier score of the answers sampled in the last three steps.
# These nine runs are the slow part of the notebook: at learner size their numbers ship
# (`11_rl`), with the greedy answers the best policy gave (text: the models do not ship).

# %%
RL = dict(steps=2 if FAST else 8, group_size=4, prompts_per_step=2 if FAST else 4, max_new=MAX_NEW)
METHODS = {"rank 1": (1, (3e-3, 1e-2)), "rank 8": (8, (3e-3, 1e-2)), "full": (0, (3e-4, 1e-3))}
ALPHA, SEEDS = 8, (0, 1)  # seed 0 tunes the learning rate, seed 1 reruns the best


def make(r):
    model = copy.deepcopy(start)
    if r:
        inject_lora(model, "all-linear", r=r, alpha=ALPHA)
        return model, None
    return model.requires_grad_(True), copy.deepcopy(start).requires_grad_(False)


def rl_run(r, lr, seed):
    set_seed(seed)  # the adapter's initial A too: a seed names the whole run
    model, ref = make(r)
    hist = rl.train_grpo(model, train_task, lr=lr, seed=seed, reference=ref, progress=not FAST,
                         desc=f"GRPO r={r or 'full'} lr={lr:g} seed {seed}", **RL)
    return model, dict(history=hist, final=statistics.mean(hist["reward"][-3:]))


RL_SETTINGS = dict(TASK, **RL, methods=METHODS, alpha=ALPHA, seeds=SEEDS)
rl_results = shipped.load("11_rl", RL_SETTINGS)
if rl_results is None:
    t0 = time.perf_counter()
    rl_results, policies = dict(start_reward=rl.mean_reward(start, val_task, MAX_NEW), methods={}), {}
    for name, (r, lrs) in METHODS.items():
        tuned = {lr: rl_run(r, lr, seed=SEEDS[0]) for lr in lrs}
        best = max(lrs, key=lambda lr: tuned[lr][1]["final"])
        runs = [tuned[best], rl_run(r, best, seed=SEEDS[1])]
        policies[name] = runs[0][0]
        rl_results["methods"][name] = dict(
            lr=best, trainable=count_parameters(runs[0][0], trainable_only=True), runs=[run for _, run in runs],
            grid={f"{lr:g}": tuned[lr][1]["final"] for lr in lrs},
            held_out=[rl.mean_reward(model, val_task, MAX_NEW) for model, _ in runs])
    best_name = max(METHODS, key=lambda k: statistics.mean(rl_results["methods"][k]["held_out"]))
    rl_results["answers"] = dict(  # greedy, held-out, before RL and after it (best method, seed 0)
        method=best_name, before=[list(a) for a in rl.greedy_answers(start, val_task, MAX_NEW)],
        after=[list(a) for a in rl.greedy_answers(policies[best_name], val_task, MAX_NEW)])
    del policies
    shipped.record("11_rl", RL_SETTINGS, rl_results, time.perf_counter() - t0)
start_reward = rl_results["start_reward"]
print(f"notebook 09's model: held-out greedy reward {start_reward:.3f}")
print(f"{'method':<8}{'trainable':>11}{'best lr':>9}  {'grid (seed 0)':<26}{'reward, 2 seeds':<22}{'held-out greedy':<18}")
for name, (_, lrs) in METHODS.items():
    res = rl_results["methods"][name]
    finals = [run["final"] for run in res["runs"]]
    grid = ", ".join(f"{lr:g}: {res['grid'][f'{lr:g}']:.2f}" for lr in lrs)
    print(f"{name:<8}{res['trainable']:>11,}{res['lr']:>9g}  {grid:<26}"
          f"{statistics.mean(finals):.3f} ({min(finals):.3f}–{max(finals):.3f})   "
          f"{statistics.mean(res['held_out']):.3f} ({min(res['held_out']):.3f}–{max(res['held_out']):.3f})")

# %%
for res in rl_results["methods"].values():
    for run in res["runs"]:
        assert len(run["history"]["reward"]) == RL["steps"] and 0 <= run["final"] <= 1
rl_gain = {name: statistics.mean(r["final"] for r in res["runs"]) - statistics.mean(
    res["runs"][0]["history"]["reward"][:2]) for name, res in ((k, rl_results["methods"][k]) for k in METHODS)}
print("reward gain over the run (last 3 steps − first 2), mean of 2 seeds:", {k: round(v, 3) for k, v in rl_gain.items()})

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for name in METHODS:
    res = rl_results["methods"][name]
    curves = torch.tensor([run["history"]["reward"] for run in res["runs"]])
    line, = axes[0].plot(range(1, RL["steps"] + 1), curves.mean(0), label=f"{name} (lr {res['lr']:g})")
    axes[0].fill_between(range(1, RL["steps"] + 1), curves.min(0).values, curves.max(0).values,
                         color=line.get_color(), alpha=0.2)
    finals = [run["final"] for run in res["runs"]]
    axes[1].errorbar(res["trainable"], statistics.mean(finals),
                     yerr=[[statistics.mean(finals) - min(finals)], [max(finals) - statistics.mean(finals)]],
                     fmt="o", capsize=4, color=line.get_color(), label=name)
axes[0].set_xlabel("GRPO step")
axes[0].set_ylabel("mean reward of the sampled answers")
axes[0].set_title("Reward vs steps (line: mean of 2 seeds; band: range)")
axes[0].legend(loc="upper left")
axes[1].set_xscale("log")
axes[1].set_xlabel("trainable parameters")
axes[1].set_ylabel("reward, last 3 steps")
axes[1].set_title("Reward vs trainable parameters (bars: 2 seeds)")
axes[1].legend(loc="upper left")
plt.show()

# %% [markdown]
# **What the policy learned.** Read the answers: a policy optimises the reward it is given, not
# the one we meant. (The greedy answers of the method with the best held-out reward, seed 0,
# ship with the numbers as text.)

# %%
best_name, before, answers = (rl_results["answers"][k] for k in ("method", "before", "after"))
for (a, s), (b, t), truth in list(zip(answers, before, val_task.summaries))[:4]:
    print(f"true: {truth!r}\n   before RL: {b!r} (stopped: {t})\n   after RL ({best_name}): {a!r} (stopped: {s})")
parts = [rl.reward_parts(a, s, truth) for (a, s), truth in zip(answers, val_task.summaries)]
share = {k: statistics.mean(p[k] for p in parts) for k in ("stops", "sentence", "overlap")}
print("after RL, held-out share passing each check:", {k: round(v, 2) for k, v in share.items()})
stops_before = statistics.mean(float(t) for _, t in before)
print(f"held-out answers that stop: {stops_before:.2f} before RL, {share['stops']:.2f} after")
if not FAST:
    assert share["overlap"] < max(share["stops"], share["sentence"]), "format is earned more often than content"

# %% [markdown]
# **A reward hack, within reach.** Half the reward is format (`stops` + `sentence`), and the
# shortest way to earn it is a short sentence that stops at once, whatever the function does.
# What 8 steps of RL find on this tiny model varies from run to run (a different SFT start, a
# different CPU, the thread count all change the samples). In one of our runs the policy learned
# to answer "Re." to every held-out function — every answer stopped and was a sentence, none
# shared a content word: the full format reward for no content. In another, "Return a and this
# and attion." for every function; in a third it barely moved. What held in every run we made:
# after RL, held-out answers pass a format check more often than they share content with the
# true line (asserted at learner size). The policy optimises the reward it is given, not the one
# we meant: a stronger verifier pays for format only together with content (exercise 11.3); a
# stronger model has content to offer. Learning "stop in one sentence" is a few bits — the kind
# of thing the "one bit per episode" argument says a rank-1 adapter can hold.

# %% [markdown]
# ## 4. The same comparison under SFT
#
# Supervised fine-tuning on the *same* prompts, the true summary as the target: rank 1, rank 8,
# full, each at the better of two learning rates, two seeds. SFT's signal is the whole answer,
# token by token: many bits per example. We read the held-out response loss (bits per byte) and
# the verifier's held-out greedy reward. The numbers ship (`11_sft`); rank 8 at its best learning
# rate ships with a third seed, because it is the run this notebook repeats live below.

# %%
SFT = dict(steps=4 if FAST else 30, batch_size=16, warmup=2)
sft_train = rl.answer_examples(train_task)
sft_val = rl.answer_examples(val_task)
SFT_LRS = {"rank 1": (1e-3, 3e-3), "rank 8": (1e-3, 3e-3), "full": (1e-4, 3e-4)}
LIVE, LIVE_SEEDS = "rank 8", (0, 1, 2)  # the point re-run live, and the seeds it ships with


def sft_run(r, lr, seed):
    set_seed(seed)  # the adapter's initial A too: a seed names the whole run
    model, _ = make(r)
    sft.train_sft(model, sft_train, SFT["steps"], SFT["batch_size"], lr, pad_id=0, seed=seed, warmup=SFT["warmup"],
                  progress=not FAST, desc=f"SFT r={r or 'full'} lr={lr:g} seed {seed}")
    return model, sft.evaluate_sft(model, sft_val, pad_id=0)


SFT_SETTINGS = dict(TASK, **SFT, lrs=SFT_LRS, methods=METHODS, alpha=ALPHA, seeds=SEEDS, live=LIVE,
                    live_seeds=LIVE_SEEDS)
sft_results = shipped.load("11_sft", SFT_SETTINGS)
sft_computed_here = sft_results is None
if sft_computed_here:
    t0 = time.perf_counter()
    sft_results = dict(start_bits=sft.evaluate_sft(start, sft_val, pad_id=0), methods={})
    for name, (r, _) in METHODS.items():
        tuned = {lr: sft_run(r, lr, seed=SEEDS[0]) for lr in SFT_LRS[name]}
        best = min(SFT_LRS[name], key=lambda lr: tuned[lr][1])
        runs = [tuned[best], sft_run(r, best, seed=SEEDS[1])]
        sft_results["methods"][name] = dict(
            lr=best, trainable=count_parameters(runs[0][0], trainable_only=True), bits=[b for _, b in runs],
            grid={f"{lr:g}": tuned[lr][1] for lr in SFT_LRS[name]},
            held_out=[rl.mean_reward(model, val_task, MAX_NEW) for model, _ in runs])
        if name == LIVE:  # seeds 0 and 1 are the runs above; the rest are trained for the spread
            extra = [sft_run(r, best, seed)[1] for seed in LIVE_SEEDS[len(runs):]]
            sft_results["live"] = dict(method=name, lr=best, seeds=LIVE_SEEDS, bits=[b for _, b in runs] + extra)
        del tuned, runs
    shipped.record("11_sft", SFT_SETTINGS, sft_results, time.perf_counter() - t0)
start_bits = sft_results["start_bits"]
print(f"notebook 09's model: held-out response loss {start_bits:.3f} bits/byte, greedy reward {start_reward:.3f}")
for name in METHODS:
    res = sft_results["methods"][name]
    b, h = res["bits"], res["held_out"]
    print(f"{name:<8} lr {res['lr']:<7g} loss {statistics.mean(b):.3f} ({min(b):.3f}–{max(b):.3f}) bits/byte   "
          f"reward {statistics.mean(h):.3f} ({min(h):.3f}–{max(h):.3f})")

# %% [markdown]
# **Reading both tables.** Compare how much of full fine-tuning's gain rank 1 keeps, under each
# kind of training: for RL, the reward gain over the run; for SFT, the drop in held-out loss. The
# numbers below are what this notebook measures at this scale, with 2 seeds — a 0.9 M-parameter
# model, 8 GRPO steps of 16 answers, a noisy reward.
#
# **What to expect at learner size.** Under SFT the ranking is stable: every method lowers the
# held-out loss and full fine-tuning lowers it most (asserted). Under RL, 8 steps on a 0.9 M
# parameter model move the reward by a few hundredths, and which method moves it furthest
# changed between our runs (README: one run, and the spread over 4) — so the cell below says what
# *this* run shows, and nothing about RL's ranking is asserted. By default *this* run is the
# shipped one (its card is printed in §3 and above): one fixed run, the same for every learner.
# Recomputed, yours will differ, because RL samples its own training data: notebook 09's
# fine-tune trained on your machine and your thread count change the last digits of the
# probabilities, a few sampled tokens differ, and the runs go different ways. In none of our runs did rank 1
# keep most of full fine-tuning's gain under RL while falling behind under SFT, which is what
# "RL needs far fewer parameters than SFT" would predict. Eight steps on a tiny model are not a
# 3 B-parameter run: treat this as a measurement of this setting, not a verdict on the claim.

# %% [markdown]
# **The live point.** Rank 8 at its best learning rate, seed 0, trained again here from notebook
# 09's model and compared with the shipped runs of the same point (seeds 0, 1, 2). SFT is the
# stable measurement to check: from one start, the same data and seed give the same loss to
# 1e-5 whatever the thread count, and a notebook-09 model trained elsewhere moved it by up to
# about 0.02 bits/byte. The RL numbers above are not stable (a probability that differs in the 4th
# decimal changes a sampled token, which changes which answers are rewarded, and the run goes
# elsewhere: see §3). What differs between machines: notebook 09's fine-tune is trained on yours
# (and cached), and the thread count changes the order of float additions.

# %%
point = sft_results["live"]
live_model, live_bits = sft_run(METHODS[point["method"]][0], point["lr"], seed=0)
# MARGIN, from what we saw on our machine: from the same start, 1 and 2 threads gave this run the
# same loss to 1e-5. Notebook 09's fine-tune is trained on your machine; before its LoRA init was
# seeded, four trainings of it here gave held-out losses 2.771–2.802 and this run 2.702–2.723:
# a start made elsewhere can move the run by about that much. 0.02 covers it; a run that did not
# train (near the start's own loss, about 0.1 above the shipped runs) fails.
MARGIN = 0.02
print(f"notebook 09's model here: held-out loss {sft.evaluate_sft(start, sft_val, pad_id=0):.3f} bits/byte "
      f"(the shipped runs started from one at {start_bits:.3f})")
print(f"live point ({point['method']}, lr {point['lr']:g}, seed 0): live {live_bits:.3f} bits/byte; "
      f"shipped runs {min(point['bits']):.3f}–{max(point['bits']):.3f} (seeds {list(point['seeds'])}, "
      f"margin ±{MARGIN})")

# %%
assert shipped.within_spread(live_bits, point["bits"], MARGIN), "the live run lands where the shipped runs did"
if sft_computed_here:
    assert abs(live_bits - point["bits"][0]) < 1e-6, "same start, same seed, same machine: the same number"

# %%
sft_gain = {name: start_bits - statistics.mean(sft_results["methods"][name]["bits"]) for name in METHODS}
keep_rl = {name: rl_gain[name] / rl_gain["full"] if rl_gain["full"] > 0 else float("nan") for name in rl_gain}
keep_sft = {name: sft_gain[name] / sft_gain["full"] if sft_gain["full"] > 0 else float("nan") for name in sft_gain}
print("share of full fine-tuning's gain kept — RL (reward):", {k: round(v, 2) for k, v in keep_rl.items()})
print("share of full fine-tuning's gain kept — SFT (loss): ", {k: round(v, 2) for k, v in keep_sft.items()})

# %%
sft_bits = {name: sft_results["methods"][name]["bits"] for name in METHODS}
for bits in sft_bits.values():
    assert all(math.isfinite(b) for b in bits)
if not FAST:
    for name, bits in sft_bits.items():
        assert statistics.mean(bits) < start_bits, f"SFT ({name}) lowers the held-out loss"
        assert statistics.mean(bits) >= statistics.mean(sft_bits["full"]) - 0.01, \
            "under SFT, full fine-tuning lowers the held-out loss most"
furthest = max(rl_gain, key=rl_gain.get)
print(f"this run: under RL the reward rose furthest with {furthest} (+{rl_gain[furthest]:.3f}); "
      f"under SFT full fine-tuning lowered the held-out loss most; rank 1 kept "
      f"{keep_rl['rank 1']:.2f} of full's gain under RL and {keep_sft['rank 1']:.2f} under SFT")

# %% [markdown]
# ## 5. The same functions on a Hugging Face model
#
# Nothing above is specific to the course GPT: `rl.chat_task` builds the prompts through a chat
# template, `rl.sample` calls the model's own `generate`, `preference.adapter_disabled` uses
# PEFT's `disable_adapter()` on a PEFT model. On a CUDA GPU with the Hub reachable this loads
# notebook 09's model (SmolLM2-360M-Instruct; `MODEL_ID` picks another); on a CPU, the small
# pretrained stand-in that ships with lorakit. A few GRPO steps and one DPO check run either way.

# %%
wanted = os.environ.get("MODEL_ID", hf.DEFAULT_MODEL_ID)
MODEL, why = hf.pick_model(wanted, local_only=FAST, device=DEVICE)
print(f"model: {MODEL}" + (f"   (not {wanted}: {why})" if why else ""))
REAL = MODEL == wanted
tokenizer = hf.load_tokenizer(MODEL, local_only=not REAL)
llm = hf.load_model(MODEL, torch.float32, DEVICE, local_only=not REAL)
inject_lora(llm, "all-linear", r=1, alpha=8)
hf_task = rl.chat_task(train_pairs[:64], tokenizer, max_code_chars=200)
hf_hist = rl.train_grpo(llm, hf_task, 2 if FAST else 4, lr=1e-3, group_size=4, prompts_per_step=2,
                        max_new=16 if FAST else 32, progress=not FAST, desc="GRPO on the HF model")
hf_pairs = [preference.preference_example(p, q.summary, tokenizer, 256) for p, q in
            zip(train_pairs[:4], train_pairs[1:5])]
with torch.no_grad():
    for layer in lora_layers(llm).values():
        layer.B.normal_(0, 0.05)
    on = torch.cat(preference.dpo_logps(llm, hf_pairs, tokenizer.pad_token_id))
    with preference.adapter_disabled(llm):
        off = torch.cat(preference.dpo_logps(llm, hf_pairs, tokenizer.pad_token_id))
del llm
plain_llm = hf.load_model(MODEL, torch.float32, DEVICE, local_only=not REAL)
with torch.no_grad():
    base_logps = torch.cat(preference.dpo_logps(plain_llm, hf_pairs, tokenizer.pad_token_id))
del plain_llm
print(f"GRPO on {os.path.basename(str(MODEL))}: rewards per step {[round(x, 3) for x in hf_hist['reward']]}; "
      f"adapter off vs the loaded model: max |Δ log π| = {(off - base_logps).abs().max():.1e}")

# %%
assert torch.allclose(off, base_logps, atol=1e-4), "the adapter switched off is the loaded model"
assert not torch.allclose(on, off, atol=1e-3), "switched on, it differs"

# %% [markdown]
# ## 6. What breaks in practice, planted and diagnosed
#
# The GRPO + LoRA threads in TRL's and open-r1's trackers are full of four failures. Each is
# planted below and caught by `lorakit.doctor.check_rl(model, history, lr=...)`, whose message
# names the fix:
#
# 1. **The adapter loaded frozen** (`PeftModel.from_pretrained` defaults to `is_trainable=False`):
#    nothing can train, the reward never rises. Caught before a step is spent.
# 2. **Full fine-tuning's learning rate on LoRA**: the adapter barely moves, the reward stays flat.
# 3. **All rewards in a group equal** (a pass/fail verifier that nothing passes): every advantage
#    is 0, the loss is ≈ 0, nothing is learned.
# 4. **A KL that explodes**: too large a step, two updates per batch and no KL penalty, on a
#    reward that pays for letters alone; the policy runs away from the model it started from.

# %%
PLANT = dict(group_size=4, prompts_per_step=2, max_new=MAX_NEW, progress=False)
frozen = copy.deepcopy(start)
inject_lora(frozen, "all-linear", r=8, alpha=8)
frozen.requires_grad_(False)
planted = {"loaded frozen": doctor.check_rl(frozen)}

# a graded reward that varies in every group (the share of letters in the answer), so that only
# the learning rate decides whether the adapter moves
letters = lambda answer, stopped, summary: sum(c.isalpha() for c in answer) / max(len(answer), 1)  # noqa: E731
slow = copy.deepcopy(start)
inject_lora(slow, "all-linear", r=8, alpha=8)
slow_hist = rl.train_grpo(slow, train_task, 3, lr=1e-6, reward_fn=letters, **PLANT)  # TRL's full-FT rate (1e-6)
planted["full-FT learning rate"] = doctor.check_rl(slow, slow_hist, lr=1e-6)

exact = copy.deepcopy(start)
inject_lora(exact, "all-linear", r=8, alpha=8)
exact_match = lambda answer, stopped, summary: float(stopped and answer == summary)  # noqa: E731 - pass/fail
exact_hist = rl.train_grpo(exact, train_task, 2, lr=1e-2, reward_fn=exact_match, **PLANT)
planted["all-equal rewards"] = doctor.check_rl(exact, exact_hist, lr=1e-2)

runaway, runaway_ref = make(0)
runaway_hist = rl.train_grpo(runaway, train_task, 4, lr=3e-2, kl_coef=0.0, updates_per_batch=2, reference=runaway_ref,
                             reward_fn=letters, **PLANT)
planted["exploding KL"] = doctor.check_rl(runaway, runaway_hist, lr=3e-2)
for name, report in planted.items():
    print(f"--- {name}")
    print("\n".join(str(f) for f in report.findings if f.level != "info"))

# %%
want = {"loaded frozen": "frozen_adapter", "full-FT learning rate": "lr_too_small",
        "all-equal rewards": "zero_advantage", "exploding KL": "kl_exploding"}
for name, code in want.items():
    assert code in planted[name].codes, f"the doctor catches: {name}"
assert exact_hist["zero_groups"] == [1.0] * len(exact_hist["zero_groups"]), "nothing passes: every group is all 0"
assert "frozen_adapter" not in doctor.check_rl(live_model).codes, "§4's live adapter trained: it is not frozen"

# %% [markdown]
# ## Summary
#
# - A verifier Python runs scores every answer; padding with guesses lowers it, format alone is
#   worth half — and a policy can find that half (§3).
# - DPO's loss follows from Bradley–Terry and the KL-regularised optimum; with LoRA the reference
#   is the adapter switched off, exactly the SFT model, with no second copy; against the model's
#   own babble DPO reaches held-out reward accuracy above 0.8, and a smaller β lets the policy
#   drift further.
# - GRPO = group-normalised advantages + PPO's clip + a KL to the reference; an all-equal group
#   teaches nothing.
# - Rank 1, rank 8 and full fine-tuning under RL and under SFT, 2 seeds each at a tuned LR: under
#   SFT full fine-tuning lowers the held-out loss most (asserted); under RL, 8 steps on this tiny
#   model move the reward by a few hundredths and the ranking changed between runs. The "rank 1
#   is enough for RL" claim did not show here — measured, with its range, not assumed.
# - Four failures planted, each caught by `doctor.check_rl` with its fix.
#
# ## Exercises
#
# Solutions: `notebooks/solutions/nb11.py` (try first!). Each checker says what it accepts.
#
# **Exercise 11.1 — one DPO loss by hand.** The policy gives the chosen answer log-probability
# −12.0 and the rejected −15.0; the reference gives them −13.0 and −14.0. With β = 0.5, what is
# the DPO loss of this pair (nats)? A float; tolerance ±1e-3. Hint: the margin is
# (−12 + 13) − (−15 + 14).

# %%
answer = None  # your float
check_ex_11_1(answer)

# %% [markdown]
# **Exercise 11.2 — the advantages of a group.** Four answers to one prompt scored
# `[0.25, 0.75, 0.5, 0.5]`. Give GRPO's four advantages (a list of 4 floats; tolerance ±1e-3;
# `std` with n − 1 as `torch.std` computes it, or with n — both are accepted, the checker says
# which you used).

# %%
answer = None  # your list of 4 floats
check_ex_11_2(answer)

# %% [markdown]
# **Exercise 11.3 — close the hole (real code).** Write `better_reward(answer, stopped, summary)`
# that returns a float in [0, 1]: 1.0 for the true summary ended with EOS, at most 0.1 for a short
# sentence with no content word of the summary (like "Rod."), and more for an answer that shares
# content words than for one that shares none. The checker runs it on hand-made answers. Hint:
# multiply the format part by the overlap, or give format credit only with content.

# %%
better_reward = None  # your function (answer: str, stopped: bool, summary: str) -> float
check_ex_11_3(better_reward)

# %% [markdown]
# ## References
#
# - Rafailov et al. 2023, *Direct Preference Optimization: Your Language Model is Secretly a Reward
#   Model*, arXiv 2305.18290 — TRL: `DPOTrainer` (`dpo_loss`, `precompute_ref_log_probs`); PEFT:
#   `PeftModel.disable_adapter`.
# - Shao et al. 2024, *DeepSeekMath* (GRPO), arXiv 2402.03300 — TRL: `GRPOTrainer`
#   (`num_generations`, `beta`, `epsilon`, `num_iterations`).
# - Schulman et al. 2017, *Proximal Policy Optimization Algorithms*, arXiv 1707.06347.
# - Schulman and Thinking Machines Lab 2025, *LoRA Without Regret* (blog post): LoRA matches full
#   fine-tuning for RL at rank 1; LoRA's best LR ≈ 10× full fine-tuning's.
# - TinyLoRA, arXiv 2602.04118: RL with a handful of trainable parameters.
# - TRL documentation: "GRPO Trainer", "DPO Trainer", and the "LoRA Without Regret" reproduction
#   (SmolLM3-3B, r = 1, α = 32, LR 1e-5 vs full 1e-6).
# - Bradley and Terry 1952, *Rank Analysis of Incomplete Block Designs*, Biometrika 39.
