"""A small *pretrained* Llama that ships with lorakit: notebook 09's real-LLM section on a CPU.

Without a GPU (or offline), notebook 09 §6–7 cannot fine-tune SmolLM2-360M in reasonable time.
It runs instead on this stand-in: the same architecture flags as SmolLM2 (grouped-query
attention, a gate/up/down MLP, tied embeddings, a ChatML chat template whose EOS is
``<|im_end|>``), a byte-level BPE tokenizer trained offline on the course text, and weights
pretrained by lorakit's own training loop (``train.train_lm``) on the standard library's source and
the language reference. It is a *base* model: it has never seen a chat turn, so before
fine-tuning it answers an instruction by writing more Python and never stops — the same story
the course GPT tells in §3, now through ``from_pretrained`` like a Hub model.

The shipped folder (``lorakit/weights/standin-llama``) holds what ``save_pretrained`` writes
plus ``training_card.json``: settings, loss curve, quality, the sha256 of every file and the
versions that made it. ``standin_folder()`` hands the folder out only if every sha256 and the
settings match; ``train_standin(ship=True)`` remakes it with one call.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import __version__
from .data import _stdlib_files, load_corpus, train_val_split
from .train import _sha256, evaluate_lm, set_seed, train_lm

#: where the shipped stand-in lives (inside the package, so pip installs it)
SHIPPED = Path(__file__).resolve().parent / "weights" / "standin-llama"
CARD = "training_card.json"
#: the card of a test-size training made with the shipped one: what a retraining must reproduce
TEST_REFERENCE = SHIPPED.parent / "standin-test-card.json"
SIZES = ("learner", "test")


def standin_settings(size: str = "learner") -> dict:  # notebook 09 §6
    """Tokenizer, model and pretraining settings of the stand-in.

    ``"learner"`` is the shipped model: vocabulary 4096, hidden size 192, 4 layers, 4 query and
    2 key/value heads (SmolLM2's 3:1 grouping needs more heads than this size affords), MLP
    512 wide: 2.4 M parameters, stored in bfloat16 as SmolLM2 is (under 5 MB). It sees 350
    steps of 16 windows of 256 tokens (1.4 M tokens, about a third of the corpus): enough that
    its greedy text is recognisably Python and English, few enough to train in minutes on two
    cores; small enough to ship and to fine-tune on a CPU in seconds. ``"test"`` is the same
    recipe at a size that trains in seconds, for tests.
    Every linear layer's output size is a multiple of 32 (bitsandbytes' CPU kernel needs it).
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    if size == "test":
        return dict(
            vocab_size=512,
            hidden_size=64,
            intermediate_size=160,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            context=128,
            steps=60,
            batch_size=8,
            lr=3e-3,
            weight_decay=0.1,
            code_bytes=1_000_000,
            tokenizer_bytes=300_000,
            dtype="float32",
            seed=0,
        )
    return dict(
        vocab_size=4096,
        hidden_size=192,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        context=256,
        steps=350,
        batch_size=16,
        lr=3e-3,
        weight_decay=0.1,
        code_bytes=None,
        tokenizer_bytes=3_000_000,
        dtype="bfloat16",
        seed=0,
    )


def _documents(code_bytes: int | None) -> list[str]:
    """The pretraining text as documents: every stdlib module (up to ``code_bytes``), then every
    topic of the language reference. Sorted, so the stream is the same on every run."""
    docs, total = [], 0
    for path in _stdlib_files(want_tests=False):
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        docs.append(text)
        total += len(text)
        if code_bytes is not None and total >= code_bytes:
            break
    topics = load_corpus("docs").decode("utf-8").split("\n\n")
    return docs + ["\n\n".join(topics[i : i + 20]) for i in range(0, len(topics), 20)]


def token_stream(tokenizer, documents: list[str]) -> torch.Tensor:  # notebook 09 §6
    """Every document's tokens followed by ``<|endoftext|>`` (id 0), as one int32 tensor."""
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    ids: list[int] = []
    for encoding in tokenizer.backend_tokenizer.encode_batch(documents, add_special_tokens=False):
        ids += encoding.ids
        ids.append(eot)
    return torch.tensor(ids, dtype=torch.int32)


class NextToken(nn.Module):  # notebook 09 §6
    """A Hugging Face causal LM seen as ``model(x, y) -> (logits, loss)``: how ``train.train_lm``
    and ``train.evaluate_lm`` call the course GPT, so one training loop pretrains both."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        logits = self.lm(input_ids=x).logits
        return logits, F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())


def _versions() -> str:
    import tokenizers

    from .hf import _transformers

    return (
        f"Python {sys.version.split()[0]}, torch {torch.__version__}, transformers "
        f"{_transformers().__version__}, tokenizers {tokenizers.__version__}, lorakit {__version__}, "
        f"{platform.machine()}"
    )


@torch.no_grad()
def _sample(lm: nn.Module, tokenizer, prompt: str, new_tokens: int = 40) -> str:
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    out = lm.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return tokenizer.decode(out[0, ids.shape[1] :])


#: prompts whose greedy continuations the card records: is it recognisably Python and English?
SAMPLE_PROMPTS = (
    "def is_prime(n):\n",
    "class Stack:\n    def push(self, item):\n",
    "The for statement",
)


# notebook 09 §6
def train_standin(
    folder: str | os.PathLike | None = None,
    size: str = "learner",
    progress: bool = True,
    ship: bool = False,
) -> tuple[Path, dict]:  # notebook 09 §6
    """Train the stand-in from scratch and ``save_pretrained`` it with its training card.

    ``ship=True`` writes the learner-size model into the package (how the shipped one was made),
    then trains the test size once more and keeps its card as ``TEST_REFERENCE``, the quality a
    retraining must reproduce (tests/test_standin.py); otherwise it writes into ``folder``.
    Returns ``(folder, card)``. Deterministic for given settings on one machine and library
    versions; elsewhere the same recipe gives the same quality within a tolerance (tests check).
    """
    from .hf import _transformers, train_chat_tokenizer

    settings = standin_settings(size)
    if ship:
        if size != "learner":
            raise ValueError("only the learner size ships; train the test size into a folder")
        folder = SHIPPED
    if folder is None:
        raise ValueError("give a folder to save into, or ship=True")
    folder = Path(folder)
    start = time.perf_counter()
    documents = _documents(settings["code_bytes"])
    text = "\n".join(documents)
    head = text[: settings["tokenizer_bytes"]] + "\n" + load_corpus("docs").decode("utf-8")
    tokenizer = train_chat_tokenizer(head, settings["vocab_size"])
    train_ids, val_ids = train_val_split(token_stream(tokenizer, documents), val_fraction=0.05)

    transformers = _transformers()
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=settings["hidden_size"],
        intermediate_size=settings["intermediate_size"],
        num_hidden_layers=settings["num_hidden_layers"],
        num_attention_heads=settings["num_attention_heads"],
        num_key_value_heads=settings["num_key_value_heads"],
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    set_seed(settings["seed"])
    lm = transformers.LlamaForCausalLM(config)
    steps, context = settings["steps"], settings["context"]
    hist = train_lm(
        NextToken(lm),
        train_ids,
        val_ids,
        steps=steps,
        batch_size=settings["batch_size"],
        lr=settings["lr"],
        seed=settings["seed"],
        eval_every=max(1, steps // 10),
        weight_decay=settings["weight_decay"],
        warmup=max(1, steps // 20),
        cosine=True,
        context=context,
        desc="pretraining the stand-in",
        progress=progress,
    )
    dtype = getattr(torch, settings["dtype"])
    lm = (
        lm.to(dtype).float().eval()
    )  # the weights as shipped (rounded to dtype), computed in float32
    val_bits = evaluate_lm(
        NextToken(lm), val_ids, settings["batch_size"], n_batches=20, context=context
    )
    val_bytes = sum(
        len(tokenizer.decode(val_ids[i : i + 4096].tolist()).encode())
        for i in range(0, len(val_ids), 4096)
    )
    samples = {p: _sample(lm, tokenizer, p) for p in SAMPLE_PROMPTS}

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():  # a remade folder holds exactly what the card lists
        old.unlink()
    lm.to(dtype).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    files = {f.name: _sha256(f) for f in sorted(folder.iterdir()) if f.name != CARD}
    card = dict(
        size=size,
        settings=settings,
        parameters=sum(p.numel() for p in lm.parameters()),
        tokens=dict(
            train=len(train_ids), val=len(val_ids), seen=steps * settings["batch_size"] * context
        ),
        val_bits_per_token=val_bits,
        val_bits_per_byte=val_bits * len(val_ids) / max(1, val_bytes),
        history={k: v for k, v in hist.to_dict().items() if k != "seconds"},
        loss_unit="bits per token (train_bpb / val_bpb hold bits per *token* here)",
        seconds=round(time.perf_counter() - start, 1),
        samples=samples,
        sha256=files,
        trained_with=_versions(),
        remake="lorakit.standin.train_standin(ship=True)",
    )
    (folder / CARD).write_text(json.dumps(card, indent=1))
    if ship:
        with tempfile.TemporaryDirectory() as tmp:
            _, reference = train_standin(tmp, "test", progress=False)
        TEST_REFERENCE.write_text(json.dumps(reference, indent=1))
    return folder, card


def read_card(folder: str | os.PathLike = SHIPPED) -> dict:  # notebook 09 §6
    """The training card of a stand-in folder (settings, loss curve, sha256, versions)."""
    path = Path(folder) / CARD
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: {folder} is not a stand-in folder written by train_standin"
        )
    return json.loads(path.read_text())


def verify(folder: str | os.PathLike = SHIPPED, size: str = "learner") -> dict:  # notebook 09 §6
    """The card of ``folder`` if its settings are today's and every file's sha256 matches; else raise.

    A changed file (tampered, damaged, half-copied) or a card from other settings is refused
    with a message that names the file and the way out, before anything is loaded.
    """
    folder = Path(folder)
    card = read_card(folder)
    remake = "reinstall lorakit, or remake it with lorakit.standin.train_standin(ship=True)"
    if card.get("settings") != standin_settings(size):
        raise ValueError(
            f"the stand-in in {folder} was trained with settings {card.get('settings')}, "
            f"not today's {standin_settings(size)}: {remake}"
        )
    listed = card.get("sha256") or {}
    present = {f.name for f in folder.iterdir() if f.name != CARD}
    if set(listed) != present:
        raise ValueError(
            f"the stand-in in {folder} has files {sorted(present)} but its card lists "
            f"{sorted(listed)}: {remake}"
        )
    for name, digest in listed.items():
        seen = _sha256(folder / name)
        if seen != digest:
            raise ValueError(
                f"{folder / name}: sha256 {seen[:12]}… does not match its training card "
                f"({digest[:12]}…): the file was changed or damaged; {remake}"
            )
    return card


def standin_folder() -> Path:  # notebook 09 §6
    """The shipped stand-in's folder, checked (``verify``): pass it to ``from_pretrained``."""
    if not (SHIPPED / CARD).exists():
        raise FileNotFoundError(
            f"the pretrained stand-in is missing from {SHIPPED}: reinstall lorakit, or "
            "make it with lorakit.standin.train_standin(ship=True)"
        )
    verify(SHIPPED)
    return SHIPPED


def bits_per_token(
    folder: str | os.PathLike, size: str = "learner", n_batches: int = 20
) -> float:  # notebook 09 §6
    """Held-out loss of a saved stand-in on today's validation stream (its own tokenizer)."""
    from .hf import load_model, load_tokenizer

    settings = standin_settings(size)
    tokenizer = load_tokenizer(folder, local_only=True)
    _, val_ids = train_val_split(
        token_stream(tokenizer, _documents(settings["code_bytes"])), val_fraction=0.05
    )
    lm = load_model(folder, torch.float32, "cpu", local_only=True)
    return evaluate_lm(
        NextToken(lm),
        val_ids,
        settings["batch_size"],
        n_batches=n_batches,
        context=settings["context"],
    )
