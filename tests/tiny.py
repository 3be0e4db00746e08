"""Tiny models shared by the tests: a course GPT and a Hugging Face Llama, built in milliseconds.

One home for them, so every test file builds the same models (``from tiny import tiny_gpt``,
as ``from solutions import ...``: a plain module, because tests call these with arguments).
"""

import pytest
import torch

from lorakit.model import GPT, GPTConfig
from lorakit.quiet import quiet_import

#: The Llama shape most tests use; ``tiny_llama(**changes)`` overrides any key.
LLAMA = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=64,
)


def tiny_gpt(seed: int = 0, d_model: int = 32) -> GPT:
    """A 2-layer course GPT (context 16, 2 heads) in eval mode, its weights drawn from ``seed``."""
    torch.manual_seed(seed)
    return GPT(GPTConfig(context=16, n_layer=2, n_head=2, d_model=d_model)).eval()


def tiny_llama(seed: int = 0, **changes):
    """A ``LlamaForCausalLM`` from a config (nothing downloaded), in eval mode; ``changes``
    override ``LLAMA`` (GQA, tied embeddings, ...). Skips the test without transformers."""
    pytest.importorskip("transformers", reason="transformers is not installed")
    transformers = quiet_import("transformers")
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**LLAMA, **changes})).eval()
