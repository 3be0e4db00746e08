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
# # 00 · Start here
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lorakit/lorakit/blob/v0.1.0/notebooks/00_start_here.ipynb)
#
# After this notebook you will have a working course environment and the small pretrained GPT
# that every later notebook fine-tunes with LoRA and QLoRA.
#
# **You will**
# - check that every package the course needs imports, and see which device it will use;
# - meet the data (text that ships with Python itself: no downloads) and its byte-level tokens;
# - train (or load from the cache) the base model, see its loss curve and what it writes.
#
# **Runtime** (measured; the learner-size base model ships with lorakit, so it loads in a second;
# `base_model(use_shipped=False)` retrains it: ≈ 3 min on 2 cores)
#
# | device | first run | later runs |
# |---|---|---|
# | 2-core x86_64 CPU, otherwise idle (load ≤ 2), learner size | 9 s (shipped weights; ≈ 3 min to retrain) | 9 s |
# | the same CPU, test mode (`LORAKIT_FAST=1`) | ≈ 25 s (trains the tiny test model once) | 10 s |
#
# ## The course map
#
# | notebook | idea | what it builds (then lives in `lorakit`) |
# |---|---|---|
# | `00_start_here` | environment, data, the base model | `data`, `model`, `train` |
# | `01_low_rank_updates` | why a fine-tuning update can be written $\Delta W = AB$: SVD, Eckart–Young, the measured spectrum of a real update | `lowrank` |
# | `02_lora_from_scratch` | the LoRA layer, injection, merging, adapter files, several adapters on one base, equality with PEFT | `lora`, `targets`, `adapters`, `files` |
# | `03_rank_and_alpha` | rank against reconstruction error, live sliders for $r$ and $\alpha$, rank sweeps, subspace similarity | `widgets`, `train.short_lora_run` |
# | `04_choosing_a_fine_tune` | target modules, learning rate, $r$ and $\alpha$ measured; forgetting; LoRA variants against PEFT | `doctor`, `variants` |
# | `05_lora_and_its_siblings` | adapters, prefix and prompt tuning built from scratch and compared with LoRA on one task | `siblings` |
# | `06_nf4_by_hand` | quantization from zero, INT4/FP4/NF4, bit-exact with bitsandbytes' CPU backend; MXFP4 and NVFP4 | `quant`, `mxfp` |
# | `07_double_quantization` | quantizing the constants: 4.5 → 4.127 bits per parameter, a memory calculator | `quant`, `memory` |
# | `08_qlora_by_hand` | a 4-bit linear layer with its own backward, QLoRA end to end on the course model; LoftQ and QA-LoRA | `qlora`, `memory`, `loftq`, `qalora` |
# | `09_qlora_on_a_real_llm` | QLoRA on a pretrained Hugging Face model (a GPU such as Colab's T4), with lorakit and with bitsandbytes + PEFT | `sft`, `data_doctor`, `hf`, `standin`, `quantload`, `recipe` |
# | `10_beyond_one_gpu` | sharding QLoRA over several processes (FSDP), on the CPU and on GPUs | `distributed` |
# | `11_lora_after_sft` | preference tuning (DPO) and RL (GRPO) with LoRA, rank 1 vs 8 vs full, what breaks | `preference`, `rl`, `doctor` |
# | `12_shipping_adapters` | many adapters in one batch, merging several adapters, export to llama.cpp's Q8_0/Q4_0 | `serving`, `merging`, `export` |
#
# Every notebook follows the same rhythm: **derive → build → check (an `assert`) → visualise →
# exercises**. When a cell says something is true, the next cell asserts it, so running a notebook
# top to bottom is a test of its claims.

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
# ## 1. Environment check
#
# The Python that runs this kernel (and whether it is the course's `.venv`), then each package
# `[OK]` or `[FAIL]` with its version, and last a `FIX:` line with the command that repairs what
# failed. This block is what to paste into a bug report; the same text comes from `make check` in
# a terminal (or `.venv/bin/python -m lorakit.check`; on Windows `.venv\Scripts\python -m lorakit.check`).
# The check needs only the standard library, so a kernel without torch still gets an answer.

# %%
try:
    from lorakit.check import report
except ImportError:  # a kernel whose Python has no lorakit at all: take the check from the checkout
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path.cwd().parent))
    from lorakit.check import report

text, all_required_ok = report()
print(text)

# %%
assert all_required_ok, "this kernel cannot run the course: run the FIX command printed above, then restart the kernel"

# %% [markdown]
# ## 2. The device
#
# The course picks CUDA when there is a GPU, then Apple's MPS, then the CPU. Every notebook
# but 09 is sized to run on a 2-core CPU in a few minutes; 09 loads a real LLM when it finds a GPU.

# %%
import torch

from lorakit.train import fast_mode, pick_device

device = pick_device()
FAST = fast_mode()
print(f"device: {device}   torch {torch.__version__}   CPU threads: {torch.get_num_threads()}")
print("test mode (LORAKIT_FAST): " + ("on — small sizes, same code" if FAST else "off — learner size"))

# %% [markdown]
# ## 3. The data: text that ships with Python
#
# Nothing in this course downloads anything. The "pretraining" text is the standard library's
# own source code (its tests excluded), and the new domain that later notebooks adapt to is the
# Python language reference that ships as `pydoc_data.topics`. A third domain, the standard
# library's tests, serves the several-adapters story in notebook 02.
#
# Tokens are **bytes**: the vocabulary is the 256 possible byte values, so there is no tokenizer to
# train, and a loss measured in **bits per byte** has a direct meaning: $8$ bits/byte is a model
# that knows nothing (uniform over 256 bytes); a good text compressor reaches about 2.

# %%
from lorakit.data import decode, encode, load_corpus, load_splits

for name in ("code", "docs", "tests"):
    print(f"corpus {name!r:8} {len(load_corpus(name)) / 1e6:6.2f} MB")

sample = "def add(a, b):  # λ"
tokens = encode(sample)
print(f"{sample!r} -> {len(tokens)} tokens (bytes): {tokens.tolist()}")
assert decode(tokens) == sample and len(tokens) == len(sample.encode("utf-8")), "one token per byte"

# %% [markdown]
# A baseline the model must beat: a model that ignores context can do no better than the
# **unigram entropy** $H = -\sum_b p(b)\log_2 p(b)$ of the byte frequencies.

# %%
from lorakit.train import base_settings

settings = base_settings()
train_data, val_data = load_splits("code", settings["max_bytes"])
counts = torch.bincount(train_data.long(), minlength=256).double()
p = counts[counts > 0] / counts.sum()
unigram_bpb = float(-(p * p.log2()).sum())
print(f"train {len(train_data) / 1e6:.2f} MB, validation {len(val_data) / 1e6:.2f} MB")
print(f"unigram entropy = {unigram_bpb:.3f} bits/byte (uniform would be 8)")

# %% [markdown]
# ## 4. The base model
#
# A small GPT (`lorakit/model.py`, about 150 readable lines) whose layers carry the names real
# LLMs use: attention `q_proj`, `k_proj`, `v_proj`, `o_proj`, and MLP `up_proj`, `down_proj`.
# So a LoRA target list written here, `["q_proj", "v_proj"]`, means the same on Llama or Qwen.
#
# `base_model()` trains it on the code corpus and caches the weights (safetensors) under
# `~/.cache/lorakit` (or `$LORAKIT_CACHE`). The cache is keyed by the config, the training
# settings and a fingerprint of the data, and a corrupted file is detected and retrained. The
# learner-size model also **ships with lorakit** (`lorakit/weights/`, 3.5 MB, with its training
# card and sha256), trained by this same code: a workshop does not wait ≈ 3 minutes for it.
# `base_model(use_shipped=False)` trains your own (test mode always trains its tiny one).
#
# **The long sweeps ship too.** Notebooks 03, 04, 05, 08, 09 and 11 each run a sweep (ranks,
# learning rates, methods) that takes minutes on an idle laptop and far longer on a busy one. Their
# learner-size results ship in `lorakit/results/` as small JSON files with a provenance card (the
# settings, versions, machine and time that made them, the sha256 of the results, and the command
# that regenerates them: `make results NB=03`). `lorakit.shipped.load` hands them out only when they
# were made with exactly the notebook's settings, so changing a setting, test mode, or
# `LORAKIT_RECOMPUTE=1` computes everything here instead. A notebook that uses them re-runs one
# point live and asserts it lands where the shipped runs did.

# %%
from lorakit.model import count_parameters
from lorakit.train import base_model

model, info = base_model(progress=not FAST)  # no progress bar in test mode
print(f"{'trained now' if info['trained'] else 'loaded (shipped with lorakit or cached)'}: {info['path']}")
print(f"config: {info['config']}")
print(f"parameters: {count_parameters(model) / 1e6:.3f} M")
print(f"validation loss = {info['val_bpb']:.3f} bits/byte  (unigram baseline {unigram_bpb:.3f})")

# %%
import matplotlib.pyplot as plt

hist = info["history"]
fig, ax = plt.subplots(figsize=(6, 4))
ax.plot(hist["steps"], hist["train_bpb"], lw=0.8, alpha=0.6, label="train (one batch)")
ax.plot(hist["eval_steps"], hist["val_bpb"], "o-", label="validation")
ax.axhline(unigram_bpb, ls="--", c="gray", label="unigram baseline")
ax.set(xlabel="step", ylabel="loss (bits/byte)", title="The base model learns far beyond byte counts")
ax.legend()
plt.show()

# %% [markdown]
# The claim, checked: the validation loss sits well below the unigram baseline (the model uses
# context), and at learner size it reaches about 2.3 bits/byte. Test mode trains for a few seconds,
# so it only has to beat the baseline clearly.

# %%
margin = 0.5 if FAST else 2.0
assert info["val_bpb"] < unigram_bpb - margin, (
    f"validation loss {info['val_bpb']:.3f} bits/byte should be at least {margin} below the "
    f"unigram baseline {unigram_bpb:.3f}"
)
if not FAST:
    assert 1.5 < info["val_bpb"] < 2.6, f"learner-size base should reach ~2.3 bits/byte, got {info['val_bpb']:.3f}"

# %% [markdown]
# ## 5. What it writes
#
# Sampling byte by byte at temperature 0.8. The small model has learned Python's surface: indents,
# `def`, `self.`, docstrings — not meaning. Later notebooks adapt it to the language reference.

# %%
from lorakit.model import generate

for prompt in ("def ", "class ", "    if "):
    print(repr(generate(model, prompt, max_new_tokens=120 if not FAST else 40, seed=0)))
    print()

# %% [markdown]
# ## 6. How sliders work in this course
#
# Interactive cells use core `ipywidgets`. Each slider is a thin shell over a plain function that
# the tests check, and a static result at a sensible value always comes first. Here the function
# is `generate`, and the slider sets its temperature: low is repetitive, high is noisy.
# (`continuous_update=False`: the text is recomputed when you let go of the slider.)

# %%
print(generate(model, "def ", max_new_tokens=60, temperature=0.8, seed=1))

# %%
# NBVAL_IGNORE_OUTPUT
import ipywidgets as widgets


def show_sample(temperature=0.8):
    print(generate(model, "def ", max_new_tokens=60, temperature=temperature, seed=1))


widgets.interact(
    show_sample,
    temperature=widgets.FloatSlider(value=0.8, min=0.1, max=2.0, step=0.1, continuous_update=False,
                                    description="temperature"),
);

# %% [markdown]
# If the slider shows as text (`interactive(children=...)`) instead of a slider, the widget
# front end is missing: run the course through `make lab`, which installs it into JupyterLab.
#
# ## Summary
# - Every required package imports (checked above), and the course runs on the device it found.
# - The data is text that ships with Python; tokens are bytes; loss is measured in bits per byte.
# - The base model beats the unigram baseline by a wide margin (asserted) and is cached for the
#   rest of the course.
#
# ## Exercises
#
# Each exercise has a checker that says whether your answer is right and, if not, what the usual
# mistake is; it states its tolerance, and numbers may be any numeric type (`2.31`, a NumPy
# float, a one-element tensor). Worked solutions, with the reasoning: `notebooks/solutions/nb00.py`
# (try first).
#
# **Exercise 0.1 — from nats to bits.** PyTorch's cross-entropy is in nats (natural log). A model
# has a loss of 1.6 nats per byte. What is that in bits per byte? Answer: a number, accepted
# within 0.5 %. *Hint: $\log_2 x = \ln x / \ln 2$; decide first whether the number should grow
# or shrink.*

# %%
from lorakit.exercises.nb00 import check_ex_0_1, check_ex_0_2, check_ex_0_3, check_ex_0_4

answer = None  # your answer here
check_ex_0_1(answer)

# %% [markdown]
# **Exercise 0.2 — count parameters.** How many parameters does one `up_proj` layer have in the
# learner-size model ($d = 128$, MLP ratio 4, no bias)? Answer: a whole number (exact).
# *Hint: an `nn.Linear(in, out, bias=False)` holds an out×in weight.*

# %%
answer = None  # your answer here
check_ex_0_2(answer)

# %% [markdown]
# **Exercise 0.3 — the uniform baseline.** A model that predicts all 256 bytes with equal
# probability: what is its loss in bits per byte? And if the text only ever used the 100
# printable ASCII characters, equally often, what would a model that knew only that reach?
# Answer: two numbers (a tuple or a list), each accepted within 0.5 %.
# *Hint: the entropy of a uniform distribution over $k$ outcomes is $\log_2 k$.*

# %%
answer = None  # your answer here
check_ex_0_3(answer)

# %% [markdown]
# **Exercise 0.4 — one byte of context (code, then an experiment).** The unigram entropy above
# ignores context. Write `bigram_entropy(data)` that returns $H(\text{next} \mid \text{previous})$,
# the entropy of a byte given the byte before it, in bits, for a `uint8` tensor:
# $H = -\sum_{a,b} p(a,b)\log_2 p(b \mid a)$, from the counts of consecutive pairs. The checker
# runs it on four probes (accepted within 0.01 bits). Then run it on `train_data` and place the
# number between the unigram entropy and the model's validation loss: what does one byte of
# context buy, and what does the model's 128 bytes of context buy on top?
# *Hint: `torch.bincount(data[:-1] * 256 + data[1:], minlength=65536)` counts the pairs, and
# $H(b \mid a) = H(a, b) - H(a)$.*

# %%
def bigram_entropy(data):
    ...  # your code here


answer = None  # set to bigram_entropy once written
check_ex_0_4(answer)
# then: print(unigram_bpb, bigram_entropy(train_data), info["val_bpb"])

# %% [markdown]
# ## References
#
# - A. Vaswani et al., *Attention Is All You Need*, 2017, arXiv:1706.03762 — the Transformer
#   block the course GPT is built from (`lorakit/model.py`).
# - A. Radford et al., *Language Models are Unsupervised Multitask Learners* (GPT-2), 2019
#   (OpenAI report, no arXiv number) — the decoder-only layout, pre-norm blocks.
# - A. Karpathy, *nanoGPT* (github.com/karpathy/nanoGPT) — the readable GPT that `lorakit/model.py`
#   follows; module names (`q_proj`, `up_proj`, …) as in Llama: H. Touvron et al., *LLaMA*, 2023,
#   arXiv:2302.13971.
# - C. E. Shannon, *A Mathematical Theory of Communication*, 1948 — entropy, and why a loss in
#   bits per byte is a compression rate.
# - Reference libraries used later: Hugging Face PEFT (`peft.LoraConfig`, `peft.get_peft_model`)
#   for LoRA, bitsandbytes (`bitsandbytes.functional.quantize_4bit`) for NF4 and double
#   quantization; `python -m lorakit.check` reports their versions.
