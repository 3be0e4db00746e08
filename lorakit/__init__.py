"""lorakit: LoRA and QLoRA built from first principles.

One concept per module, each derived in a notebook:

- ``data``    byte-level tokens and offline corpora (00)
- ``model``   a small GPT with Llama-style module names (00)
- ``train``   training loop, bits-per-byte evaluation, the cached base model (00), a short LoRA run (03)
- ``lowrank`` SVD truncation, Eckart–Young, subspace similarity (01, 03)
- ``lora``    LoRAConfig, the LoRA layer, injection, merging (02)
- ``adapters`` adapter files: lorakit's safetensors file and PEFT's folder (02)
- ``targets`` target resolution and module replacement by dotted name (02, 04, 05, 08)
- ``files``   the one safe safetensors reader (00, 02, 05)
- ``siblings`` serial adapters, prompt tuning, P-tuning v1/v2, prefix tuning (05)
- ``widgets`` the rank and α sliders, shells over pure functions (03)
- ``variants`` DoRA, PiSSA's init and LoRA+, each equal to PEFT's (04)
- ``doctor``  ``diagnose(model)``: is this adapter set up, training, merged right? (04)
- ``quant``   NF4/FP4 blockwise quantization and double quantization (06, 07)
- ``fast``    the same bits as ``quant``, faster; one switch: ``fast.ENABLED`` (06)
- ``memory``  memory estimates and measured peaks (07, 08)
- ``qlora``   a 4-bit linear layer with its own backward, QLoRA (08)
- ``mxfp``    MXFP4 and NVFP4 by hand, byte-equal to torchao's prototypes (06)
- ``loftq``   LoftQ's start on lorakit's NF4, equal to PEFT's (08)
- ``qalora``  QA-LoRA: group-pooled adapters whose merge stays 4-bit (08)
- ``sft``     instruction pairs from the stdlib, template, EOS, loss mask, the SFT loop, your own
  JSONL through the model's chat template (09)
- ``data_doctor`` ``diagnose(data, tokenizer)``: the data faults that make a model never stop (09)
- ``hf``      the same on a Hugging Face model, beside bitsandbytes + PEFT (09)
- ``quantload`` a Hugging Face model quantized to NF4 shard by shard as it loads (09)
- ``recipe``  training a real model well: schedule, 8-bit optimizer, length groups, end of turn, PEFT files (09)
- ``standin`` the small pretrained Llama that ships for 09 on a CPU: train, check, find it (09)
- ``distributed`` QLoRA sharded with FSDP2 over N ranks, and its arithmetic at scale (10)

and five helpers (course plumbing, no lesson): ``validate`` (one argument-check policy, used at
the entry points), ``quiet`` (imports without start-up noise), ``versions`` (the oldest
reference-library versions the course's calls need), ``launcher`` (N local ranks started as
torchrun would, watched and stopped) and ``check`` (``python -m lorakit.check``, the environment
report of notebook 00).
"""

__version__ = "0.1.0"
