"""Reading a safetensors file safely: tensors and metadata, never code (notebooks 00, 02, 05).

Every weight file in the course (the base model, LoRA adapters, PEFT folders, sibling methods) is
read here, so a missing, truncated or pickled file gives one clear error wherever it is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open


# notebook 00 §4 (the cached base model) and 02 §5 (adapter files)
def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, metadata)`` of a safetensors file; unlike ``torch.load`` it never unpickles.

    A missing file raises ``FileNotFoundError``; anything unreadable (a pickle, a truncated
    file) raises ``ValueError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from e
