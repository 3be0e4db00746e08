"""Offline text, byte-level tokens, deterministic splits and batches (notebook 00).

Nothing here downloads: every corpus ships with the running Python itself, so the course
works on a laptop with no network and in CI. Tokens are raw UTF-8 bytes (vocabulary 256), so
there is no tokenizer to train or install and "bits per byte" is the natural loss unit.

Corpora:
- ``"code"``:  the standard library's own source (tests excluded), ~12 MB — the "pretraining" text.
- ``"docs"``:  ``pydoc_data.topics``, the language reference (~465 k characters) — a new domain.
- ``"tests"``: the standard library's test suite — a third domain for the several-adapters story.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig

import torch

from .validate import positive_int

VOCAB_SIZE = 256
CORPORA = ("code", "docs", "tests")
_TEST_DIRS = {"test", "tests", "idle_test"}
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}


def encode(text: str) -> torch.Tensor:  # notebook 00 §3
    """UTF-8 bytes of ``text`` as a uint8 tensor: one token per byte, vocabulary 256."""
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).clone()


def decode(tokens) -> str:  # notebook 00 §3
    """Bytes back to text; a sample cut mid-character shows a replacement mark, not an error."""
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.to(torch.uint8).tolist()
    return bytes(tokens).decode("utf-8", errors="replace")


def _stdlib_files(want_tests: bool) -> list[str]:
    """Sorted paths of the stdlib's .py files, either without or only inside test folders."""
    root = sysconfig.get_paths()["stdlib"]
    paths = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        parts = set(os.path.relpath(folder, root).split(os.sep))
        if bool(parts & _TEST_DIRS) != want_tests:
            continue
        paths += [os.path.join(folder, f) for f in sorted(files) if f.endswith(".py")]
    return paths


def _read_files(paths: list[str], max_bytes: int | None) -> bytes:
    chunks, total = [], 0
    for path in paths:
        with open(path, "rb") as f:
            chunk = f.read()
        chunks.append(chunk)
        total += len(chunk)
        if max_bytes is not None and total >= max_bytes:
            break
    return b"".join(chunks)


def _docs_text() -> bytes:
    try:
        from pydoc_data import topics
    except ImportError as e:  # some Linux distributions split pydoc_data into another package
        raise FileNotFoundError(
            "corpus 'docs' needs the module pydoc_data.topics, which this Python does not have. "
            "Debian/Ubuntu ship it in the package 'python3-doc' or the full 'python3.X' package; "
            "a python.org, pyenv, conda or Homebrew Python always has it."
        ) from e
    return "\n\n".join(topics.topics[k] for k in sorted(topics.topics)).encode("utf-8")


def load_corpus(name: str, max_bytes: int | None = None) -> bytes:  # notebook 00 §3
    """The raw bytes of one corpus, always in the same order (files sorted by path).

    ``max_bytes`` truncates, so test mode and quick experiments read less.
    """
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; choose one of {CORPORA}")
    if max_bytes is not None:
        positive_int(max_bytes, "max_bytes (or None)")
    if name == "docs":
        text = _docs_text()
    else:
        paths = _stdlib_files(want_tests=(name == "tests"))
        if not paths:
            root = sysconfig.get_paths()["stdlib"]
            raise FileNotFoundError(
                f"corpus {name!r}: found no .py files of the standard library under {root}. "
                "This Python ships without its source; install the full Python (e.g. from "
                "python.org, pyenv or conda)."
            )
        text = _read_files(paths, max_bytes)
    return text[:max_bytes] if max_bytes is not None else text


def train_val_split(
    data: torch.Tensor, val_fraction: float = 0.1, chunk: int = 4096
):  # notebook 00 §3
    """Split into (train, val) by chunks: every k-th chunk of ``chunk`` bytes goes to validation.

    Taking chunks from all over the corpus (rather than its tail) keeps validation text from the
    same mix of modules as training text, and it is deterministic: no random state involved.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    positive_int(chunk, "chunk (bytes)")
    every = max(2, round(1 / val_fraction))
    pieces = list(torch.split(data, chunk))
    val = [p for i, p in enumerate(pieces) if i % every == every - 1]
    train = [p for i, p in enumerate(pieces) if i % every != every - 1]
    if not val or not train:
        raise ValueError(
            f"corpus of {len(data)} bytes is too small to split into chunks of {chunk}"
        )
    return torch.cat(train), torch.cat(val)


def load_splits(
    name: str, max_bytes: int | None = None, val_fraction: float = 0.1
):  # notebook 00 §3
    """Tokens of a corpus as ``(train, val)`` uint8 tensors (see ``train_val_split``)."""
    data = torch.frombuffer(bytearray(load_corpus(name, max_bytes)), dtype=torch.uint8)
    return train_val_split(data, val_fraction)


def fingerprint(data: torch.Tensor) -> str:  # notebook 00 §4
    """A short sha256 of the tokens: the cache key changes when the text does."""
    return hashlib.sha256(data.contiguous().numpy().tobytes()).hexdigest()[:16]


def get_batch(
    data: torch.Tensor, batch_size: int, context: int, generator: torch.Generator
):  # notebook 00 §3
    """``batch_size`` random windows of ``context`` tokens: inputs x and next-token targets y.

    The generator makes batches reproducible: same seed, same batches, same loss.
    """
    positive_int(batch_size, "batch_size")
    positive_int(context, "context")
    if len(data) <= context + 1:
        raise ValueError(f"data has {len(data)} tokens, fewer than context + 2 = {context + 2}")
    starts = torch.randint(len(data) - context - 1, (batch_size,), generator=generator)
    window = torch.stack([data[s : s + context + 1] for s in starts.tolist()]).long()
    return window[:, :-1], window[:, 1:]
