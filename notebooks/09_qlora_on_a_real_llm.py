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
# # 09 — QLoRA on a real LLM
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lorakit/lorakit/blob/v0.1.0/notebooks/09_qlora_on_a_real_llm.ipynb)
#
# Teach a pretrained language model a new instruction with QLoRA, see in its own words that it
# learned it, and ship the result as an ordinary model anyone can load.
#
# **You will**
# - turn the standard library into an instruction dataset (function → one-line summary) with a
#   prompt template, an end-of-sequence marker and a loss mask, and see what breaks without each;
# - fine-tune the course GPT three ways on the CPU (full, LoRA, QLoRA) and read its answers before
#   and after;
# - QLoRA-fine-tune a pretrained Hugging Face model (SmolLM2-360M-Instruct on a Colab T4 or any
#   CUDA GPU) with lorakit's NF4 and with bitsandbytes + PEFT side by side — memory, speed,
#   quality, generations — then merge exactly, `save_pretrained`, and reload.
#
# **Runtime** (measured: top to bottom in a fresh kernel, base model cached, by `bench/course_runtime.py`; the GPU row is an estimate until a GPU run replaces it)
#
# | device | test mode (`LORAKIT_FAST=1`) | learner size, default: shipped results + live point | learner size, everything recomputed (`LORAKIT_RECOMPUTE=1`) |
# |---|---|---|---|
# | 2-core x86_64 CPU, otherwise idle (load ≤ 1.7), 2026-12-06 | 16 s (2026-11-29) | 97 s | 335 s |
# | Colab T4 (16 GB), SmolLM2-360M-Instruct | — | estimate: ≈ 7–10 min for §6 (README, "On a GPU"; not yet measured) | — |
#
# Learner size by default loads §3–4's fine-tunes and three of §6's four stand-in runs from shipped
# results (`lorakit/results/09_*.json`) and re-runs LoRA (§3) and lorakit's QLoRA (§6) live; recompute
# everything with `LORAKIT_RECOMPUTE=1` (or `make results NB=09`).
#
# **Short of time?** Run §1–3 only: the task, the template and mask, and the three fine-tunes
# (shipped results plus one live LoRA run). The shipped results let you skip §3's other runs,
# §4's two ablations and three of §6's runs; §8–10 (your own data, the data traps, the recipe) train live.

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
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from lorakit import hf, sft, shipped, standin
from lorakit.claims import improvement_title
from lorakit.exercises.nb09 import check_ex_9_1, check_ex_9_2, check_ex_9_3, max_summary
from lorakit.data import decode, encode
from lorakit.lora import inject_lora, lora_layers
from lorakit.model import count_parameters
from lorakit.qlora import choose_compute_dtype, merge_into_dequantized, prepare_qlora, storage_report
from lorakit.train import base_model, cache_dir, fast_mode, pick_device, set_seed

FAST = fast_mode()
DEVICE = pick_device()
ON_GPU = DEVICE.type == "cuda"
print(f"test mode: {FAST}; device: {DEVICE}"
      + (f" ({torch.cuda.get_device_name(DEVICE)})" if ON_GPU else ""))

# %% [markdown]
# ## 1. An instruction task that ships with Python
#
# Instruction tuning (supervised fine-tuning, SFT) trains on *pairs*: a prompt and the response
# we want. Every CPython carries thousands of them, written by its own developers: a function
# and its docstring. The **prompt** is a function's source with the docstring removed; the
# **response** is the docstring's first line — a one-sentence summary such as
# "Return True for leap years, False for non-leap years."
#
# To measure whether a model *generalises*, the validation pairs come from modules that training
# never sees: every 10th module (by a stable hash of its path) is held out.

# %%
MAX_SUMMARY = max_summary(FAST)  # test mode: a 64-byte context needs short answers (28, else 60)
train_pairs = sft.docstring_pairs("train", MAX_SUMMARY)
val_pairs = sft.docstring_pairs("val", MAX_SUMMARY)
train_modules = {p.module for p in train_pairs}
val_modules = {p.module for p in val_pairs}
print(f"{len(train_pairs):,} training pairs from {len(train_modules)} modules, "
      f"{len(val_pairs):,} validation pairs from {len(val_modules)} other modules")
example = next((p for p in val_pairs if p.name == "isleap"), val_pairs[0])
print(f"\n--- prompt ({example.module}) ---\n{example.code}\n--- response ---\n{example.summary}")

# %%
assert not train_modules & val_modules, "no validation module is ever seen in training"
assert all(p.summary not in p.code for p in train_pairs), "the answer is never inside the prompt"

# %% [markdown]
# ## 2. Template, end of sequence, loss mask
#
# Three habits turn pairs into training text:
#
# 1. **A fixed prompt template.** The model must know where the question ends and its answer
#    begins. For the byte-level course GPT we write
#    `### Code\n{code}\n### Summary\n{response}`. A real instruct model already has one — its
#    *chat template* (`<|im_start|>user … <|im_end|><|im_start|>assistant\n` for SmolLM2); use
#    it, do not invent another.
# 2. **An end-of-sequence marker** after the response (here the byte `\x03`, "end of text", which
#    never occurs in the stdlib; a real tokenizer has its EOS token). A model that never saw one
#    cannot stop: it writes until the token budget runs out.
# 3. **A loss mask.** The loss is the cross-entropy of each next token,
#    $L = -\frac{1}{|R|}\sum_{t \in R} \log p(x_{t+1} \mid x_{\le t})$, over the response positions
#    $R$ only. Prompt labels are set to $-100$, which `F.cross_entropy` ignores: the model is not
#    trained to write prompts, and the loss we report measures the answer only.
#
# The course GPT sees at most `context` bytes, so a long function is cut to its head; the
# response and its EOS are always kept whole. Most functions are longer than what the context
# leaves for code (the share is measured below): the course GPT learns to summarise from a
# function's signature and first lines, rarely from its whole body.

# %%
base, info = base_model(progress=False)
CONTEXT = base.cfg.context
ids, labels = sft.byte_example(example, CONTEXT)
n_prompt = int((labels == sft.IGNORE).sum())
print(f"context {CONTEXT} bytes; this example: {len(ids)} bytes, {n_prompt} prompt bytes masked, "
      f"{len(ids) - n_prompt} response bytes (summary + EOS) learned")
print("what the model reads:", repr(decode(ids)))
print("what it is scored on:", repr(decode(labels[labels != sft.IGNORE])))

# %%
assert ids[-1] == ord(sft.EOS) and (labels[:n_prompt] == sft.IGNORE).all()
assert torch.equal(labels[n_prompt:], ids[n_prompt:]), "response labels are the response tokens"

# %%
code_budget = CONTEXT - len(encode(sft.TEMPLATE.format(code=""))) - len(encode(sft.EOS))
cut_share = sum(len(encode(p.code)) > code_budget - len(encode(p.summary)) for p in train_pairs) / len(train_pairs)
print(f"at {CONTEXT} bytes, {100 * cut_share:.0f} % of the training functions are cut to their head")
assert cut_share > 0.5, "most functions are longer than what the context leaves for code"

# %% [markdown]
# ## 3. On the CPU: the course GPT learns the task three ways
#
# The same pairs, steps, batch size and seed for each method; learning rates as notebook 04
# measures them (LoRA needs about 10× the full fine-tuning rate). QLoRA is lorakit's NF4 +
# double-quantized base with LoRA on every linear layer (notebook 08). We report the loss on
# held-out **responses only**, in bits per byte.

# %%
STEPS = 40 if FAST else 150
BATCH = 16
train_ex = sft.byte_examples(train_pairs, CONTEXT)
val_ex = sft.byte_examples(val_pairs[: 64 if FAST else 200], CONTEXT)
print(f"{len(train_ex):,} training and {len(val_ex)} validation examples fit the {CONTEXT}-byte context")

METHODS_CPU = {  # method: learning rate (and LoRA's rank and alpha, on every linear layer)
    "full": dict(lr=1e-3),
    "LoRA": dict(lr=1e-2, r=8, alpha=16),
    "QLoRA": dict(lr=1e-2, r=8, alpha=16),
}
MAX_NEW = 60  # bytes an answer may take (the generations below)
probe_pairs = val_pairs[:12]
probe = [sft.prompt_of(p, CONTEXT - len(p.summary) - 30) for p in probe_pairs]


def cpu_fine_tune(method, examples=train_ex, seed=0, desc=None):
    """A fresh copy of the base made into ``method`` and fine-tuned: one run of this section."""
    spec = METHODS_CPU[method]
    set_seed(seed)  # LoRA's A starts random: the seed fixes it too, not only the batches
    model = copy.deepcopy(base)
    if method == "full":
        model.requires_grad_(True)
    else:
        (inject_lora if method == "LoRA" else prepare_qlora)(model, "all-linear", r=spec["r"], alpha=spec["alpha"])
    losses = sft.train_sft(model, examples, STEPS, BATCH, spec["lr"], pad_id=0, seed=seed, progress=not FAST,
                           desc=desc or f"{method}, seed {seed}")
    return model, losses


def answers_of(model):
    """Greedy answers (at most ``MAX_NEW`` bytes, stopping at EOS) to the held-out ``probe`` prompts."""
    return [sft.generate_bytes(model, p, MAX_NEW) for p in probe]


# %% [markdown]
# Three fine-tunes (and two more seeds of LoRA, below) take a few minutes on a 2-core laptop,
# much longer on a busy one, so their learner-size results **ship with lorakit**
# (`lorakit/results/09_*.json`): losses, held-out losses, and the generations as text. `shipped.load`
# prints where they came from (its provenance card) and hands them out only when they were made with
# exactly this section's settings; otherwise — test mode, a setting you changed, or
# `LORAKIT_RECOMPUTE=1` set before starting Jupyter (or with `os.environ["LORAKIT_RECOMPUTE"] = "1"`
# in the first cell) — the cell computes them here. `make results NB=09` regenerates the files.
# One run is always repeated live below and must land where the shipped runs did.

# %%
LORA_SEEDS = [0] if FAST else [0, 1, 2]  # the live point's spread (test mode: its determinism)
DATA_ID = hashlib.sha256(json.dumps([[p.module, p.name, p.code, p.summary] for p in train_pairs + val_pairs])
                         .encode()).hexdigest()[:16]  # the stdlib differs between Python versions
SETTINGS = dict(base=info.get("sha256") or str(info.get("path")), config=base.cfg.to_dict(), data=DATA_ID,
                max_summary=MAX_SUMMARY, n_train=len(train_ex), n_val=len(val_ex), steps=STEPS, batch_size=BATCH,
                methods=METHODS_CPU, targets="all-linear", seed=0, lora_seeds=LORA_SEEDS,
                probe=[f"{p.module}.{p.name}" for p in probe_pairs], max_new=MAX_NEW)
cpu = shipped.load("09_three_methods", SETTINGS)
COMPUTED_HERE = cpu is None
if COMPUTED_HERE:
    start = time.perf_counter()
    cpu = dict(runs={}, answers={"base": answers_of(base)}, lora_seeds={})
    for method in METHODS_CPU:
        model, losses = cpu_fine_tune(method, desc=method)
        cpu["runs"][method] = dict(losses=losses, val_bits=sft.evaluate_sft(model, val_ex, pad_id=0),
                                   trainable=count_parameters(model, trainable_only=True))
        cpu["answers"][method] = answers_of(model)
    cpu["lora_seeds"]["0"] = cpu["runs"]["LoRA"]["val_bits"]
    for seed in LORA_SEEDS[1:]:
        cpu["lora_seeds"][str(seed)] = sft.evaluate_sft(cpu_fine_tune("LoRA", seed=seed)[0], val_ex, pad_id=0)
    shipped.record("09_three_methods", SETTINGS, cpu, time.perf_counter() - start)
cpu_runs = cpu["runs"]
base_bits = sft.evaluate_sft(base, val_ex, pad_id=0)
print(f"base model: {base_bits:.3f} bits/byte on held-out responses")
for name, run in cpu_runs.items():
    print(f"{name:>6}: {run['val_bits']:.3f} bits/byte, {run['trainable']:,} trainable parameters")

# %%
for name, run in cpu_runs.items():
    assert run["val_bits"] < base_bits - 0.2, f"{name} learned the task on functions it never saw"
assert cpu_runs["QLoRA"]["val_bits"] < cpu_runs["LoRA"]["val_bits"] + 0.1, \
    "the 4-bit base costs QLoRA little against LoRA on the same task"

# %%
fig, ax = plt.subplots(figsize=(6, 4))
for name, run in cpu_runs.items():
    smooth = torch.tensor(run["losses"]).unfold(0, 10, 1).mean(1) / torch.log(torch.tensor(2.0))
    ax.plot(range(10, len(run["losses"]) + 1), smooth, label=f"{name} (val {run['val_bits']:.2f})")
ax.axhline(base_bits, color="gray", ls="--", label=f"base, held-out ({base_bits:.2f})")
ax.set_xlabel("step")
ax.set_ylabel("response loss (bits/byte, mean of 10 steps)")
ax.set_title("All three methods learn to summarise; held-out loss in the legend")
ax.legend(loc="upper right")
plt.show()

# %% [markdown]
# **Generations, before and after.** Greedy decoding from the same held-out prompts. The base
# model has never seen the template: it keeps writing code (or spaces) until the budget runs
# out. The fine-tuned models answer with an English sentence and, at learner size, most of the time
# stop at EOS (the share per method is printed below; LoRA's is asserted ≥ 0.5, QLoRA stopped in
# about two thirds of the prompts in one learner-size run; test mode's 40 steps are too few). With under a
# million parameters and a few minutes on a CPU, the sentences are the *shape* of a summary more
# than a correct one — section 6 does the same with a real 360 M-parameter LLM.

# %%
answers = cpu["answers"]  # {model: its answers to the 12 probe prompts}, as text
show = probe_pairs[:4]
for i, pair in enumerate(show):
    print(f"\n{pair.module}: {pair.name}()   true: {pair.summary}")
    for name in answers:
        print(f"  {name:>6}: {answers[name][i]!r}")

# %%
def stop_share(outs):
    """Share of answers that ended with EOS before the byte budget ran out."""
    return sum(len(encode(a)) < MAX_NEW for a in outs) / len(outs)


stop_rate = {name: stop_share(outs) for name, outs in answers.items()}
print(f"share of {len(probe)} held-out prompts answered with an EOS within {MAX_NEW} bytes:",
      {k: round(v, 2) for k, v in stop_rate.items()})
# test mode's tiny base cannot pick up the habit in 40 steps: the threshold applies at learner size
MIN_STOP = 0.0 if FAST else 0.5
assert stop_rate["base"] == 0, "the base model never saw the EOS byte"
assert stop_rate["LoRA"] >= MIN_STOP, "a fine-tuned model learned to stop"

# %% [markdown]
# **The live point.** LoRA with seed 0 (the fine-tune notebook 11 starts from) is trained again
# here, whatever the source of the results above: it must land within the shipped runs of three
# seeds, up to a margin for another machine. When the results were just computed (test mode,
# `LORAKIT_RECOMPUTE=1`), the same seed on the same machine must give the same number.

# %%
live_model, _ = cpu_fine_tune("LoRA", seed=0, desc="LoRA, live")
live_bits = sft.evaluate_sft(live_model, val_ex, pad_id=0)
live_answers = answers_of(live_model)
lora_runs = list(cpu["lora_seeds"].values())
print(f"live LoRA (seed 0): {live_bits:.3f} bits/byte; shipped LoRA runs (seeds {', '.join(cpu['lora_seeds'])}): "
      f"{min(lora_runs):.3f}–{max(lora_runs):.3f}")
print(f"live stop rate {stop_share(live_answers):.2f} (shipped {stop_rate['LoRA']:.2f}); "
      f"{show[0].name}(): live {live_answers[0]!r}, shipped {answers['LoRA'][0]!r}")

# %%
# On our 2-core CPU, 1 and 2 threads gave seed 0 the same held-out loss to the last digit; seeds 0-2
# spread 0.06 bits/byte. Another CPU or library version rounds differently, and 150 steps can grow
# that into a seed-like change: a margin of half the seed spread, 0.03, allows it and stays far below
# the drop every method makes (> 0.2 bits/byte, asserted above).
MARGIN = 1e-6 if COMPUTED_HERE else 0.03
assert shipped.within_spread(live_bits, lora_runs, MARGIN), "the live run lands where the shipped runs did"
assert stop_share(live_answers) >= MIN_STOP, "and it learned to stop, too"
if COMPUTED_HERE:  # same seed, same machine: the same model, so the same greedy answers
    assert live_answers == answers["LoRA"], "the live run repeats the LoRA run above"

# %% [markdown]
# ## 4. What goes wrong without the mask, and without EOS
#
# Two more LoRA runs, identical but for one habit each:
#
# - **no mask**: the loss also covers the prompt. Most tokens are code, so most of the gradient
#   teaches the model to write code — the task is learned with the remaining signal;
# - **no EOS**: the responses end without the marker, so the model never learns to stop.

# %%
ABLATIONS = {"no mask": dict(mask=False), "no EOS": dict(eos=False)}  # LoRA, seed 0, one habit off each
ABLATION_SETTINGS = dict(SETTINGS, ablations=ABLATIONS)
ablated = shipped.load("09_mask_and_eos", ABLATION_SETTINGS)
if ablated is None:
    start = time.perf_counter()
    no_mask_model, _ = cpu_fine_tune("LoRA", sft.byte_examples(train_pairs, CONTEXT, **ABLATIONS["no mask"]),
                                     desc="no mask")
    no_eos_model, _ = cpu_fine_tune("LoRA", sft.byte_examples(train_pairs, CONTEXT, **ABLATIONS["no EOS"]),
                                    desc="no EOS")
    ablated = {"no mask": dict(val_bits=sft.evaluate_sft(no_mask_model, val_ex, pad_id=0)),
               "no EOS": dict(answers=answers_of(no_eos_model))}
    shipped.record("09_mask_and_eos", ABLATION_SETTINGS, ablated, time.perf_counter() - start)
masked_share = sum(int((lab != sft.IGNORE).sum()) for _, lab in train_ex) / sum(len(i) for i, _ in train_ex)
no_mask_bits = ablated["no mask"]["val_bits"]
no_eos_answers = ablated["no EOS"]["answers"]
no_eos_stops = stop_share(no_eos_answers)
print(f"response tokens are {100 * masked_share:.0f} % of all tokens: without the mask the other "
      f"{100 * (1 - masked_share):.0f} % of the gradient teaches code")
print(f"held-out response loss: with mask {cpu_runs['LoRA']['val_bits']:.3f}, "
      f"without {no_mask_bits:.3f} bits/byte")
print(f"answers that stop: with EOS {stop_rate['LoRA']:.2f}, without EOS {no_eos_stops:.2f}")
print("without EOS it runs on:", repr(no_eos_answers[0]))

# %% [markdown]
# Without the mask the held-out answer loss is about the same (the two numbers above), not clearly
# better: at learner size one run measured 2.695 with the mask against 2.698 without, a rerun 2.683
# without — within ±0.015 either side, run-to-run noise; in the short test-mode run the unmasked
# model is worse. (Asserted: not better by more than 0.05.) With short prompts and a small model, training on the prompt
# mostly wastes compute; with real chat data, where prompts are often 10× longer than answers,
# most of an unmasked run is spent learning to write prompts. What the mask always buys is a
# loss that measures the answer.

# %%
assert masked_share < 0.5, "most tokens are prompt"
assert no_mask_bits > cpu_runs["LoRA"]["val_bits"] - 0.05, "training on prompts does not make clearly better answers"
assert no_eos_stops < 0.1, "without an EOS in training, the model does not stop"
assert stop_rate["LoRA"] >= max(MIN_STOP, no_eos_stops), "with one, it does"

# %% [markdown]
# ## 5. The compute dtype, decided by the hardware
#
# QLoRA stores weights in 4 bits and *computes* in a 16- or 32-bit dtype. bfloat16 is the
# choice where the GPU computes it natively (NVIDIA Ampere or newer: A100, L4, RTX 30xx/40xx,
# H100). The trap: `torch.cuda.is_bf16_supported()` answers **True on a T4** because bfloat16
# can be *emulated* there; ask with `including_emulation=False`. lorakit's
# `choose_compute_dtype` does, and without native bfloat16 (T4, V100, CPU, MPS) it computes in
# float32: it always runs and needs no loss scaler, at the price of speed (float16 on a T4's
# tensor cores is faster but needs a loss scaler and was unstable for the QLoRA authors).
# The LoRA matrices $A$, $B$ train in float32 either way, as in PEFT: a small update added to a
# 16-bit number would round away.

# %%
COMPUTE_DTYPE = choose_compute_dtype(DEVICE)
print(f"device {DEVICE}: compute dtype {COMPUTE_DTYPE}; adapters in torch.float32")
assert COMPUTE_DTYPE in (torch.float32, torch.bfloat16)

# %% [markdown]
# ## 6. A real pretrained LLM: lorakit's QLoRA beside bitsandbytes + PEFT
#
# On a CUDA GPU this section loads a pretrained model from the Hugging Face Hub — by default
# `HuggingFaceTB/SmolLM2-360M-Instruct` (362 M parameters, a Llama architecture with grouped-query
# attention and tied embeddings); set the environment variable `MODEL_ID` for another causal LM.
# Without a GPU, or offline, it says why and runs the *same code* on a small **pretrained stand-in**
# that ships with lorakit (`lorakit/weights/standin-llama`, loaded by the same `from_pretrained`
# calls, refused unless every file's sha256 matches its training card): SmolLM2's architecture
# (grouped-query attention, gate/up/down MLP, tied embeddings, ChatML with `<|im_end|>` as EOS) at
# 2.4 M parameters, a BPE tokenizer trained on the course text, pretrained by lorakit's own loop
# on the standard library and the language reference (`lorakit.standin.train_standin(ship=True)`
# remakes it). It is a *base* model — it has never seen a chat turn — so before fine-tuning it
# answers with blank lines and Python comments and never stops, as the course GPT did in section 3.
# It is weak (its greedy text soon repeats itself): it is here to show a fine-tune *working*.
#
# Four methods, same pairs, steps and seed, each on a fresh copy of the model:
# lorakit's QLoRA, the standard stack (`BitsAndBytesConfig(load_in_4bit, nf4, double quant)` +
# PEFT `LoraConfig`, frozen and checkpointed as `prepare_model_for_kbit_training` does, without its
# float32 upcast), LoRA on the unquantized model, and full
# fine-tuning. Memory is the allocator's peak with a plain `torch.optim.AdamW` — its states are
# counted (bitsandbytes' *paged* optimizers keep them in unified memory, which
# `torch.cuda.max_memory_allocated` does not see). On the CPU, "memory" counts parameters,
# gradients and optimizer states (no activations). An out-of-memory error is reported as a result.
#
# On the CPU stand-in, the three methods that §7 does not keep come from shipped learner-size results
# (`lorakit/results/09_standin_methods.json`, card printed by `shipped.load`; recomputed in test mode
# or with `LORAKIT_RECOMPUTE=1`); lorakit's QLoRA trains live, and the gap to bitsandbytes + PEFT
# asserted below compares that live run with the shipped one. On a GPU or a real model all four run.

# %%
wanted = os.environ.get("MODEL_ID", hf.DEFAULT_MODEL_ID)
MODEL, why = hf.pick_model(wanted, local_only=FAST, device=DEVICE)  # on a CPU: the shipped stand-in
print(f"model: {MODEL}" + (f"   (not {wanted}: {why})" if why else ""))
REAL = MODEL == wanted
if not REAL:
    card = standin.read_card(MODEL)
    print(f"stand-in: {card['parameters'] / 1e6:.1f} M parameters, pretrained {card['settings']['steps']} steps on "
          f"{card['tokens']['seen'] / 1e6:.1f} M tokens, held-out {card['val_bits_per_token']:.2f} bits/token; "
          "its greedy continuations (from its training card):")
    for prompt, text in card["samples"].items():
        print(f"  {prompt!r} → {text[:60]!r}")
tokenizer = hf.load_tokenizer(MODEL, local_only=not REAL)

# %%
GPU_SIZE = ON_GPU and REAL and not FAST
HF = dict(steps=150 if GPU_SIZE else (6 if FAST else 30), batch_size=8 if GPU_SIZE else 4,
          max_len=384 if GPU_SIZE else 160, r=16, alpha=32)
LR = {"lorakit-qlora": 2e-4, "bnb-peft-qlora": 2e-4, "lora": 2e-4, "full": 2e-5}  # QLoRA paper: 2e-4
if not REAL:  # the 2.4 M-parameter stand-in takes larger steps, like the course GPT in section 3
    LR = {"lorakit-qlora": 3e-3, "bnb-peft-qlora": 3e-3, "lora": 3e-3, "full": 1e-3}
hf_train = [sft.chat_example(p, tokenizer, HF["max_len"]) for p in train_pairs]
hf_val_pairs = val_pairs[: 32 if FAST else 200]
hf_val = [sft.chat_example(p, tokenizer, HF["max_len"]) for p in hf_val_pairs]
base_hf = hf.load_model(MODEL, COMPUTE_DTYPE, DEVICE, local_only=not REAL)
hf_base_bits = sft.evaluate_sft(base_hf, hf_val, pad_id=tokenizer.pad_token_id)
stopped_before = []  # one bool per answer: did it end with EOS within the token budget?
before = hf.generate_answers(base_hf, tokenizer, show, max_new_tokens=24, stopped=stopped_before)
print(f"{MODEL}: {sum(p.numel() for p in base_hf.parameters()) / 1e6:.1f} M parameters; "
      f"held-out response loss before fine-tuning {hf_base_bits:.3f} bits/token")
del base_hf

# %%
HF_RUN = dict(steps=HF["steps"], batch_size=HF["batch_size"], compute_dtype=COMPUTE_DTYPE, device=DEVICE,
              pad_id=tokenizer.pad_token_id, r=HF["r"], alpha=HF["alpha"], warmup_steps=3, local_only=not REAL,
              progress=not FAST)
if REAL or ON_GPU:  # a real model or a GPU: all four methods run here
    hf_runs = hf.compare_methods(  # the kept model (lorakit's QLoRA, for §7) is trained last: see below
        hf.METHODS, MODEL, hf_train, hf_val, lr=LR, keep="lorakit-qlora", **HF_RUN)
else:  # the CPU stand-in: the three methods §7 does not keep ship (learner size); lorakit's QLoRA runs live
    others = [m for m in hf.METHODS if m != "lorakit-qlora"]
    HF_SETTINGS = dict(standin=card["sha256"], data=DATA_ID, n_train=len(hf_train), n_val=len(hf_val), lr=LR,
                       methods=others, **{k: str(v) if k in ("compute_dtype", "device") else v
                                          for k, v in HF_RUN.items() if k != "progress"})
    standin_runs = shipped.load("09_standin_methods", HF_SETTINGS)
    STANDIN_SHIPPED = standin_runs is not None
    if not STANDIN_SHIPPED:
        start = time.perf_counter()
        standin_runs = json.loads(json.dumps(hf.compare_methods(others, MODEL, hf_train, hf_val, lr=LR, **HF_RUN)))
        shipped.record("09_standin_methods", HF_SETTINGS, standin_runs, time.perf_counter() - start)
    live_qlora = hf.fine_tune("lorakit-qlora", MODEL, hf_train, hf_val, lr=LR["lorakit-qlora"], keep_model=True,
                              **HF_RUN)
    hf_runs = {m: live_qlora if m == "lorakit-qlora" else standin_runs[m] for m in hf.METHODS}
print(f"{'method':<16}{'weights':<32}{'trainable':>12}{'peak memory':>14}{'ms/step':>10}{'val bits':>10}")
for method, run in hf_runs.items():
    if run["status"] != "ok":
        print(f"{method:<16}{run['status']}")
        continue
    print(f"{method:<16}{run['weights']:<32}{run['trainable']:>12,}{run['peak_bytes'] / 2**20:>11.1f} MB"
          f"{run['ms_per_step']:>10.0f}{run['val_bits']:>10.3f}")
print(f"base model: held-out response loss {hf_base_bits:.3f} bits/token; memory measured as: "
      f"{hf_runs['lorakit-qlora'].get('memory_method', '')}")
if not (REAL or ON_GPU) and STANDIN_SHIPPED:
    print("lorakit-qlora ran here; the other rows are shipped (their ms/step: the card's machine, above)")

# %% [markdown]
# **Reading the table honestly.** Three things make it a fair comparison on a GPU:
#
# - *Each peak is that method's alone.* The GPU allocator counts every live tensor, so the model
#   §7 keeps would sit in every peak measured after it: `hf.compare_methods` trains the kept
#   method last.
# - *Like for like.* The "weights" column says how each model stores what does not train. Both
#   QLoRA stacks keep the non-4-bit parts (embeddings, norms, head) in the compute dtype. PEFT's
#   `prepare_model_for_kbit_training` would cast them all to float32 — under bfloat16 the whole
#   residual stream then runs in float32 (+7.5 % saved activations at SmolLM2-360M's shape) —
#   so lorakit's bitsandbytes path freezes and checkpoints by hand and skips that cast.
# - *Full fine-tuning keeps float32 master weights* under a bfloat16 compute dtype (autocast):
#   in pure bfloat16, an AdamW step of 2e-5 is below half a rounding step of most weights (of
#   every norm weight, which sits at 1.0), so most of the model would never change.

# %%
if {"lorakit-qlora", "bnb-peft-qlora"} <= {m for m, r in hf_runs.items() if r["status"] == "ok"}:
    assert hf_runs["lorakit-qlora"]["weights"] == hf_runs["bnb-peft-qlora"]["weights"], \
        "both QLoRA stacks store the non-quantized parts in the same dtype"
if hf_runs["full"]["status"] == "ok" and COMPUTE_DTYPE != torch.float32:
    assert hf_runs["full"]["weights"].startswith("float32"), "full fine-tuning keeps float32 master weights"

# %%
ok = {m: r for m, r in hf_runs.items() if r["status"] == "ok"}
assert "lorakit-qlora" in ok, "lorakit's QLoRA must fit wherever the others do"
for method, run in ok.items():
    assert run["val_bits"] < hf_base_bits, f"{method}: fine-tuning improved the held-out response loss"
assert ok["lorakit-qlora"]["peak_bytes"] < ok.get("lora", {"peak_bytes": float("inf")})["peak_bytes"], \
    "a 4-bit base needs less memory than the 16/32-bit one"
if "bnb-peft-qlora" in ok:
    gap = abs(ok["lorakit-qlora"]["val_bits"] - ok["bnb-peft-qlora"]["val_bits"])
    print(f"lorakit QLoRA vs bitsandbytes + PEFT: held-out loss differs by {gap:.3f} bits/token")
    assert gap < 0.25 * (hf_base_bits - min(r["val_bits"] for r in ok.values())) + 0.05, \
        "the two QLoRA implementations learn the same amount"

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
names = list(ok)
axes[0].bar(names, [ok[m]["peak_bytes"] / 2**20 for m in names], color="tab:blue")
axes[0].set_ylabel("peak memory (MB)")
axes[0].set_title(f"Memory on {DEVICE.type} ({Path(MODEL).name})")
# the improvement itself, from 0: a drop of 0.5 bits on a loss of 6 would vanish on an axis from 0
drops = {m: hf_base_bits - ok[m]["val_bits"] for m in names}
bars = axes[1].bar(names, [drops[m] for m in names], color="tab:green")
axes[1].bar_label(bars, [f"{drops[m]:.3f}" for m in names], fontsize=8)
axes[1].set_ylabel(f"held-out loss drop (bits/token; base {hf_base_bits:.2f})")
axes[1].set_title(improvement_title(drops, hf_base_bits), fontsize=9, wrap=True)
for ax in axes:
    ax.tick_params(axis="x", labelrotation=20)
plt.show()

# %% [markdown]
# The same held-out prompts, before and after lorakit's QLoRA:

# %%
qlora_model = hf_runs["lorakit-qlora"]["model"]
stopped_after = []
after = hf.generate_answers(qlora_model, tokenizer, show, max_new_tokens=24, stopped=stopped_after)
for pair, b, a in zip(show, before, after):  # '' = nothing but blank lines (a base model's habit)
    print(f"\n{pair.name}()   true: {pair.summary}\n  before: {b!r}\n  after:  {a!r}")
stop_before, stop_after = sum(stopped_before) / len(show), sum(stopped_after) / len(show)
print(f"\nanswers ended with {tokenizer.eos_token} within 24 tokens: before {stop_before:.0%}, after {stop_after:.0%}")

# %%
assert all(after), "every fine-tuned answer has something to read"
assert any(before) or FAST, "the base model answers with something (here: Python comments) on some prompt"
assert any(b != a for b, a in zip(before, after)), "fine-tuning changed what the model answers"
if not REAL:  # the stand-in is a base model: it never saw <|im_end|> and never stops; SFT teaches it to
    assert stop_after >= stop_before, "fine-tuning on answers that end with EOS does not make it stop less"

# %% [markdown]
# ## 7. Ship it: the exact merge, saved and reloaded
#
# The adapter was trained against the *dequantized* weights $\widehat W$, so the model that was
# trained is $\widehat W + s\,(AB)^\top$ (notebook 08 measures the alternatives: merging into the
# original 16-bit weights is a different model, and re-quantizing to 4 bits adds rounding noise —
# smaller than a trained update of that notebook's size, 0.23× its size at learner size and 0.30×
# in test mode, asserted < 1 there — and rounds away an update small next to the 4-bit grid step). `merge_into_dequantized` writes exactly that sum into plain `nn.Linear`
# layers; the result is an ordinary Hugging Face model: `save_pretrained`, then anyone can
# `from_pretrained` it without lorakit. In float32 it is exact; in bfloat16 it is half the size and
# rounds the sum once more (measured below).

# %%
prompt_ids = hf.chat_prompt_ids(tokenizer, show[0]).to(DEVICE)
with torch.no_grad():
    trained_logits = qlora_model(input_ids=prompt_ids).logits.float()
merged = copy.deepcopy(qlora_model)
merge_into_dequantized(merged, dtype=torch.float32)
out_dir = Path(tempfile.mkdtemp()) / "merged"
hf.save_merged(merged, out_dir, torch.float32, tokenizer)  # every tensor float32, and the config says so
del merged
reloaded = hf.load_model(out_dir, torch.float32, DEVICE, local_only=True)
with torch.no_grad():
    gap32 = (reloaded(input_ids=prompt_ids).logits.float() - trained_logits).abs().max().item()
size = sum(f.stat().st_size for f in out_dir.glob("*.safetensors"))
stored = hf.checkpoint_dtypes(out_dir)
print(f"merged model: {size / 2**20:.1f} MB on disk, stored as {sorted(stored)}; "
      f"max |Δlogit| vs the trained QLoRA model = {gap32:.2e}")
merge_stats = hf.merge_agreement(qlora_model, reloaded, hf_val[:16], tokenizer.pad_token_id)
ids_trained = hf.generate_ids(qlora_model, tokenizer, show[:2], max_new_tokens=24)
ids_again = hf.generate_ids(reloaded, tokenizer, show[:2], max_new_tokens=24)
print(f"teacher-forced: the same next-token argmax at {100 * merge_stats['agreement']:.2f} % of "
      f"{merge_stats['positions']} held-out response tokens; held-out loss {merge_stats['bits_trained']:.4f} "
      f"(trained) vs {merge_stats['bits_reloaded']:.4f} bits/token (reloaded)")
print("greedy answers, same token ids:", ids_again == ids_trained)
merged16 = copy.deepcopy(qlora_model)
merge_into_dequantized(merged16, dtype=torch.bfloat16)
with torch.no_grad():
    gap16 = (merged16.to(torch.bfloat16)(input_ids=prompt_ids).logits.float() - trained_logits).abs().max().item()
del merged16
print(f"merged in bfloat16 instead: max |Δlogit| = {gap16:.2e} (the extra 16-bit rounding of Ŵ + sAB)")
print("reloaded model answers:", [tokenizer.decode(ids, skip_special_tokens=True) for ids in ids_again])

# %% [markdown]
# What "the same model" can mean depends on the compute dtype. In **float32** the merge is exact:
# the same next-token argmax everywhere, logits within float rounding, the same greedy answers —
# compared as **token ids**, not decoded text (decoding drops special tokens and `strip()` drops
# spaces, so different answers, and all empty ones, can look alike). With **bfloat16** compute the
# trained model rounded every activation to bfloat16 and the float32 reload does not: a greedy
# answer can flip at one token and differ from there on. What must hold there is statistical:
# teacher-forced argmax agreement of at least 90 % and the same held-out loss within 0.05
# bits/token (`hf.merge_problems` states both rules).

# %%
assert stored == {"F32"} and {p.dtype for p in reloaded.parameters()} == {torch.float32}, \
    "the checkpoint holds one dtype and loads as it was saved"
problems = hf.merge_problems(merge_stats, COMPUTE_DTYPE, ids_again == ids_trained)
assert not problems, f"the merged, saved and reloaded model is not the trained one: {problems}"
if COMPUTE_DTYPE == torch.float32:
    assert gap32 < 1e-4, "merging into the dequantized base, saved and reloaded, is the trained model"

# %% [markdown]
# ## 8. Your own model, on your own data
#
# The recipe above is all a learner needs for another model: set `MODEL_ID` (any causal LM
# whose linear layers are `nn.Linear`: Llama, Qwen, Mistral, Gemma, SmolLM…) and bring your
# data as a **JSONL file**, one record per line, in either of the two formats trainers read:
#
# ```
# {"prompt": "Write the one-line docstring summary of …\n\ndef isleap(year): …", "response": "Return True for leap years, False for non-leap years."}
# {"messages": [{"role": "system", "content": "…"}, {"role": "user", "content": "…"}, {"role": "assistant", "content": "…"}]}
# ```
#
# (in a chat record the last message is the answer that is learned; earlier turns are context).
# `sft.encode_records` turns records into ids and labels through the model's **own** chat
# template with the assistant marker (`apply_chat_template(add_generation_prompt=True)`: exactly
# what generation will see), appends the EOS token and masks the prompt. A prompt too long for
# `max_len` loses the end of its *content* — never a template marker, the answer or its EOS; a
# record that cannot fit even so is dropped, counted, and a warning says how many.
# lorakit ships a small example file built from the stdlib task (`sft.EXAMPLE_JSONL`, 240
# records, rebuilt by `scripts/make_sft_example.py`); replace the path with yours.
#
# The cell below is the whole recipe — read, split, check (the data doctor of section 9), train,
# evaluate (held-out loss and the **stop rate**: the share of greedy answers that end with EOS),
# generate, then ship both ways: the adapter in PEFT's format and the exact merge, each saved and
# reloaded. It runs on whatever section 6 picked: SmolLM2 on a GPU, the CPU stand-in here.

# %%
from lorakit import data_doctor
from lorakit.adapters import load_peft_adapter, save_peft_adapter

records = sft.read_jsonl(sft.EXAMPLE_JSONL)  # ← your file
print(f"{sft.EXAMPLE_JSONL.name}: {len(records)} records; the first line:\n"
      f"{sft.EXAMPLE_JSONL.read_text(encoding='utf-8').splitlines()[0][:240]} …")
own_train_records, own_val_records = sft.split_records(records, val_share=0.1, seed=0)
OWN = dict(max_len=HF["max_len"], steps=HF["steps"], batch_size=HF["batch_size"], lr=2e-4, r=HF["r"],
           alpha=HF["alpha"], max_new_tokens=32)
own_train, own_dropped = sft.encode_records(own_train_records, tokenizer, OWN["max_len"])
own_val, _ = sft.encode_records(own_val_records, tokenizer, OWN["max_len"])
own_report = data_doctor.check(own_train, tokenizer, records=own_train_records, max_len=OWN["max_len"])
print(f"\n{len(own_train)} training and {len(own_val)} held-out examples at max_len {OWN['max_len']} "
      f"({own_dropped} dropped); data doctor: {own_report}")

own_model = hf.prepare("lorakit-qlora", MODEL, COMPUTE_DTYPE, DEVICE, r=OWN["r"], alpha=OWN["alpha"],
                       local_only=not REAL)
pad = tokenizer.pad_token_id
own_before = dict(bits=sft.evaluate_sft(own_model, own_val, pad),  # B = 0: this is still the base model
                  stop=sft.stop_rate(sft.answer_records(own_model, tokenizer, own_val_records, OWN["max_new_tokens"])))
own_losses = sft.train_sft(own_model, own_train, OWN["steps"], OWN["batch_size"], OWN["lr"], pad, warmup=4,
                           progress=not FAST, desc="own data")
own_answers = sft.answer_records(own_model, tokenizer, own_val_records, OWN["max_new_tokens"])
own_after = dict(bits=sft.evaluate_sft(own_model, own_val, pad), stop=sft.stop_rate(own_answers))
print(f"held-out response loss {own_before['bits']:.3f} → {own_after['bits']:.3f} bits/token; "
      f"stop rate {own_before['stop']:.2f} → {own_after['stop']:.2f}")
for record, (text, stopped) in list(zip(own_val_records, own_answers))[:3]:
    print(f"  true: {record['response']}\n  got:  {text!r}{'' if stopped else '  (no EOS)'}")

own_dir = Path(tempfile.mkdtemp())
save_peft_adapter(own_model, own_dir / "adapter", base_model_name_or_path=str(MODEL))
merged_own = copy.deepcopy(own_model)
merge_into_dequantized(merged_own, dtype=torch.float32)
merged_own.save_pretrained(own_dir / "merged")
tokenizer.save_pretrained(own_dir / "merged")
from_adapter = hf.prepare("lorakit-qlora", MODEL, COMPUTE_DTYPE, DEVICE, r=OWN["r"], alpha=OWN["alpha"],
                          local_only=not REAL)
load_peft_adapter(from_adapter, own_dir / "adapter")
from_merge = hf.load_model(own_dir / "merged", torch.float32, DEVICE, local_only=True)
probe_ids = torch.tensor([sft.prompt_ids(own_val_records[0], tokenizer)], device=DEVICE)
with torch.no_grad():
    own_logits = own_model(input_ids=probe_ids).logits.float()
    gap = {name: (m(input_ids=probe_ids).logits.float() - own_logits).abs().max().item()
           for name, m in {"PEFT-format adapter": from_adapter, "merged model": from_merge}.items()}
sizes = {"adapter": sum(f.stat().st_size for f in (own_dir / "adapter").iterdir()),
         "merged": sum(f.stat().st_size for f in (own_dir / "merged").glob("*.safetensors"))}
print(f"saved: adapter {sizes['adapter'] / 2**20:.2f} MB, merged model {sizes['merged'] / 2**20:.1f} MB; "
      "reloaded, max |Δlogit| vs the trained model: " + ", ".join(f"{k} {v:.1e}" for k, v in gap.items()))
reloaded_answers = {name: sft.answer_records(m, tokenizer, own_val_records[:4], OWN["max_new_tokens"])
                    for name, m in {"adapter": from_adapter, "merged": from_merge}.items()}

# %%
assert own_dropped == 0 and not own_report.problems, "the example file fits, and the doctor finds nothing"
assert own_after["bits"] < own_before["bits"], "training on your data lowers the held-out response loss"
if GPU_SIZE:  # a pretrained instruct model answers and stops; the random CPU stand-in cannot yet
    assert own_after["stop"] >= 0.5, "most answers end with EOS"
assert gap["PEFT-format adapter"] < 1e-4, "the PEFT-format adapter on a fresh 4-bit base is the trained model"
if COMPUTE_DTYPE == torch.float32:
    assert gap["merged model"] < 1e-4, "the merge into the dequantized base, saved and reloaded, is the trained model"
else:  # the trained model computed its base in bfloat16; the float32 merge differs by that rounding
    assert gap["merged model"] < 0.5, "the merge differs from the trained model only by bfloat16 rounding"
assert reloaded_answers["adapter"] == own_answers[:4], "the reloaded adapter answers like the trained model"
if COMPUTE_DTYPE == torch.float32:
    assert reloaded_answers["merged"] == own_answers[:4], "so does the reloaded merge"

# %% [markdown]
# On the random tiny Llama that stands in on a CPU, a few steps barely move the loss and no answer
# stops: there the cell checks the mechanics (the data, the saves, the reloads); section 9 measures
# stopping on a task a random model learns in seconds. With a pretrained model the same cell is
# the real recipe. The same files leave lorakit: `peft.PeftModel.from_pretrained(base, own_dir / "adapter")` reads
# the adapter folder (`tests/test_peft_format.py` checks it gives the same outputs as lorakit),
# and the merged folder is an ordinary `from_pretrained` model.
#
# **What to expect on a Colab T4** (estimates, not yet measured on one; the README will record
# the first GPU run): float32 compute (no native bfloat16); SmolLM2-360M in 4 bits ≈ 0.25 GB of
# weights; at batch 8 × 384 tokens, ≈ 6·N·tokens ≈ 6.7 TFLOP per step (plus re-computation of
# the 4-bit weights) on ≈ 8 TFLOP/s of float32 → about 1–2 s per step, so 150 steps per method
# take a few minutes; full fine-tuning (≈ 16 bytes per parameter ≈ 5.8 GB plus activations) fits.
# A 7B model in 4 bits (≈ 3.9 GB) fits a T4 for QLoRA; its full fine-tuning never would.

# %% [markdown]
# ## 9. Data traps: the model that never stops, and the data doctor
#
# The most reported fine-tuning failure on the PEFT, TRL and transformers trackers is a model
# that **never stops**. Sections 2–4 build the data the clean way, so the trap never shows; a first
# real dataset walks straight into it. The usual causes, each planted below on the real tokenizer
# path (a tiny Llama and its offline ChatML tokenizer), each with its symptom first, then
# `lorakit.data_doctor.check` catching it, then the fix restoring the number:
#
# | fault | how it happens | symptom |
# |---|---|---|
# | pad = EOS, pads masked | no pad token → `pad_token = eos_token`; a collator sets `labels[input_ids == pad_id] = -100` | the EOS label is masked: never stops |
# | no EOS | responses tokenized without `eos_token_id` | never stops |
# | template mismatch | a hand-made format in training, `apply_chat_template(add_generation_prompt=True)` at generation | worse held-out loss in the format generation uses |
# | truncated answers | `ids[:max_len]` cuts the end: the answer and its EOS go first | examples that teach nothing |
# | mask off the answer | a response-only mask that starts late (or finds no marker) | the answer's first token is never learned |
# | right padding at generation | `padding_side="right"` for a batch of prompts | batched answers differ from one-at-a-time ones |
#
# The metric is the **stop rate**: the share of greedy answers that end with EOS. A *random* tiny
# Llama cannot learn whole summaries in seconds (it answers "Return the the the…" after 60 steps
# and never stops, fault or not), so the traps use a one-word version of the task — answer with the
# summary's first word, the verb — where a clean run learns to stop within 30 steps, and a fault's
# effect is visible in seconds. Each run: a fresh copy, full fine-tuning, same seed and steps.

# %%
TRAP_FOLDER = cache_dir() / "tiny-llama-random"
if not (TRAP_FOLDER / "config.json").exists():
    hf.build_tiny_llama(TRAP_FOLDER)
trap_tok = hf.load_tokenizer(TRAP_FOLDER, local_only=True)
verb_records = [dict(prompt=r["prompt"], response=r["response"].split()[0]) for r in records]
trap_train_records, trap_val_records = sft.split_records(verb_records, val_share=0.1, seed=0)
TRAP = dict(max_len=96, steps=30, batch_size=16, lr=3e-3, max_new_tokens=8)
clean_ex, _ = sft.encode_records(trap_train_records, trap_tok, TRAP["max_len"])
trap_val_ex, _ = sft.encode_records(trap_val_records, trap_tok, TRAP["max_len"])


def trained_on(examples):
    """A fresh tiny Llama, every weight fine-tuned on ``examples`` (same seed, steps and rate)."""
    set_seed(0)
    model = hf.load_model(TRAP_FOLDER, local_only=True).requires_grad_(True)
    sft.train_sft(model, examples, TRAP["steps"], TRAP["batch_size"], TRAP["lr"], trap_tok.pad_token_id,
                  warmup=3, progress=False)
    return model.eval()


def measure(model):
    """Stop rate, share of non-empty answers and held-out response loss in the generation format."""
    answers = sft.answer_records(model, trap_tok, trap_val_records, TRAP["max_new_tokens"])
    return dict(stop=sft.stop_rate(answers), said=sum(bool(a.strip()) for a, _ in answers) / len(answers),
                bits=sft.evaluate_sft(model, trap_val_ex, trap_tok.pad_token_id), answers=answers)


clean_model = trained_on(clean_ex)
clean = measure(clean_model)
clean_report = data_doctor.check(clean_ex, trap_tok, records=trap_train_records, max_len=TRAP["max_len"])
print(f"clean data: stop rate {clean['stop']:.2f}, answers {[a for a, _ in clean['answers'][:3]]}, "
      f"held-out loss {clean['bits']:.3f} bits/token\ndata doctor: {clean_report}")

# %%
assert clean["stop"] >= 0.9 and not clean_report.problems, "clean data: it stops, and the doctor finds nothing"

# %% [markdown]
# **Trap 1 — the pad token is the EOS token, and the collator masks pads.** A model without a pad
# token (Llama, Mistral, many more) gets `tokenizer.pad_token = tokenizer.eos_token` in countless
# tutorials (and in `hf.load_tokenizer` when there is none); a collator that masks "padding" by its
# id — `labels[input_ids == pad_token_id] = -100`, as `DataCollatorForLanguageModeling` does —
# then masks every EOS too. The fix: a pad token that is not EOS, or mask padding by *position*
# (`sft.collate` does: labels past each example's length), which gives back the clean examples.

# %%
eos_tok = copy.deepcopy(trap_tok)
eos_tok.pad_token = eos_tok.eos_token
batch = sft.collate(clean_ex[:16], eos_tok.pad_token_id)
batch["labels"][batch["input_ids"] == eos_tok.pad_token_id] = sft.IGNORE  # the collator that masks by id
pad_masked = [(ids, torch.where(ids == eos_tok.pad_token_id, sft.IGNORE, labels)) for ids, labels in clean_ex]
trap1 = measure(trained_on(pad_masked))
print(f"symptom: stop rate {trap1['stop']:.2f} (clean {clean['stop']:.2f}); it runs on: {trap1['answers'][0][0]!r}")
trap1_report = data_doctor.check(batch, eos_tok)
print(trap1_report)
by_position = sft.collate(clean_ex[:16], eos_tok.pad_token_id)  # the fix: pad == EOS, masked by position
print("fixed:", data_doctor.check(by_position, eos_tok))

# %%
assert trap1["stop"] < 0.1 < clean["stop"], "with its EOS label masked the model never stops"
assert {f.code for f in trap1_report.problems} == {"pad_eos_masked"}, "the doctor names the cause"
assert not data_doctor.check(by_position, eos_tok).problems, "masked by position, pad == EOS is harmless"

# %% [markdown]
# **Trap 2 — no EOS after the answers.** Same symptom (section 4 showed it on the course GPT);
# the fix is `eos=True`, the default of `sft.encode_records`.

# %%
no_eos_ex, _ = sft.encode_records(trap_train_records, trap_tok, TRAP["max_len"], eos=False)
trap2 = measure(trained_on(no_eos_ex))
trap2_report = data_doctor.check(no_eos_ex, trap_tok, records=trap_train_records, max_len=TRAP["max_len"])
print(f"symptom: stop rate {trap2['stop']:.2f} (clean {clean['stop']:.2f})\n{trap2_report}")

# %%
assert trap2["stop"] < 0.1 < clean["stop"] and "no_eos" in trap2_report.codes

# %% [markdown]
# **Trap 3 — a template mismatch.** Training text in a hand-made format (`Question: … Answer: `),
# generation through the model's chat template. On this one-word task the model still stops (it
# learned "a word, then EOS" everywhere), but its held-out loss *in the format generation uses* is
# worse: it never saw that format. A real instance was in lorakit itself: the old
# `sft.chat_example` cut the prompt's *end* to fit `max_len`, and with it the assistant marker
# (replayed below on section 6's pairs; at the CPU's `max_len = 160` about half of them lost it).

# %%
hand_ex = [sft._example(trap_tok(f"Question: {r['prompt']}\nAnswer: ", add_special_tokens=False)["input_ids"]
                        [: TRAP["max_len"] - 4], sft.response_ids(r["response"], trap_tok), True)
           for r in trap_train_records]
trap3 = measure(trained_on(hand_ex))
trap3_report = data_doctor.check(hand_ex, trap_tok)
print(f"symptom: held-out loss in the generation format {trap3['bits']:.3f} bits/token "
      f"(clean {clean['bits']:.3f}); stop rate {trap3['stop']:.2f}\n{trap3_report}")
old_rule = []  # the old chat_example on section 6's pairs: prompt cut from its end to fit HF["max_len"]
for pair in train_pairs[:200]:
    prompt, answer = sft.prompt_ids(sft.pair_record(pair), tokenizer), sft.response_ids(pair.summary, tokenizer)
    old_rule.append(sft._example(prompt[: max(0, HF["max_len"] - len(answer))], answer, True))
old_report = data_doctor.check(old_rule, tokenizer)
new_report = data_doctor.check([sft.chat_example(p, tokenizer, HF["max_len"]) for p in train_pairs[:200]],
                               tokenizer)
old_mismatch = [f for f in old_report.findings if f.code == "template_mismatch"]
print(f"old chat_example at max_len {HF['max_len']}:", *old_mismatch)
print(f"new chat_example: {new_report}")

# %%
assert trap3["bits"] > clean["bits"] + 0.1, "trained in another format, the model is worse in the generation format"
assert "template_mismatch" in trap3_report.codes and "template_mismatch" not in clean_report.codes
assert old_mismatch and not new_report.problems, "the old rule cut the marker; the new one keeps it in every example"

# %% [markdown]
# **Trap 4 — answers truncated by `max_len`.** Tokenize the whole text, keep the first `max_len`
# tokens: the end goes first, and the end is the answer and its EOS. An example without its
# answer teaches nothing (with the mask) or teaches to run on (without it). The fix shortens the
# prompt instead: `sft.encode_records` at the same `max_len` keeps every answer whole.

# %%
whole, _ = sft.encode_records(trap_train_records, trap_tok, 10**6)
tail_cut = [(ids[: TRAP["max_len"]], labels[: TRAP["max_len"]]) for ids, labels in whole]
lost = sum(ids[-1] != trap_tok.eos_token_id for ids, _ in tail_cut) / len(tail_cut)
trap4_report = data_doctor.check(tail_cut, trap_tok, records=trap_train_records, max_len=TRAP["max_len"])
print(f"symptom: {100 * lost:.0f} % of the examples lost their answer or its EOS\n{trap4_report}")

# %%
assert lost > 0.2 and "response_truncated" in trap4_report.codes
assert all(ids[-1] == trap_tok.eos_token_id for ids, _ in clean_ex), "the fix keeps every answer and its EOS"

# %% [markdown]
# **Trap 5 — a response mask that misses the answer.** Response-only masking searches for the
# assistant marker; off by one token (a marker tokenized differently in context, a hand-counted
# length), the answer's first token is never learned — and if the marker is not found at all, the
# example has no label (TRL warns "Could not find response key"). The model then answers with
# nothing but EOS. The opposite fault — labels on the prompt (`mask=False`) — has no stop-rate
# symptom (section 4 measures its cost); the doctor reports it as a warning.

# %%
late_ex = []
for ids, labels in clean_ex:
    labels = labels.clone()
    labels[int((labels != sft.IGNORE).nonzero()[0])] = sft.IGNORE  # the mask starts one token late
    late_ex.append((ids, labels))
trap5 = measure(trained_on(late_ex))
trap5_report = data_doctor.check(late_ex, trap_tok)
no_mask_report = data_doctor.check(sft.encode_records(trap_train_records, trap_tok, TRAP["max_len"], mask=False)[0],
                                   trap_tok)
print(f"symptom: answers that say something {trap5['said']:.2f} (clean {clean['said']:.2f}); "
      f"first answers {[a for a, _ in trap5['answers'][:3]]}\n{trap5_report}\n"
      f"prompt labelled too: {no_mask_report.problems[0]}")

# %%
assert trap5["said"] < 0.5 < clean["said"], "without its first token's label, the answer is not learned"
assert "mask_misses_response" in trap5_report.codes and "mask_covers_prompt" in no_mask_report.codes

# %% [markdown]
# **Trap 6 — right padding for batched generation.** Training pads on the right (harmless: with
# causal attention, real tokens never see the pads after them). A batch of *prompts* padded on the
# right puts pad tokens between a short prompt and its answer: the model continues after them.
# The fix is `tokenizer.padding_side = "left"` (`sft.answer_records` pads on the left, and its
# batched answers equal one-at-a-time ones).

# %%
right_tok = copy.deepcopy(trap_tok)
right_tok.padding_side = "right"
texts = [trap_tok.decode(sft.prompt_ids(r, trap_tok)) for r in trap_val_records]
right_batch = right_tok(texts, padding=True, add_special_tokens=False, return_tensors="pt")
with torch.no_grad():
    out = clean_model.generate(**right_batch, max_new_tokens=TRAP["max_new_tokens"], do_sample=False,
                               eos_token_id=trap_tok.eos_token_id, pad_token_id=trap_tok.pad_token_id)
right_answers = [trap_tok.decode(row, skip_special_tokens=True).strip()
                 for row in out[:, right_batch["input_ids"].shape[1]:].tolist()]
alone = [sft.answer_records(clean_model, trap_tok, [r], TRAP["max_new_tokens"])[0][0] for r in trap_val_records]
agree = {"right-padded batch": sum(a == b for a, b in zip(right_answers, alone)) / len(alone),
         "left-padded batch": sum(a == b for (a, _), b in zip(clean["answers"], alone)) / len(alone)}
trap6_report = data_doctor.check(dict(right_batch), right_tok)
left_tok = copy.deepcopy(trap_tok)
left_tok.padding_side = "left"
left_report = data_doctor.check(dict(left_tok(texts, padding=True, add_special_tokens=False)), left_tok)
print("symptom: share of batched answers equal to the one-at-a-time answer:",
      {k: round(v, 2) for k, v in agree.items()}, f"\n{trap6_report}\nfixed (left): {left_report}")

# %%
assert agree["right-padded batch"] < 0.9 and agree["left-padded batch"] == 1.0
assert "right_padding_generation" in trap6_report.codes and not left_report.problems

# %% [markdown]
# Every trap at a glance (the fixed column is the clean run: each fix gives back the clean examples):

# %%
rows = [("pad = EOS, pads masked", "stop rate", trap1["stop"], clean["stop"]),
        ("no EOS", "stop rate", trap2["stop"], clean["stop"]),
        ("template mismatch", "held-out bits/token", trap3["bits"], clean["bits"]),
        ("truncated answers", "examples with answer + EOS", 1 - lost, 1.0),
        ("mask off the answer", "answers that say something", trap5["said"], clean["said"]),
        ("right padding (generation)", "answers equal to one-at-a-time", agree["right-padded batch"],
         agree["left-padded batch"])]
print(f"{'fault':<28}{'symptom':<33}{'with the fault':>15}{'fixed':>8}")
for fault, symptom, bad, good in rows:
    print(f"{fault:<28}{symptom:<33}{bad:>15.2f}{good:>8.2f}")

# %% [markdown]
# ## 10. Training a real model well
#
# Sections 6–8 train for a few dozen steps. A real fine-tune — a 7B model on a T4, thousands of
# steps, your own data — needs six more things. Each is a keyword argument of `sft.train_sft`
# (or `hf.fine_tune(..., train_options=...)`) or a function of `lorakit.quantload` /
# `lorakit.recipe`, and each **defaults to what this notebook did above**:
#
# | what | why | lorakit |
# |---|---|---|
# | quantize on load | never hold the full-precision model in host memory | `quantload.load_qlora` |
# | warm-up + cosine | big steps first, small steps at the end | `schedule="cosine"` |
# | gradient accumulation | a large batch in the memory of a small one | `accumulation_steps=k` |
# | gradient clipping | one bad batch cannot throw the adapter away | `max_grad_norm=1.0` |
# | paged 8-bit AdamW | optimizer states at ≈ 2 bytes/parameter, paged out under pressure | `optimizer="paged_adamw_8bit"` |
# | length-grouped batches | less compute spent on padding | `group_by_length=True` |
# | the template's end-of-turn token | the model learns the stop its chat format uses | `recipe.end_of_turn_id` |
# | the adapter in PEFT's format | anyone loads it with `PeftModel.from_pretrained` over a 4-bit base | `recipe.save_adapter_for_peft` |
#
# **Quantize on load.** `hf.load_model` + `prepare_qlora` first builds the whole model in the
# compute dtype. `quantload.load_qlora` builds it with every parameter on PyTorch's `meta` device
# (a shape, no storage), then reads the safetensors shards one tensor at a time and replaces each
# linear layer by its 4-bit version as its weight arrives. Same arguments, same model, bit for bit:

# %%
from lorakit import quantload, recipe
from lorakit.memory import linear_shapes, parameter_counts

set_seed(0)
today = prepare_qlora(hf.load_model(MODEL, COMPUTE_DTYPE, DEVICE, local_only=not REAL), r=HF["r"],
                      alpha=HF["alpha"], compute_dtype=COMPUTE_DTYPE)
set_seed(0)
on_load = quantload.load_qlora(MODEL, r=HF["r"], alpha=HF["alpha"], compute_dtype=COMPUTE_DTYPE, device=DEVICE,
                               local_only=not REAL)
a, b = today.state_dict(), on_load.state_dict()
same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
print(f"{len(a)} tensors (4-bit codes, block constants, norms, embeddings, LoRA A and B): "
      f"{'all equal' if same else 'DIFFERENT'}; 4-bit storage {storage_report(on_load)['bytes']:,} bytes")
n7 = parameter_counts("7B")
# float32 on a T4: the whole model, or its linear layers in 4 bits and the rest (embeddings, head, norms)
float32_7b, four_bit_7b = 4 * n7["total"], n7["linear"] * 4.127 / 8 + 4 * n7["other"]
print(f"LLaMA-7B: load then quantize holds {float32_7b / 1e9:.1f} GB in float32 (a T4's compute dtype) "
      f"before quantizing; quantize on load holds the {four_bit_7b / 1e9:.1f} GB 4-bit model "
      "(on the GPU) plus one tensor at a time; Colab's host RAM: ≈ 12.7 GB")
del today

# %%
assert same, "quantize-on-load stores exactly what load-then-prepare_qlora stores"
assert float32_7b > 12.7e9 > four_bit_7b, "7B on a T4's host: only quantize-on-load fits"

# %% [markdown]
# `bench/bench_quantize_on_load.py` measures the host peak of both paths in fresh processes on a
# model with SmolLM2-360M's exact shapes (random weights, 3 shards): `bench/results/cpu-quantize-on-load.txt`.
#
# **The learning-rate schedule.** Warm-up, then constant (QLoRA's choice, used above) or a cosine
# decay to `min_lr_ratio · lr`: $\eta_t = \eta_{\min} + (\eta - \eta_{\min})\,\tfrac12(1 + \cos \pi p)$,
# $p = (t - t_w)/(T - t_w)$ — transformers' `get_cosine_schedule_with_warmup` after its warm-up.

# %%
T, W = 100, 10
constant = [recipe.learning_rate(t, T, 2e-4, W) for t in range(T)]
cosine = [recipe.learning_rate(t, T, 2e-4, W, "cosine", min_ratio=0.1) for t in range(T)]
plt.figure(figsize=(6, 3))
plt.plot(constant, label="warm-up + constant (default)")
plt.plot(cosine, label="warm-up + cosine to 0.1·lr")
plt.xlabel("step")
plt.ylabel("learning rate")
plt.title("Two schedules, 10 warm-up steps")
plt.legend()
plt.show()

# %%
assert cosine[W] == constant[W] == 2e-4, "both reach the peak rate after the warm-up"
assert abs(cosine[W + (T - W) // 2] - 0.55 * 2e-4) < 1e-12, "half way: half way between peak and floor"
assert all(x > y for x, y in zip(cosine[W:], cosine[W + 1:])), "the cosine only goes down"

# %% [markdown]
# **Gradient accumulation** sums the gradients of `k` micro-batches before one update. Each
# labelled token is weighted $1/N$ with $N$ the labelled tokens of all `k` micro-batches, so two
# micro-batches of 2 make *the same update* as one batch of 4 — in the memory of a batch of 2.
# (Averaging each micro-batch's mean loss instead would weight a short answer's tokens more.)

# %%
micro = {}
for name, (bs, k) in {"one batch of 4": (4, 1), "2 micro-batches of 2": (2, 2)}.items():
    set_seed(0)
    m = quantload.load_qlora(MODEL, r=HF["r"], alpha=HF["alpha"], compute_dtype=torch.float32, device=DEVICE,
                             local_only=not REAL)  # float32: an equality is checked, not bfloat16 rounding
    losses = sft.train_sft(m, hf_train, steps=2, batch_size=bs, lr=1e-3, pad_id=tokenizer.pad_token_id,
                           warmup=1, progress=False, accumulation_steps=k)
    micro[name] = (losses, [layer.B.detach().float().clone() for layer in lora_layers(m).values()])
(l4, B4), (l22, B22) = micro.values()
gap = max((x - y).abs().max().item() for x, y in zip(B4, B22))
size = max(x.abs().max().item() for x in B4)
print(f"losses {[round(x, 4) for x in l4]} vs {[round(x, 4) for x in l22]}; "
      f"B after 2 steps differs by {gap:.1e} (its entries reach {size:.1e})")

# %%
assert all(abs(x - y) < 1e-3 * abs(x) for x, y in zip(l4, l22)), "the same loss"
assert gap < 1e-2 * size, "the same update: accumulation is one larger batch"

# %% [markdown]
# **The rest of the recipe, in one run:** `hf.fine_tune` with clipping at norm 1, accumulation,
# the cosine schedule, the paged 8-bit AdamW and length-grouped batches. bitsandbytes' 8-bit
# optimizers run only on CUDA, so elsewhere `recipe.choose_optimizer` falls back to torch's AdamW
# and says so; on a GPU, `memory.track_peak` adds the paged states (in unified memory, which
# `torch.cuda.max_memory_allocated` cannot see) to the peak. 8-bit states take ≈ 2.03 bytes per
# trainable parameter instead of AdamW's 8 — for tensors of at least 4,096 values: bitsandbytes
# keeps 32-bit states for smaller ones (its `min_8bit_size`), which is every adapter of the tiny
# stand-in, so we also count them at SmolLM2-360M's shapes.

# %%
OPTIONS = dict(max_grad_norm=1.0, accumulation_steps=2, schedule="cosine", optimizer="paged_adamw_8bit",
               group_by_length=True)
recipe_run = hf.fine_tune("lorakit-qlora", MODEL, hf_train, hf_val, steps=max(6, HF["steps"] // 2), warmup_steps=1,
                          batch_size=max(1, HF["batch_size"] // 2), lr=LR["lorakit-qlora"],
                          compute_dtype=COMPUTE_DTYPE, device=DEVICE, pad_id=tokenizer.pad_token_id,
                          r=HF["r"], alpha=HF["alpha"], local_only=not REAL, progress=not FAST,
                          keep_model=True, train_options=OPTIONS)
rec = recipe_run["training"]
trainable = [p for p in recipe_run["model"].parameters() if p.requires_grad]
states = {name: recipe.optimizer_state_bytes(trainable, name) for name in ("adamw", "paged_adamw_8bit")}
SMOLLM2 = dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
               num_key_value_heads=5, vocab_size=49152)  # its adapters' shapes, as meta tensors (no memory)
smol_lora = [torch.empty(shape, device="meta") for _ in range(SMOLLM2["num_hidden_layers"])
             for m, n in linear_shapes(SMOLLM2).values() for shape in ((m, HF["r"]), (HF["r"], n))]
smol_states = {name: recipe.optimizer_state_bytes(smol_lora, name) for name in ("adamw", "paged_adamw_8bit")}
print(f"optimizer: {rec['optimizer']}" + (f" ({rec['optimizer_why']})" if rec["optimizer_why"] else ""))
print(f"gradient norm before clipping: first {rec['grad_norm'][0]:.2f}, largest {max(rec['grad_norm']):.2f}; "
      f"lr {rec['lr'][0]:.1e} → {max(rec['lr']):.1e} → {rec['lr'][-1]:.1e}")
for where, st in {f"this model, r={HF['r']}": states, f"SmolLM2-360M's shapes, r={HF['r']}": smol_states}.items():
    print(f"optimizer states, {where}: AdamW {st['adamw'] / 2**20:.2f} MB, "
          f"paged 8-bit {st['paged_adamw_8bit'] / 2**20:.2f} MB")
print(f"peak {recipe_run['peak_bytes'] / 2**20:.1f} MB ({recipe_run['memory_method'].split(':')[0]}); "
      f"held-out {recipe_run['val_bits']:.3f} bits/token (base {hf_base_bits:.3f})")

# %%
assert rec["optimizer"] == ("paged_adamw_8bit" if ON_GPU else "adamw"), "8-bit AdamW on CUDA, else the fallback"
assert len(rec["grad_norm"]) == len(rec["lr"]) and rec["lr"][-1] < max(rec["lr"]), "clipped every step; lr decays"
assert states["paged_adamw_8bit"] <= states["adamw"], "never more than AdamW's"
assert smol_states["paged_adamw_8bit"] < 0.3 * smol_states["adamw"], "at a real shape, about a quarter of AdamW's"
assert recipe_run["val_bits"] < hf_base_bits, "the recipe run improves the held-out loss too"

# %% [markdown]
# **Padding.** `collate` pads every example of a batch to its longest. Random batches of
# functions of very different lengths are largely padding — compute spent on nothing. Batches of
# similar length (shuffled, cut into groups of 50 batches, sorted inside each group, the batches
# shuffled again) keep the randomness across batches and drop most of it:

# %%
def padding_random_vs_grouped(examples, batch_size):
    lengths = [len(ids) for ids, _ in examples]
    shuffled = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    grouped = recipe.length_grouped_order(lengths, batch_size, seed=0)
    return recipe.padding_share(lengths, shuffled, batch_size), recipe.padding_share(lengths, grouped, batch_size)


padding = {f"this run ({HF['max_len']} tokens, batch {HF['batch_size']})":
           padding_random_vs_grouped(hf_train, HF["batch_size"]),
           "the GPU shape (384 tokens, batch 8)":
           padding_random_vs_grouped([sft.chat_example(p, tokenizer, 384) for p in train_pairs], 8)}
for shape, (pad_random, pad_grouped) in padding.items():
    print(f"{len(hf_train):,} examples at {shape}: padding is {pad_random:.1%} of the tokens in random "
          f"batches, {pad_grouped:.1%} in length-grouped ones")

# %%
for shape, (pad_random, pad_grouped) in padding.items():
    assert pad_grouped < 0.75 * pad_random, f"{shape}: length-grouped batches cut the padding"

# %% [markdown]
# **The end-of-turn token.** The examples above end with the tokenizer's EOS. For SmolLM2 (ChatML)
# that is `<|im_end|>`, the token that closes a turn. Not every template works so: Gemma closes a
# turn with `<end_of_turn>` while its EOS is `<eos>` — a model trained to end answers with EOS
# never learns the stop its chat format expects. `recipe.end_of_turn_id` reads the token from the
# template itself (it renders a probe answer and takes the first special token after it); below,
# on this tokenizer and on a Gemma-style copy of it built offline.

# %%
eot = recipe.end_of_turn_id(tokenizer)
gemma = copy.deepcopy(tokenizer)
gemma.add_special_tokens({"bos_token": "<bos>", "eos_token": "<eos>"})
gemma.add_tokens(["<start_of_turn>", "<end_of_turn>"], special_tokens=True)
gemma.chat_template = ("{{ bos_token }}{% for message in messages %}"
                       "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
                       "<start_of_turn>{{ role }}\n{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
                       "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
gemma_eot = recipe.end_of_turn_id(gemma)
ids_g, _ = sft.chat_example(show[0], gemma, HF["max_len"], end_id=gemma_eot)
print(f"this tokenizer: end of turn {tokenizer.convert_ids_to_tokens(eot)!r}, EOS {tokenizer.eos_token!r}")
print(f"Gemma-style: end of turn {gemma.convert_ids_to_tokens(gemma_eot)!r}, EOS {gemma.eos_token!r}; "
      f"a training example now ends {gemma.decode(ids_g[-6:])!r}")

# %%
assert gemma.convert_ids_to_tokens(gemma_eot) == "<end_of_turn>" and gemma_eot != gemma.eos_token_id
assert ids_g[-1] == gemma_eot, "the answer ends where the template ends a turn, not with EOS"

# %% [markdown]
# **The adapter, in PEFT's format, over a 4-bit base.** `recipe.save_adapter_for_peft` writes
# `adapter_config.json` + `adapter_model.safetensors` as PEFT does (lorakit's $A$, $B$ transposed
# to PEFT's `lora_A`, `lora_B`). Anyone can then load the base in 4 bits with bitsandbytes and the
# adapter with `PeftModel.from_pretrained` — no lorakit needed. bitsandbytes stores the same NF4
# codes; on the CPU its backend re-lays them out with bfloat16 block constants, so the two models
# differ by a rounding far smaller than what the adapter changes:

# %%
adapter_dir = recipe.save_adapter_for_peft(recipe_run["model"], Path(tempfile.mkdtemp()) / "adapter", MODEL)
peft_model = recipe.load_peft_over_4bit(MODEL, adapter_dir, COMPUTE_DTYPE, DEVICE, local_only=not REAL)
ids0 = hf.chat_prompt_ids(tokenizer, show[0]).to(DEVICE)
with torch.no_grad():
    ours = recipe_run["model"](input_ids=ids0).logits.float()
    theirs = peft_model(input_ids=ids0).logits.float()
    with peft_model.disable_adapter():
        base_4bit = peft_model(input_ids=ids0).logits.float()
peft_gap, adapter_effect = (ours - theirs).abs().max().item(), (ours - base_4bit).abs().max().item()
print(f"{sorted(p.name for p in adapter_dir.iterdir())}; PeftModel over bitsandbytes 4-bit vs lorakit: "
      f"max |Δlogit| {peft_gap:.1e}; the adapter itself moves the logits by up to {adapter_effect:.1e}")

# %%
assert type(peft_model).__name__ == "PeftModelForCausalLM"
assert peft_gap < 0.1 * adapter_effect, "PEFT over bitsandbytes' 4 bits computes the model lorakit trained"
del peft_model, on_load

# %% [markdown]
# ## Summary
#
# - The stdlib yields thousands of instruction pairs; validation modules are never trained on.
# - A template tells the model where to answer, EOS teaches it to stop (without it: no stops),
#   and the loss mask puts the whole gradient on the answer (checked by gradient in the tests).
# - Full, LoRA and QLoRA all learn the task on the CPU; QLoRA stays close to LoRA.
# - On a real LLM, lorakit's QLoRA and bitsandbytes + PEFT learn the same amount, and a 4-bit base
#   needs less memory than the unquantized one; out-of-memory is a result, not a crash.
# - The compute dtype comes from native support: bfloat16 on Ampere+, float32 on a T4.
# - Merge into the dequantized base, not the original weights: saved and reloaded, it is the
#   trained model.
# - Your own JSONL goes through the model's own chat template; too long a prompt loses content,
#   never the marker, the answer or its EOS. The adapter (PEFT format) and the merge both reload exactly.
# - The model that never stops has data causes — pad = EOS masked, no EOS — and so do a template
#   mismatch, truncated answers, a mask off the answer and right-padded generation: each planted,
#   measured, caught by `lorakit.data_doctor.check`, and fixed.
#
# ## Exercises
#
# Solutions: `notebooks/solutions/nb09.py` (try first!). Each checker says what it accepts.
#
# **Exercise 9.1 — how much of the loss is the answer?** Over `train_ex` (byte-level, masked),
# what fraction of all tokens carry a label (response + EOS)? A float in (0, 1); tolerance
# ±0.01. Hint: count `labels != sft.IGNORE`.

# %%
answer = None  # your float
check_ex_9_1(answer, train_ex)

# %% [markdown]
# **Exercise 9.2 — write the loss mask (real code).** Write `make_labels(prompt_ids, response_ids)`
# returning the label list for `prompt_ids + response_ids`: `-100` for every prompt token and the
# token itself for every response token. The checker runs it on random prompts and responses
# (including an empty prompt) and compares it with the rule.

# %%
def make_labels(prompt_ids, response_ids):
    return None  # your code


check_ex_9_2(make_labels)

# %% [markdown]
# **Exercise 9.3 — merge one layer by hand (experiment).** Take one QLoRA layer of
# `qlora_model` (e.g. `layer = next(iter(lora_layers(qlora_model).values()))`), and compute the
# merged weight in PyTorch's out×in layout from `layer.base.dequantized_weight(torch.float32)`,
# `layer.A`, `layer.B` and `layer.scaling`. Pass `(layer, W_merged)`: the checker verifies your
# weight reproduces the layer's output within 1e-4 and is not the 16-bit-base merge.

# %%
answer = None  # (layer, W_merged)
check_ex_9_3(answer)

# %% [markdown]
# ## References
#
# - Dettmers et al., *QLoRA: Efficient Finetuning of Quantized LLMs*, 2023 — arXiv:2305.14314
#   (NF4, double quantization, paged optimizers; r = 64, α = 16, lr 2e-4 on all linear layers).
#   bitsandbytes: `BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
#   bnb_4bit_use_double_quant=True)`; PEFT: `prepare_model_for_kbit_training`, `LoraConfig`.
# - Hu et al., *LoRA*, 2021 — arXiv:2106.09685. PEFT: `get_peft_model`, `merge_and_unload`.
# - Ouyang et al., *Training language models to follow instructions with human feedback*, 2022 —
#   arXiv:2203.02155 (supervised fine-tuning on prompt → response demonstrations).
# - Wei et al., *Finetuned Language Models Are Zero-Shot Learners* (FLAN), 2021 — arXiv:2109.01652
#   (instruction templates).
# - Allal et al., *SmolLM2: When Smol Goes Big*, 2025 — arXiv:2502.02737.
# - Hugging Face TRL's `SFTTrainer` (`completion_only_loss`) implements the response-only mask;
#   transformers' `apply_chat_template` the chat templates (`add_generation_prompt=True` ends a prompt
#   with the assistant marker); `DataCollatorForLanguageModeling` masks labels by pad id, the
#   pad = EOS trap of section 9.
