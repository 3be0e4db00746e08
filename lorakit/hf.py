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

Measuring honestly on a GPU (issue 26):

- each method's peak is measured with no other trained model on the device: ``compare_methods``
  trains the model it keeps **last** (the allocator counts every live tensor);
- like for like: both QLoRA stacks keep the non-quantized parts (embeddings, norms, head) in the
  compute dtype; PEFT's ``prepare_model_for_kbit_training`` would cast them to float32, so
  ``_bnb_peft_model`` does its other steps by hand (freeze, checkpointing) and skips that cast;
- ``full`` under a 16-bit compute dtype keeps float32 master weights and computes under
  ``torch.autocast``: an AdamW step of lr 2e-5 is below half a bfloat16 step for most weights
  (all norm weights, which sit at 1.0), so pure-bfloat16 full fine-tuning barely moves;
- the merged model is saved in one dtype, and its config says that dtype (``save_merged``);
- checks of the merge are exact in float32 and statistical under bfloat16 (``merge_agreement``).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
import os
import statistics
import sys
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from .data import load_corpus
from .lora import inject_lora
from .memory import REAL_SHAPES, track_peak  # REAL_SHAPES: re-exported, hf.REAL_SHAPES
from .model import count_parameters
from .qlora import enable_gradient_checkpointing, prepare_qlora
from .quiet import quiet_import
from .sft import IGNORE, chat_example, collate, evaluate_sft, logits_of, response_loss, train_sft
from .train import cache_dir, set_seed
from .versions import require

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-360M-Instruct"
METHODS = ("lorakit-qlora", "bnb-peft-qlora", "lora", "full")
#: the keyword options of ``sft.train_sft`` that ``fine_tune(train_options=...)`` passes on (notebook 09 §10)
TRAIN_OPTIONS = (
    "accumulation_steps",
    "max_grad_norm",
    "schedule",
    "min_lr_ratio",
    "optimizer",
    "group_by_length",
)
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: SmolLM2's special tokens: padding / end of document, start of a turn, end of a turn (= EOS)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def _transformers():
    """transformers, imported quietly, with its own progress bars and info messages off."""
    quiet_import(
        "torchao"
    )  # transformers imports it, if installed, when it loads a model: take its noise now
    # torchao's lazily imported submodules register pytree constants, and torch logs a deprecation
    # line for each (not ours to fix, harmless): keep that one logger to errors
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    transformers = quiet_import("transformers")
    if transformers is not None:
        require("transformers", transformers.__version__)  # from_pretrained(dtype=...) needs 4.56
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    return transformers


TINY_SHAPE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=512,
    max_position_embeddings=1024,
    tie_word_embeddings=True,
)


def train_chat_tokenizer(text: str, vocab_size: int):  # notebook 09 §6
    """A byte-level BPE tokenizer trained on ``text``, offline, with SmolLM2's special tokens.

    ``<|endoftext|>`` (id 0, the padding and document separator), ``<|im_start|>`` and
    ``<|im_end|>`` (the EOS token) come first, then the 256 byte symbols (so any text encodes),
    then the merges learned from ``text``. The chat template is ChatML, as SmolLM2's.
    """
    tokenizers = quiet_import("tokenizers")
    transformers = _transformers()
    if tokenizers is None or transformers is None:
        raise ImportError(
            "a chat tokenizer needs transformers and tokenizers: pip install transformers"
        )
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([text[i : i + 4096] for i in range(0, len(text), 4096)], trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML,
    )


def train_tokenizer(vocab_size: int = 512):  # notebook 09 §6
    """``train_chat_tokenizer`` on the course text: the Python language reference (``pydoc_data``)
    up to 512 tokens; a real-size vocabulary (SmolLM2's 49,152) also reads the standard library's
    source, and is cached (training it takes about a minute)."""
    cached = cache_dir() / f"bpe-{vocab_size}-py{sys.version_info[0]}.{sys.version_info[1]}"
    if vocab_size > 512 and (cached / "tokenizer.json").exists():
        return _transformers().PreTrainedTokenizerFast.from_pretrained(str(cached))
    text = load_corpus("docs").decode("utf-8")
    if vocab_size > 512:  # a big vocabulary needs more text than the language reference
        text += load_corpus("code").decode("utf-8", errors="replace")
    fast = train_chat_tokenizer(text, vocab_size)
    if vocab_size > 512:
        fast.save_pretrained(str(cached))
    return fast


def build_tiny_llama(
    folder: str | os.PathLike,
    seed: int = 0,
    vocab_size: int = 512,  # notebook 09 §6
    shape: str | None = None,
) -> Path:
    """Save a tiny ``LlamaForCausalLM`` and a tokenizer to ``folder``, offline, in about a second.

    It shares the architecture flags of SmolLM2 (grouped-query attention, gate/up/down MLP, tied
    embeddings, a ChatML chat template with an EOS token), not its sizes, so that every line of
    the real-model path runs in tests. The tokenizer is a byte-level BPE trained on the Python
    language reference (``pydoc_data.topics``). The weights are random: generations are noise.
    Every linear layer's output size is a multiple of 32, which bitsandbytes' CPU kernel needs.

    ``shape`` (a key of ``REAL_SHAPES``, e.g. ``"SmolLM2-360M"``) builds the real shapes instead,
    random weights saved in bfloat16 as the published checkpoint is, with a tokenizer of the real
    vocabulary size: the real-shape smoke test (minutes, not a second).
    """
    if shape is not None and shape not in REAL_SHAPES:
        raise ValueError(f"shape must be None or one of {sorted(REAL_SHAPES)}, got {shape!r}")
    folder = Path(folder)
    transformers = _transformers()
    sizes = dict(REAL_SHAPES[shape]) if shape else dict(TINY_SHAPE, vocab_size=vocab_size)
    fast = train_tokenizer(sizes["vocab_size"])
    set_seed(seed)
    config = transformers.LlamaConfig(
        **dict(sizes, vocab_size=len(fast)),
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=None,
    )
    model = transformers.LlamaForCausalLM(config)
    if shape:
        model = model.to(torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def load_tokenizer(model_id: str | os.PathLike, local_only: bool = False):  # notebook 09 §6
    """``AutoTokenizer`` with a pad token (the EOS token when the model has none)."""
    tokenizer = _transformers().AutoTokenizer.from_pretrained(
        str(model_id), local_files_only=local_only
    )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    model_id: str | os.PathLike,
    dtype: torch.dtype = torch.float32,  # notebook 09 §6
    device: torch.device | str = "cpu",
    local_only: bool = False,
) -> nn.Module:
    """``AutoModelForCausalLM.from_pretrained`` in ``dtype`` on ``device``, in eval mode."""
    model = _transformers().AutoModelForCausalLM.from_pretrained(
        str(model_id), dtype=dtype, local_files_only=local_only
    )
    return model.to(device).eval()


# notebook 09 §6
def pick_model(
    model_id: str,
    fallback: str | os.PathLike | None = None,
    local_only: bool = False,
    device: torch.device | str | None = None,
) -> tuple[str, str]:
    """``(model_id or the stand-in's folder, why)``: the Hub model if it can be had and run, else a small one.

    On a device that is not a CUDA GPU (a 360 M model would take hours there), or offline (no
    network, a typo, a gated model: the tokenizer load fails fast with a reason), the finale runs
    the same ``from_pretrained`` code on ``fallback``: by default the small *pretrained* Llama that
    ships with lorakit (``standin.standin_folder()``, refused if its sha256 does not match).
    """
    from .standin import standin_folder

    if device is not None and torch.device(device).type != "cuda":
        why = (
            f"no CUDA GPU (device {torch.device(device).type}): a 360 M model would take hours here"
        )
        return str(fallback or standin_folder()), why
    try:
        load_tokenizer(model_id, local_only=local_only)
        return model_id, ""
    except Exception as e:  # noqa: BLE001 - any failure to fetch means: use the local stand-in
        why = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}" if str(e) else type(e).__name__
        return str(fallback or standin_folder()), why


def load_bnb_4bit(
    model_id: str | os.PathLike,
    compute_dtype: torch.dtype,
    device,  # notebook 09 §6
    local_only: bool = False,
) -> nn.Module:
    """``model_id`` loaded by bitsandbytes in 4 bits: NF4 with double quantization, the storage
    lorakit's ``Linear4bit`` computes bit for bit; quantized as it loads (no full-size copy)."""
    transformers = _transformers()
    if quiet_import("peft") is None or quiet_import("bitsandbytes") is None:
        raise ImportError("the bitsandbytes + PEFT stack needs: pip install bitsandbytes peft")
    config = transformers.BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )
    device = torch.device(device)
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(model_id),
        quantization_config=config,
        dtype=compute_dtype,
        local_files_only=local_only,
        device_map={
            "": device.index if device.type == "cuda" and device.index is not None else device.type
        },
    )


def _bnb_peft_model(
    model_id: str,
    compute_dtype: torch.dtype,
    device,
    r: int,
    alpha: float,
    dropout: float,
    gradient_checkpointing: bool,
    local_only: bool,
) -> nn.Module:
    """bitsandbytes NF4 + double quantization, frozen, optionally checkpointed, PEFT LoRA.

    Like for like with ``prepare_qlora``: PEFT's ``prepare_model_for_kbit_training`` would also
    cast every non-4-bit parameter (embeddings, norms, head) to float32, so the whole residual
    stream and attention would run in float32 under a bfloat16 compute dtype (more saved
    activations: ``bench/results/cpu-realshape-smollm2-360m-bfloat16.txt``). Here it is done by hand without that cast: freeze the
    base, then gradient checkpointing as lorakit turns it on (non-reentrant, ``use_cache=False``:
    no deprecation or ``use_reentrant`` warning, and no input-gradient hook needed).
    """
    peft = quiet_import("peft")
    model = load_bnb_4bit(model_id, compute_dtype, device, local_only)
    model.requires_grad_(False)
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    lora = peft.LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    with (
        warnings.catch_warnings()
    ):  # peft 0.21 asks transformers 5 a deprecated question: not ours to fix
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
        )
        return peft.get_peft_model(model, lora)


def autocast_forward(model: nn.Module, dtype: torch.dtype) -> nn.Module:  # notebook 09 §6
    """Make ``model``'s forward run under ``torch.autocast(dtype)``; its weights stay as they are.

    Full fine-tuning with a 16-bit compute dtype keeps **float32 master weights**: the matrix
    products run in ``dtype``, the AdamW update lands on float32 numbers. In pure bfloat16 an
    update smaller than half a bfloat16 step (1/256 of the weight) rounds away: at lr 2e-5 that
    is most weights, and every norm weight (1.0, whose step is 2^-7).
    """
    device_type = next(model.parameters()).device.type
    plain = model.forward

    @functools.wraps(plain)
    def forward(*args, **kwargs):
        with torch.autocast(device_type, dtype=dtype):
            return plain(*args, **kwargs)

    forward.autocast_dtype = dtype  # how weight_dtypes (and a reader) can tell
    model.forward = forward
    return model


# notebook 09 §6
def prepare(
    method: str,
    model_id: str,
    compute_dtype: torch.dtype,
    device,
    r: int = 16,
    alpha: float = 32,
    dropout: float = 0.0,
    gradient_checkpointing: bool = False,
    local_only: bool = False,
) -> nn.Module:
    """A fresh model from ``model_id``, ready to fine-tune with ``method`` (one of ``METHODS``).

    Non-quantized, non-adapter weights are in ``compute_dtype`` for the three adapter methods;
    ``full`` keeps float32 weights and computes in ``compute_dtype`` under autocast when that is
    16-bit (``autocast_forward``). LoRA matrices are float32 everywhere.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "bnb-peft-qlora":
        return _bnb_peft_model(
            model_id, compute_dtype, device, r, alpha, dropout, gradient_checkpointing, local_only
        )
    master = method == "full" and compute_dtype != torch.float32
    model = load_model(model_id, torch.float32 if master else compute_dtype, device, local_only)
    if method == "lorakit-qlora":
        return prepare_qlora(
            model,
            "all-linear",
            r=r,
            alpha=alpha,
            compute_dtype=compute_dtype,
            dropout=dropout,
            gradient_checkpointing=gradient_checkpointing,
        )
    if method == "lora":
        inject_lora(model, "all-linear", r, alpha, dropout=dropout, dtype=torch.float32)
    else:  # full fine-tuning: every weight trains
        model.requires_grad_(True)
        if master:
            autocast_forward(model, compute_dtype)
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model


def weight_dtypes(model: nn.Module) -> str:  # notebook 09 §6
    """How ``model`` stores its weights, for the memory table: "4-bit + bfloat16 (LoRA float32)"."""
    four_bit, frozen, trained = False, set(), set()
    for name, p in model.named_parameters():
        if type(p).__name__ == "Params4bit":
            four_bit = True
            continue
        adapter = "lora_" in name or name.endswith((".A", ".B"))
        (trained if p.requires_grad and adapter else frozen).add(
            str(p.dtype).removeprefix("torch.")
        )
    four_bit = four_bit or any(type(m).__name__ == "Linear4bit" for m in model.modules())
    text = ("4-bit + " if four_bit else "") + "/".join(sorted(frozen))
    if trained:
        text += f" (LoRA {'/'.join(sorted(trained))})"
    autocast = getattr(model.forward, "autocast_dtype", None)
    if autocast is not None:
        text += f", autocast {str(autocast).removeprefix('torch.')}"
    return text


def is_out_of_memory(error: BaseException) -> bool:  # notebook 09 §6
    """True for CUDA/MPS/CPU allocation failures, whatever class the backend raises them as."""
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(error, oom) or "out of memory" in str(error).lower()


def _free(device) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def fine_tune(
    method: str,
    model_id: str,
    train_examples: list,
    val_examples: list,
    *,
    steps: int,  # notebook 09 §6
    batch_size: int,
    lr: float,
    compute_dtype: torch.dtype,
    device,
    pad_id: int,
    r: int = 16,
    alpha: float = 32,
    warmup_steps: int = 2,
    seed: int = 0,
    gradient_checkpointing: bool = False,
    local_only: bool = False,
    progress: bool = True,
    keep_model: bool = False,
    probe_activations: bool = False,
    train_options: dict | None = None,
) -> dict:
    """Prepare ``method``, train ``steps`` steps, measure; an out-of-memory error becomes the result.

    Returns a dict: ``method``, ``status`` ("ok" or "out of memory on this device"), ``losses``,
    ``val_bits`` (response-only bits per token on held-out pairs), ``ms_per_step`` (median of the
    steps after ``warmup_steps``), ``peak_bytes`` and how it was measured, ``trainable``
    parameters, ``weights`` (how the weights are stored: ``weight_dtypes``), and the trained
    ``model`` when ``keep_model`` (else it is freed). A kept model stays on the device: measure
    the other methods before it (``compare_methods`` does), or their peaks include it.
    ``probe_activations`` adds ``saved_bytes_per_token`` (``saved_activation_bytes`` on the
    first training batch, before training).
    ``train_options``: keyword options of ``sft.train_sft`` for a real fine-tune (notebook 09 §10:
    ``accumulation_steps``, ``max_grad_norm``, ``schedule``, ``min_lr_ratio``, ``optimizer``,
    ``group_by_length``); what they did (optimizer used, lr, grad norms, padding) is ``training``.
    """
    train_options = dict(train_options or {})
    unknown = set(train_options) - set(TRAIN_OPTIONS)
    if unknown:
        raise ValueError(
            f"train_options {sorted(unknown)} are not options of train_sft; allowed: {TRAIN_OPTIONS}"
        )
    result = dict(method=method, status="ok")
    model = None
    try:
        set_seed(seed)
        model = prepare(
            method,
            model_id,
            compute_dtype,
            device,
            r,
            alpha,
            0.0,
            gradient_checkpointing,
            local_only,
        )
        if probe_activations:
            batch = collate(train_examples[:batch_size], pad_id)
            result["saved_bytes_per_token"] = (
                saved_activation_bytes(model, batch) / batch["input_ids"].numel()
            )
        times: list[float] = []
        training: dict = {}
        with track_peak(device=device, model=model) as peak:  # the model's own bytes count too
            losses = train_sft(
                model,
                train_examples,
                steps,
                batch_size,
                lr,
                pad_id,
                seed=seed,
                warmup=warmup_steps + 1,
                progress=progress,
                desc=method,
                step_times=times,
                record=training,
                **train_options,
            )
        result.update(
            losses=losses,
            trainable=count_parameters(model, trainable_only=True),
            weights=weight_dtypes(model),
            ms_per_step=1e3 * statistics.median(times[warmup_steps:] or times),
            peak_bytes=peak["peak_bytes"],
            memory_method=peak["method"],
            val_bits=evaluate_sft(model, val_examples, pad_id, batch_size),
            training=training,
        )
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


def saved_activation_bytes(model: nn.Module, batch: dict) -> int:  # notebook 09 §6
    """Bytes autograd keeps for backward during one forward pass of ``batch``: the activations.

    Counted with ``torch.autograd.graph.saved_tensors_hooks``, each storage once; the model's own
    parameters and buffers (a weight saved for the input gradient) are not activations and are left
    out. What a layer keeps on ``ctx`` outside ``save_for_backward`` is not seen (lorakit's
    ``Linear4bit`` keeps only its 4-bit weight there). Runs on any device, the CPU included.
    """
    owned = {
        t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())
    }
    saved: dict[int, int] = {}

    def pack(t):
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            storage = t.untyped_storage()
            if storage.data_ptr() not in owned:
                saved[storage.data_ptr()] = storage.nbytes()
        return t

    was_training = model.training
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = response_loss(model, batch)
    del loss
    model.train(was_training)
    return sum(saved.values())


# notebook 09 §6
def compare_methods(
    methods,
    model_id: str,
    train_examples: list,
    val_examples: list,
    *,
    lr,
    keep: str | None = None,
    **kwargs,
) -> dict:
    """``fine_tune`` each of ``methods`` on a fresh model; ``{method: result}`` in the order given.

    Each peak is that method's alone: CUDA's allocator counts every live tensor, so a trained model
    kept on the device would be counted in every peak measured after it (≈ 0.4 GiB for
    SmolLM2-360M in 4 bits). The method to ``keep`` (its result holds the ``model``) is therefore
    trained **last**, whatever its place in ``methods``. ``lr`` is one rate or ``{method: rate}``;
    other keyword arguments go to ``fine_tune``.
    """
    methods = list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or len(set(methods)) != len(methods):
        raise ValueError(f"methods must be distinct names from {METHODS}, got {methods}")
    if keep is not None and keep not in methods:
        raise ValueError(f"keep must be None or one of the methods {methods}, got {keep!r}")
    rates = lr if isinstance(lr, dict) else {m: lr for m in methods}
    order = [m for m in methods if m != keep] + ([keep] if keep else [])
    runs = {
        m: fine_tune(
            m, model_id, train_examples, val_examples, lr=rates[m], keep_model=m == keep, **kwargs
        )
        for m in order
    }
    return {m: runs[m] for m in methods}


@torch.no_grad()  # notebook 09 §7
def save_merged(
    model: nn.Module, folder: str | os.PathLike, dtype: torch.dtype = torch.float32, tokenizer=None
) -> Path:
    """``save_pretrained`` a merged model with **every** tensor in ``dtype`` and a config that says so.

    After ``merge_into_dequantized(model, torch.float32)`` on a model loaded in bfloat16, the
    merged linear layers are float32 but the embeddings and norms are still bfloat16, and
    transformers writes the first tensor's dtype into the config: ``from_pretrained`` would then
    load everything as bfloat16, silently rounding the exact merge. Cast first, save once.
    """
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(
            f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype}"
        )
    folder = Path(folder)
    model.to(dtype)
    name = str(dtype).removeprefix("torch.")
    for key in (
        "dtype",
        "torch_dtype",
    ):  # transformers >= 4.56 writes "dtype"; older readers "torch_dtype"
        with contextlib.suppress(AttributeError, TypeError):
            setattr(model.config, key, dtype)
    model.save_pretrained(folder)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    config.update({k: name for k in ("dtype", "torch_dtype") if k in config} or {"dtype": name})
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def checkpoint_dtypes(folder: str | os.PathLike) -> set[str]:  # notebook 09 §7
    """The dtypes stored in a folder's safetensors files (``{"F32"}`` for a float32 checkpoint)."""
    dtypes = set()
    for file in sorted(Path(folder).glob("*.safetensors")):
        with open(file, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        dtypes |= {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    return dtypes


@torch.no_grad()  # notebook 09 §7
def merge_agreement(
    trained: nn.Module, reloaded: nn.Module, examples: list, pad_id: int, batch_size: int = 8
) -> dict:
    """Teacher-forced comparison of two models on the response tokens of ``examples``.

    Returns ``agreement`` (share of response positions where both models' most likely next token
    is the same), ``max_logit_gap`` (largest |Δlogit| there), and each model's held-out loss in
    bits per token (``bits_trained``, ``bits_reloaded``). In float32 the exact merge agrees
    everywhere (gap ≈ 1e-6); a model trained with bfloat16 compute and reloaded in float32
    differs by bfloat16 rounding, so only these statistics can be asked of it: near-complete
    agreement and the same loss, not equal greedy strings (one flipped token changes the rest).
    """
    agree = count = 0
    gap = 0.0
    for i in range(0, len(examples), batch_size):
        batch = collate(examples[i : i + batch_size], pad_id)
        mask = batch["labels"][:, 1:] != IGNORE
        a, b = (sft_logits(m, batch)[:, :-1].float() for m in (trained, reloaded))
        agree += int((a.argmax(-1) == b.argmax(-1))[mask].sum())
        count += int(mask.sum())
        gap = max(gap, (a - b).abs()[mask].max().item() if mask.any() else 0.0)
    return dict(
        agreement=agree / max(count, 1),
        max_logit_gap=gap,
        positions=count,
        bits_trained=evaluate_sft(trained, examples, pad_id, batch_size),
        bits_reloaded=evaluate_sft(reloaded, examples, pad_id, batch_size),
    )


#: what a bfloat16-trained model and its float32 reload must share (``merge_problems``)
BF16_MIN_AGREEMENT = 0.9  # teacher-forced argmax agreement on held-out response tokens
BF16_MAX_BITS_GAP = 0.05  # |held-out loss difference|, bits per token
FP32_MAX_LOGIT_GAP = 1e-3  # float32: the merge is the trained model up to float rounding


def merge_problems(
    stats: dict, compute_dtype: torch.dtype, same_greedy_ids: bool | None = None
) -> list[str]:  # notebook 09 §7
    """What is wrong with a merged, saved and reloaded model, given ``merge_agreement``'s ``stats``.

    Float32 compute: exact — every argmax agrees, logits within ``FP32_MAX_LOGIT_GAP``, and the
    greedy answers are the same **token ids**. Bfloat16 compute: the trained model rounded its
    activations to bfloat16 and the float32 reload does not, so only statistics can agree: argmax
    agreement ≥ ``BF16_MIN_AGREEMENT`` and held-out loss within ``BF16_MAX_BITS_GAP`` bits/token.
    An empty list means the merge is the trained model.
    """
    problems = []
    bits_gap = abs(stats["bits_trained"] - stats["bits_reloaded"])
    if compute_dtype == torch.float32:
        if stats["agreement"] < 1.0:
            problems.append(f"argmax agreement {stats['agreement']:.4f} < 1 in float32")
        if stats["max_logit_gap"] > FP32_MAX_LOGIT_GAP:
            problems.append(
                f"max |Δlogit| {stats['max_logit_gap']:.2e} > {FP32_MAX_LOGIT_GAP:g} in float32"
            )
        if same_greedy_ids is False:
            problems.append("the greedy answers differ in their token ids")
    else:
        if stats["agreement"] < BF16_MIN_AGREEMENT:
            problems.append(
                f"argmax agreement {stats['agreement']:.4f} < {BF16_MIN_AGREEMENT} under {compute_dtype}"
            )
        if bits_gap > BF16_MAX_BITS_GAP:
            problems.append(
                f"held-out loss differs by {bits_gap:.4f} > {BF16_MAX_BITS_GAP} bits/token"
            )
    return problems


def sft_logits(model: nn.Module, batch: dict) -> torch.Tensor:  # notebook 09 §6
    """Next-token logits of ``model`` on a collated batch, on the model's device, moved to the CPU."""
    device = next(model.parameters()).device
    return logits_of(model, batch["input_ids"].to(device), batch["attention_mask"].to(device)).cpu()


def chat_prompt_ids(tokenizer, pair, max_code_chars: int = 600) -> torch.Tensor:  # notebook 09 §7
    """The prompt part of ``chat_example`` (template, instruction, code), as a 1×T tensor."""
    ids, labels = chat_example(pair, tokenizer, max_len=10**6, max_code_chars=max_code_chars)
    return ids[labels == IGNORE].unsqueeze(0)


@torch.no_grad()  # notebook 09 §7
def generate_ids(model: nn.Module, tokenizer, pairs, max_new_tokens: int = 32) -> list[list[int]]:
    """Greedy answer token ids of a chat model to each pair's prompt, up to and including EOS.

    Compare these, not decoded text: ``skip_special_tokens`` and ``strip`` make different token
    sequences (and empty answers) look equal.
    """
    device = next(model.parameters()).device
    answers = []
    for pair in pairs:
        ids = chat_prompt_ids(tokenizer, pair).to(device)
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        answers.append(out[0, ids.shape[1] :].tolist())
    return answers


@torch.no_grad()  # notebook 09 §6
def generate_answers(
    model: nn.Module, tokenizer, pairs, max_new_tokens: int = 32, stopped: list | None = None
) -> list[str]:
    """Greedy answers of a chat model to each pair's prompt, up to its EOS token.

    ``stopped``, if given, gets one bool per answer appended: did the model end it with EOS
    within ``max_new_tokens`` (the stop rate of notebook 09 §6), or did the budget cut it?
    """
    answers = []
    for ids in generate_ids(model, tokenizer, pairs, max_new_tokens):
        if stopped is not None:
            stopped.append(tokenizer.eos_token_id in ids)
        answers.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
    return answers
