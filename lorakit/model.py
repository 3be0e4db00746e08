"""A small, readable GPT with the module names real LLMs use (notebook 00).

The attention projections are ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj`` and the MLP is
``up_proj`` → GELU → ``down_proj``, as in Llama/Qwen/Mistral (minus the gate), so a LoRA target
list written for this model (``["q_proj", "v_proj"]``) carries over to a real one. Linear layers
have no bias, like Llama's. The output head ``lm_head`` is a separate Linear (not tied to the
embedding), so "all linear layers except the head" means the same thing here as in QLoRA.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .data import VOCAB_SIZE, decode, encode
from .validate import integer, number, positive_int


@dataclass(frozen=True)  # notebook 00 §4
class GPTConfig:
    vocab_size: int = VOCAB_SIZE
    context: int = 128
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    mlp_ratio: int = 4
    dropout: float = 0.0

    def __post_init__(self):
        for name in ("vocab_size", "context", "n_layer", "n_head", "d_model", "mlp_ratio"):
            positive_int(getattr(self, name), f"GPTConfig.{name}")
        if self.d_model % self.n_head:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})"
            )
        number(self.dropout, "GPTConfig.dropout", low=0.0, high=1.0, high_open=True)

    def to_dict(self) -> dict:
        return asdict(self)


class Attention(nn.Module):  # notebook 00 §4
    """Causal multi-head self-attention with separate q/k/v/o projections (LoRA targets)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        d = cfg.d_model
        self.n_head = cfg.n_head
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        heads = lambda t: t.view(B, T, self.n_head, d // self.n_head).transpose(1, 2)  # noqa: E731
        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, d))


class MLP(nn.Module):  # notebook 00 §4
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.up_proj = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model, bias=False)
        self.down_proj = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x)))


class Block(nn.Module):  # notebook 00 §4; checkpointing 07 §7
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)).

    ``checkpoint = True`` (gradient checkpointing, notebook 07 §7) stores only the block's input
    during training and recomputes the rest in backward: activation memory drops to one block's,
    for one extra forward. Names and weights do not change, so adapters and merges keep working.
    """

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.checkpoint = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln_1(x)))
        return x + self.drop(self.mlp(self.ln_2(x)))


class GPT(nn.Module):  # notebook 00 §4
    """Token + position embeddings, ``n_layer`` blocks, a final norm and the ``lm_head``."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.context, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init)
        # GPT-2's trick: shrink the residual-stream writers so depth does not blow up the scale.
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """Logits (B, T, vocab); with ``targets``, also the mean cross-entropy in nats."""
        T = idx.shape[1]
        if T > self.cfg.context:
            raise ValueError(f"sequence length {T} exceeds the model's context {self.cfg.context}")
        pos = torch.arange(T, device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:  # notebook 00 §4
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()  # notebook 00 §5
def generate(
    model: GPT,
    prompt: str,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 40,
    seed: int = 0,
) -> str:
    """Sample a continuation of ``prompt`` byte by byte (deterministic for a given seed)."""
    integer(max_new_tokens, "max_new_tokens", low=0)
    number(temperature, "temperature", low=0, low_open=True)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    idx = encode(prompt).long().unsqueeze(0).to(device)
    if idx.shape[1] == 0:
        idx = encode("\n").long().unsqueeze(0).to(device)
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -model.cfg.context :])
        logits = logits[0, -1].float().cpu() / temperature
        if top_k is not None:
            kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
            logits[logits < kth] = -float("inf")
        nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)
        idx = torch.cat([idx, nxt.view(1, 1).to(device)], dim=1)
    model.train(was_training)
    return decode(idx[0].cpu())
