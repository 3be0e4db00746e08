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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lorakit/lorakit/blob/main/notebooks/09_qlora_on_a_real_llm.ipynb)
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
# | device | test mode (`LORAKIT_FAST=1`) | learner size |
# |---|---|---|
# | 2-core x86_64 CPU, otherwise idle (load ≤ 2), 2026-11-29 | 16 s | 110 s (the tiny stand-in LLM on a CPU) |
# | Colab T4 (16 GB), SmolLM2-360M-Instruct | — | estimate: ≈ 10–20 min (not yet measured) |

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
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from lorakit import hf, sft, standin
from lorakit.exercises.nb09 import check_ex_9_1, check_ex_9_2, check_ex_9_3
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
MAX_SUMMARY = 28 if FAST else 60  # test mode: a 64-byte context needs short answers
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
# response and its EOS are always kept whole.

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

METHODS_CPU = {  # method: (how to make it from the base, learning rate)
    "full": (lambda m: m.requires_grad_(True), 1e-3),
    "LoRA": (lambda m: inject_lora(m, "all-linear", r=8, alpha=16), 1e-2),
    "QLoRA": (lambda m: prepare_qlora(m, "all-linear", r=8, alpha=16), 1e-2),
}
base_bits = sft.evaluate_sft(base, val_ex, pad_id=0)
cpu_runs = {}
for name, (make, lr) in METHODS_CPU.items():
    model = copy.deepcopy(base)
    make(model)
    losses = sft.train_sft(model, train_ex, STEPS, BATCH, lr, pad_id=0, seed=0, progress=not FAST, desc=name)
    cpu_runs[name] = dict(model=model, losses=losses, val_bits=sft.evaluate_sft(model, val_ex, pad_id=0),
                          trainable=count_parameters(model, trainable_only=True))
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
# out. Each fine-tuned model answers with an English sentence and stops at EOS. With under a
# million parameters and a few minutes on a CPU, the sentences are the *shape* of a summary more
# than a correct one — section 6 does the same with a real 360 M-parameter LLM.

# %%
MAX_NEW = 60  # bytes an answer may take
probe_pairs = val_pairs[:12]
probe = [sft.prompt_of(p, CONTEXT - len(p.summary) - 30) for p in probe_pairs]
models = {"base": base, **{k: v["model"] for k, v in cpu_runs.items()}}
answers = {name: [sft.generate_bytes(m, p, MAX_NEW) for p in probe] for name, m in models.items()}
show = probe_pairs[:4]
for i, pair in enumerate(show):
    print(f"\n{pair.module}: {pair.name}()   true: {pair.summary}")
    for name in models:
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
# ## 4. What goes wrong without the mask, and without EOS
#
# Two more LoRA runs, identical but for one habit each:
#
# - **no mask**: the loss also covers the prompt. Most tokens are code, so most of the gradient
#   teaches the model to write code — the task is learned with the remaining signal;
# - **no EOS**: the responses end without the marker, so the model never learns to stop.

# %%
ablations = {}
for name, kw in {"no mask": dict(mask=False), "no EOS": dict(eos=False)}.items():
    model = copy.deepcopy(base)
    inject_lora(model, "all-linear", r=8, alpha=16)
    sft.train_sft(model, sft.byte_examples(train_pairs, CONTEXT, **kw), STEPS, BATCH, 1e-2, pad_id=0, seed=0,
                  progress=not FAST, desc=name)
    ablations[name] = model
masked_share = sum(int((lab != sft.IGNORE).sum()) for _, lab in train_ex) / sum(len(i) for i, _ in train_ex)
no_mask_bits = sft.evaluate_sft(ablations["no mask"], val_ex, pad_id=0)
no_eos_answers = [sft.generate_bytes(ablations["no EOS"], p, MAX_NEW) for p in probe]
no_eos_stops = stop_share(no_eos_answers)
print(f"response tokens are {100 * masked_share:.0f} % of all tokens: without the mask the other "
      f"{100 * (1 - masked_share):.0f} % of the gradient teaches code")
print(f"held-out response loss: with mask {cpu_runs['LoRA']['val_bits']:.3f}, "
      f"without {no_mask_bits:.3f} bits/byte")
print(f"answers that stop: with EOS {stop_rate['LoRA']:.2f}, without EOS {no_eos_stops:.2f}")
print("without EOS it runs on:", repr(no_eos_answers[0]))

# %% [markdown]
# Without the mask the held-out answer loss is no better (the two numbers above): at learner
# size the two are equal within noise (measured 2.695 vs 2.698 bits/byte), in the short test-mode
# run the unmasked model is worse. With short prompts and a small model, training on the prompt
# mostly wastes compute; with real chat data, where prompts are often 10× longer than answers,
# most of an unmasked run is spent learning to write prompts. What the mask always buys is a
# loss that measures the answer.

# %%
assert masked_share < 0.5, "most tokens are prompt"
assert no_mask_bits > cpu_runs["LoRA"]["val_bits"] - 0.05, "training on prompts does not make better answers"
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
# `prepare_model_for_kbit_training` + PEFT `LoraConfig`), LoRA on the unquantized model, and full
# fine-tuning. Memory is the allocator's peak with a plain `torch.optim.AdamW` — its states are
# counted (bitsandbytes' *paged* optimizers keep them in unified memory, which
# `torch.cuda.max_memory_allocated` does not see). On the CPU, "memory" counts parameters,
# gradients and optimizer states (no activations). An out-of-memory error is reported as a result.

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
hf_runs = {}
for method in hf.METHODS:
    hf_runs[method] = hf.fine_tune(
        method, MODEL, hf_train, hf_val, steps=HF["steps"], batch_size=HF["batch_size"], lr=LR[method],
        compute_dtype=COMPUTE_DTYPE, device=DEVICE, pad_id=tokenizer.pad_token_id, r=HF["r"],
        alpha=HF["alpha"], warmup_steps=3, local_only=not REAL, progress=not FAST,
        keep_model=method == "lorakit-qlora")
print(f"{'method':<16}{'status':<12}{'trainable':>12}{'peak memory':>14}{'ms/step':>10}{'val bits':>10}")
for method, run in hf_runs.items():
    if run["status"] != "ok":
        print(f"{method:<16}{run['status']}")
        continue
    print(f"{method:<16}{'ok':<12}{run['trainable']:>12,}{run['peak_bytes'] / 2**20:>11.1f} MB"
          f"{run['ms_per_step']:>10.0f}{run['val_bits']:>10.3f}")
print(f"base model: held-out response loss {hf_base_bits:.3f} bits/token; memory measured as: "
      f"{hf_runs['lorakit-qlora'].get('memory_method', '')}")

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
axes[1].bar(names, [hf_base_bits - ok[m]["val_bits"] for m in names], color="tab:green")
axes[1].set_ylabel("held-out loss drop (bits/token)")
axes[1].set_title(f"Every method improves on the base ({hf_base_bits:.2f} bits/token)")
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
# original 16-bit weights is a different model, and re-quantizing to 4 bits adds noise several
# times the update). `merge_into_dequantized` writes exactly that sum into plain `nn.Linear`
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
merged.save_pretrained(out_dir)
tokenizer.save_pretrained(out_dir)
reloaded = hf.load_model(out_dir, torch.float32, DEVICE, local_only=True)
with torch.no_grad():
    gap32 = (reloaded(input_ids=prompt_ids).logits.float() - trained_logits).abs().max().item()
size = sum(f.stat().st_size for f in out_dir.glob("*.safetensors"))
print(f"merged float32 model: {size / 2**20:.1f} MB on disk; max |Δlogit| vs the trained QLoRA model = {gap32:.2e}")
merged16 = copy.deepcopy(qlora_model)
merge_into_dequantized(merged16, dtype=torch.bfloat16)
with torch.no_grad():
    gap16 = (merged16.to(torch.bfloat16)(input_ids=prompt_ids).logits.float() - trained_logits).abs().max().item()
print(f"merged in bfloat16 instead: max |Δlogit| = {gap16:.2e} (the extra 16-bit rounding of Ŵ + sAB)")
again = hf.generate_answers(reloaded, tokenizer, show[:2], max_new_tokens=24)
print("reloaded model answers:", again)

# %%
if COMPUTE_DTYPE == torch.float32:
    assert gap32 < 1e-4, "merging into the dequantized base, saved and reloaded, is the trained model"
else:  # the trained model computed its base in bfloat16; the float32 merge differs by that rounding
    assert gap32 < 0.5, "the merge differs from the trained model only by bfloat16 compute rounding"
assert again == after[:2], "the reloaded model answers exactly like the trained one"

# %% [markdown]
# ## 8. Your own model
#
# The recipe above is all a learner needs for another model: set `MODEL_ID` (any causal LM
# whose linear layers are `nn.Linear`: Llama, Qwen, Mistral, Gemma, SmolLM…), bring pairs,
# format them with the model's chat template, mask the prompt, append EOS, and:
#
# ```python
# model = hf.load_model(MODEL_ID, choose_compute_dtype("cuda"), "cuda")
# prepare_qlora(model, "all-linear", r=16, alpha=32, gradient_checkpointing=True)
# sft.train_sft(model, examples, steps=500, batch_size=8, lr=2e-4, pad_id=tokenizer.pad_token_id)
# merge_into_dequantized(model, torch.bfloat16); model.save_pretrained("my-model")
# ```
#
# **What to expect on a Colab T4** (estimates, not yet measured on one; the README will record
# the first GPU run): float32 compute (no native bfloat16); SmolLM2-360M in 4 bits ≈ 0.25 GB of
# weights; at batch 8 × 384 tokens, ≈ 6·N·tokens ≈ 6.7 TFLOP per step (plus re-computation of
# the 4-bit weights) on ≈ 8 TFLOP/s of float32 → about 1–2 s per step, so 150 steps per method
# take a few minutes; full fine-tuning (≈ 16 bytes per parameter ≈ 5.8 GB plus activations) fits.
# A 7B model in 4 bits (≈ 3.9 GB) fits a T4 for QLoRA; its full fine-tuning never would.

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
check_ex_9_1(answer)

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
#   transformers' `apply_chat_template` the chat templates.
