"""Hugging Face models for the finale: load, fine-tune four ways, measure, merge, reload (notebook 09).

The same functions run a real pretrained LLM on a GPU (``MODEL_ID``, default SmolLM2-360M-Instruct),
on a CPU or offline the small pretrained Llama that ships with lorakit (``standin``), and in unit
tests a tiny random Llama built in a second from a config with a tokenizer trained on the course
text (``build_tiny_llama``): one code path, only sizes change. The four methods:

- ``"lorakit-qlora"``: lorakit's NF4 + double-quantized base and float32 LoRA (``prepare_qlora``);
- ``"bnb-peft-qlora"``: the standard stack, bitsandbytes 4-bit + ``prepare_model_for_kbit_training``
  + PEFT ``LoraConfig``;
- ``"lora"``: LoRA (lorakit) on the unquantized base in the compute dtype;
- ``"full"``: every weight trains.

Memory is the device allocator's peak with a plain (non-paged) ``torch.optim.AdamW``, so the
optimizer states are counted (bitsandbytes' paged optimizers live in unified memory, which
``torch.cuda.max_memory_allocated`` cannot see). An out-of-memory error is a result, not a crash.
"""

from __future__ import annotations

import gc
import logging
import os
import statistics
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from .data import load_corpus
from .lora import inject_lora
from .memory import track_peak
from .model import count_parameters
from .qlora import enable_gradient_checkpointing, prepare_qlora
from .quiet import quiet_import
from .sft import IGNORE, chat_example, evaluate_sft, train_sft
from .train import set_seed

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-360M-Instruct"
METHODS = ("lorakit-qlora", "bnb-peft-qlora", "lora", "full")
CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
#: SmolLM2's special tokens: padding / end of document, start of a turn, end of a turn (= EOS)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def _transformers():
    """transformers, imported quietly, with its own progress bars and info messages off."""
    quiet_import("torchao")  # transformers imports it, if installed, when it loads a model: take its noise now
    # torchao's lazily imported submodules register pytree constants, and torch logs a deprecation
    # line for each (not ours to fix, harmless): keep that one logger to errors
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    transformers = quiet_import("transformers")
    if transformers is not None:
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    return transformers


def train_chat_tokenizer(text: str, vocab_size: int):  # notebook 09 §6
    """A byte-level BPE tokenizer trained on ``text``, offline, with SmolLM2's special tokens.

    ``<|endoftext|>`` (id 0, the padding and document separator), ``<|im_start|>`` and
    ``<|im_end|>`` (the EOS token) come first, then the 256 byte symbols (so any text encodes),
    then the merges learned from ``text``. The chat template is ChatML, as SmolLM2's.
    """
    tokenizers = quiet_import("tokenizers")
    transformers = _transformers()
    if tokenizers is None or transformers is None:
        raise ImportError("a chat tokenizer needs transformers and tokenizers: pip install transformers")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                             show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text[i : i + 4096] for i in range(0, len(text), 4096)], trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                                pad_token="<|endoftext|>", chat_template=CHATML)


def build_tiny_llama(folder: str | os.PathLike, seed: int = 0, vocab_size: int = 512) -> Path:  # notebook 09 §6
    """Save a tiny ``LlamaForCausalLM`` and a tokenizer to ``folder``, offline, in about a second.

    It shares the architecture flags of SmolLM2 (grouped-query attention, gate/up/down MLP, tied
    embeddings, a ChatML chat template with an EOS token), not its sizes, so that every line of
    the real-model path runs in tests. The tokenizer is a byte-level BPE trained on the Python
    language reference (``pydoc_data.topics``). The weights are random: generations are noise.
    Every linear layer's output size is a multiple of 32, which bitsandbytes' CPU kernel needs.
    """
    folder = Path(folder)
    transformers = _transformers()
    fast = train_chat_tokenizer(load_corpus("docs").decode("utf-8"), vocab_size)
    set_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=True, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
        bos_token_id=None)
    model = transformers.LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def load_tokenizer(model_id: str | os.PathLike, local_only: bool = False):  # notebook 09 §6
    """``AutoTokenizer`` with a pad token (the EOS token when the model has none)."""
    tokenizer = _transformers().AutoTokenizer.from_pretrained(str(model_id), local_files_only=local_only)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model_id: str | os.PathLike, dtype: torch.dtype = torch.float32,  # notebook 09 §6
               device: torch.device | str = "cpu", local_only: bool = False) -> nn.Module:
    """``AutoModelForCausalLM.from_pretrained`` in ``dtype`` on ``device``, in eval mode."""
    model = _transformers().AutoModelForCausalLM.from_pretrained(str(model_id), dtype=dtype,
                                                                 local_files_only=local_only)
    return model.to(device).eval()


# notebook 09 §6
def pick_model(model_id: str, fallback: str | os.PathLike | None = None, local_only: bool = False,
               device: torch.device | str | None = None) -> tuple[str, str]:
    """``(model_id or the stand-in's folder, why)``: the Hub model if it can be had and run, else a small one.

    On a device that is not a CUDA GPU (a 360 M model would take hours there), or offline (no
    network, a typo, a gated model: the tokenizer load fails fast with a reason), the finale runs
    the same ``from_pretrained`` code on ``fallback``: by default the small *pretrained* Llama that
    ships with lorakit (``standin.standin_folder()``, refused if its sha256 does not match).
    """
    from .standin import standin_folder

    if device is not None and torch.device(device).type != "cuda":
        why = f"no CUDA GPU (device {torch.device(device).type}): a 360 M model would take hours here"
        return str(fallback or standin_folder()), why
    try:
        load_tokenizer(model_id, local_only=local_only)
        return model_id, ""
    except Exception as e:  # noqa: BLE001 - any failure to fetch means: use the local stand-in
        why = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}" if str(e) else type(e).__name__
        return str(fallback or standin_folder()), why


def _bnb_peft_model(model_id: str, compute_dtype: torch.dtype, device, r: int, alpha: float,
                    dropout: float, gradient_checkpointing: bool, local_only: bool) -> nn.Module:
    """bitsandbytes NF4 + double quantization, ``prepare_model_for_kbit_training``, PEFT LoRA."""
    transformers, peft = _transformers(), quiet_import("peft")
    if peft is None or quiet_import("bitsandbytes") is None:
        raise ImportError("the bitsandbytes + PEFT stack needs: pip install bitsandbytes peft")
    config = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                             bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute_dtype)
    device = torch.device(device)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(model_id), quantization_config=config, dtype=compute_dtype, local_files_only=local_only,
        device_map={"": device.index if device.type == "cuda" and device.index is not None else device.type})
    lora = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear",
                           task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft 0.21 asks transformers 5 a deprecated question: not ours to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
        return peft.get_peft_model(model, lora)


# notebook 09 §6
def prepare(method: str, model_id: str, compute_dtype: torch.dtype, device, r: int = 16, alpha: float = 32,
            dropout: float = 0.0, gradient_checkpointing: bool = False, local_only: bool = False) -> nn.Module:
    """A fresh model from ``model_id``, ready to fine-tune with ``method`` (one of ``METHODS``)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "bnb-peft-qlora":
        return _bnb_peft_model(model_id, compute_dtype, device, r, alpha, dropout, gradient_checkpointing, local_only)
    model = load_model(model_id, compute_dtype, device, local_only)
    if method == "lorakit-qlora":
        return prepare_qlora(model, "all-linear", r=r, alpha=alpha, compute_dtype=compute_dtype, dropout=dropout,
                             gradient_checkpointing=gradient_checkpointing)
    if method == "lora":
        inject_lora(model, "all-linear", r, alpha, dropout=dropout, dtype=torch.float32)
    else:  # full fine-tuning: every weight trains
        model.requires_grad_(True)
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model


def is_out_of_memory(error: BaseException) -> bool:  # notebook 09 §6
    """True for CUDA/MPS/CPU allocation failures, whatever class the backend raises them as."""
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(error, oom) or "out of memory" in str(error).lower()


def _free(device) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def fine_tune(method: str, model_id: str, train_examples: list, val_examples: list, *, steps: int,  # notebook 09 §6
              batch_size: int, lr: float, compute_dtype: torch.dtype, device, pad_id: int, r: int = 16,
              alpha: float = 32, warmup_steps: int = 2, seed: int = 0, gradient_checkpointing: bool = False,
              local_only: bool = False, progress: bool = True, keep_model: bool = False) -> dict:
    """Prepare ``method``, train ``steps`` steps, measure; an out-of-memory error becomes the result.

    Returns a dict: ``method``, ``status`` ("ok" or "out of memory on this device"), ``losses``,
    ``val_bits`` (response-only bits per token on held-out pairs), ``ms_per_step`` (median of the
    steps after ``warmup_steps``), ``peak_bytes`` and how it was measured, ``trainable``
    parameters, and the trained ``model`` when ``keep_model`` (else it is freed).
    """
    result = dict(method=method, status="ok")
    model = None
    try:
        set_seed(seed)
        model = prepare(method, model_id, compute_dtype, device, r, alpha, 0.0, gradient_checkpointing, local_only)
        times: list[float] = []
        with track_peak(device=device, model=model) as peak:  # the model's own bytes count too
            losses = train_sft(model, train_examples, steps, batch_size, lr, pad_id, seed=seed,
                               warmup=warmup_steps + 1, progress=progress, desc=method, step_times=times)
        result.update(losses=losses, trainable=count_parameters(model, trainable_only=True),
                      ms_per_step=1e3 * statistics.median(times[warmup_steps:] or times),
                      peak_bytes=peak["peak_bytes"], memory_method=peak["method"],
                      val_bits=evaluate_sft(model, val_examples, pad_id, batch_size))
        if keep_model:
            result["model"] = model
    except Exception as e:  # noqa: BLE001 - only out-of-memory is a result; anything else is a bug
        if not is_out_of_memory(e):
            raise
        result.update(status="out of memory on this device", error=str(e).splitlines()[0][:200])
    finally:
        if not keep_model or result["status"] != "ok":
            del model
            _free(device)
    return result


def chat_prompt_ids(tokenizer, pair, max_code_chars: int = 600) -> torch.Tensor:  # notebook 09 §7
    """The prompt part of ``chat_example`` (template, instruction, code), as a 1×T tensor."""
    ids, labels = chat_example(pair, tokenizer, max_len=10**6, max_code_chars=max_code_chars)
    return ids[labels == IGNORE].unsqueeze(0)


@torch.no_grad()  # notebook 09 §6
def generate_answers(model: nn.Module, tokenizer, pairs, max_new_tokens: int = 32,
                     stopped: list | None = None) -> list[str]:
    """Greedy answers of a chat model to each pair's prompt, up to its EOS token.

    ``stopped``, if given, gets one bool per answer appended: did the model end it with EOS
    within ``max_new_tokens`` (the stop rate of notebook 09 §6), or did the budget cut it?
    """
    device = next(model.parameters()).device
    answers = []
    for pair in pairs:
        ids = chat_prompt_ids(tokenizer, pair).to(device)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        new = out[0, ids.shape[1]:]
        if stopped is not None:
            stopped.append(bool((new == tokenizer.eos_token_id).any()))
        answers.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    return answers
