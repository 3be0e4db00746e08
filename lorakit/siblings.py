"""LoRA's siblings: serial adapters, prompt tuning, P-tuning v1, prefix tuning and P-tuning v2
(notebook 05).

Every parameter-efficient method freezes the base and adds a few trainable parameters; they
differ in *where* those parameters act:

- **serial adapters** (Houlsby et al. 2019): a bottleneck MLP after a sublayer,
  ``h + up(gelu(down(h)))``, with ``up`` zero at init so the model starts equal to the base;
- **prompt tuning** (Lester et al. 2021): ``P`` trainable embeddings in front of the input;
- **P-tuning v1** (Liu et al. 2021): the same, but a small network (MLP or LSTM, the
  *prompt encoder*) produces those ``P`` embeddings;
- **(IA)³** (Liu et al. 2022, the bonus): learned vectors that rescale the keys, the values and
  the MLP's hidden units — a sibling that, like LoRA, merges into the weights;
- **prefix tuning** (Li & Liang 2021): ``P`` trainable keys and values in *every* layer's
  attention, produced by an MLP (the reparameterisation) or stored directly; stored directly it
  is **P-tuning v2** (Liu et al. 2022, "deep prompts").

The parameter side of each method (``SoftPrompt``, ``PromptEncoder``, ``PrefixEncoder``) does not
depend on the model; the consuming side has two homes: the course GPT (``PromptTuned``,
``PrefixTuned``, which replace attention modules, leaving ``lorakit.model`` untouched) and a
Hugging Face decoder such as ``LlamaForCausalLM`` (soft prompts through ``inputs_embeds``,
prefixes through a ``DynamicCache``). The parameter modules use PEFT's attribute names
(``embedding``, ``transform``, ``mlp_head``, ``lstm_head``) so a state dict copies across.

The byte-level GPT has no special tokens: virtual tokens are extra *positions*. A prompt of ``P``
leaves ``context - P`` positions for text; so does a prefix, which stands for ``P`` earlier
positions (real tokens start at position ``P``, as in PEFT) and lengthens every attention row.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from .adapters import check_state
from .files import read_safetensors
from .model import GPT, Attention
from .targets import matches, replace_module, resolve_targets
from .validate import integer, positive_int

SIBLING_FORMAT = "lorakit-sibling"
METHODS = ("adapter", "prompt_tuning", "p_tuning", "prefix_tuning", "p_tuning_v2", "ia3")


def _is_hf_decoder(model) -> bool:
    cfg = getattr(model, "config", None)
    return (
        isinstance(model, nn.Module)
        and hasattr(model, "get_input_embeddings")
        and all(
            isinstance(getattr(cfg, k, None), int)
            for k in ("num_hidden_layers", "num_attention_heads", "hidden_size")
        )
    )


def model_shape(model) -> dict:  # notebook 05 §5 (the GPT and a Hugging Face decoder)
    """``n_layer``, ``n_head``, ``d_model`` and ``context`` of the course GPT or a Hugging Face
    decoder (Llama-like); a clear TypeError for anything else."""
    if isinstance(model, GPT):
        c = model.cfg
        return dict(n_layer=c.n_layer, n_head=c.n_head, d_model=c.d_model, context=c.context)
    if _is_hf_decoder(model):
        c = model.config
        return dict(
            n_layer=c.num_hidden_layers,
            n_head=c.num_attention_heads,
            d_model=c.hidden_size,
            context=getattr(c, "max_position_embeddings", 2**31 - 1),
        )
    raise TypeError(
        "model must be the course GPT (lorakit.model.GPT) or a Hugging Face causal LM such as "
        f"LlamaForCausalLM, got {type(model).__name__}"
    )


def _check_fresh(model) -> None:
    """One method per base: a model already carrying a sibling method is refused."""
    if isinstance(model, (PromptTuned, PrefixTuned)) or any(
        isinstance(m, (SerialAdapter, PrefixAttention, IA3Linear)) for m in model.modules()
    ):
        raise ValueError(
            "the model already carries a parameter-efficient method; start from a fresh base "
            "(copy.deepcopy(base)) for each method"
        )


def _check_virtual(model, n_virtual) -> dict:
    """Virtual tokens (prompt or prefix) occupy positions: at least one must be left for text."""
    shape = model_shape(model)
    integer(
        n_virtual,
        f"n_virtual (virtual tokens in a context of {shape['context']} positions)",
        low=1,
        high=shape["context"] - 1,
    )
    return shape


# ---------------------------------------------------------------- the parameter side (model-agnostic)


class SoftPrompt(nn.Module):  # notebook 05 §3
    """Prompt tuning: a ``P × d`` table of trainable input embeddings (PEFT's ``PromptEmbedding``).

    Lester et al. initialise it from real vocabulary embeddings; pass them as ``init``.
    """

    def __init__(self, n_virtual: int, d_model: int, init: torch.Tensor | None = None):
        super().__init__()
        self.embedding = nn.Embedding(n_virtual, d_model)
        if init is not None:
            with torch.no_grad():
                self.embedding.weight.copy_(init)

    def forward(self) -> torch.Tensor:
        # a lookup, not the weight itself: a module output that is a leaf confuses autograd hooks
        return self.embedding(
            torch.arange(self.embedding.num_embeddings, device=self.embedding.weight.device)
        )


class PromptEncoder(nn.Module):  # notebook 05 §3
    """P-tuning v1: a prompt encoder turns ``P`` trainable embeddings into the virtual tokens.

    ``encoder="mlp"``: Linear → ReLU → Linear → ReLU → Linear (d → h → h → d).
    ``encoder="lstm"``: a 2-layer bidirectional LSTM (d → 2h), then Linear → ReLU → Linear (2h → d).
    Same layers and names as PEFT's ``PromptEncoder``. The encoder couples the virtual tokens
    (Liu et al.: they should depend on each other); after training only its output is needed.
    """

    def __init__(self, n_virtual: int, d_model: int, hidden: int, encoder: str = "mlp"):
        super().__init__()
        self.encoder = encoder
        self.embedding = nn.Embedding(n_virtual, d_model)
        if encoder == "lstm":
            self.lstm_head = nn.LSTM(
                d_model, hidden, num_layers=2, bidirectional=True, batch_first=True
            )
            self.mlp_head = nn.Sequential(
                nn.Linear(2 * hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, d_model)
            )
        else:
            self.mlp_head = nn.Sequential(
                nn.Linear(d_model, hidden),
                nn.ReLU(),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Linear(hidden, d_model),
            )

    def forward(self) -> torch.Tensor:
        e = self.embedding(
            torch.arange(self.embedding.num_embeddings, device=self.embedding.weight.device)
        )
        if self.encoder == "lstm":
            return self.mlp_head(self.lstm_head(e.unsqueeze(0))[0])[0]
        return self.mlp_head(e)  # (P, d)


class PrefixEncoder(nn.Module):  # notebook 05 §4
    """Prefix tuning: keys and values for ``P`` virtual positions in every layer.

    A layer's keys and values are ``n_kv_head × head_dim`` wide: ``d`` when every query head has
    its own key/value head, less under grouped-query attention (Llama 3, Mistral, Qwen, SmolLM2),
    where ``n_head / n_kv_head`` query heads share one. Call that width ``d_kv``. Without
    reparameterisation (``hidden=None``, = P-tuning v2) the table ``P × (L·2·d_kv)`` *is* the
    prefix. With it (Li & Liang §4.3), a smaller table ``P × d_kv`` goes through
    Linear(d_kv, hidden) → tanh → Linear(hidden, L·2·d_kv); after training the MLP can be thrown
    away and its output kept. Same names, sizes and layout as PEFT's ``PrefixEncoder`` (whose
    ``token_dim`` PEFT sets to ``d_kv`` on a GQA model): the last axis is ordered (layer,
    key/value, key/value head, head_dim).
    """

    def __init__(
        self,
        n_virtual: int,
        n_layer: int,
        n_head: int,
        d_model: int,
        hidden: int | None = None,
        init_std: float | None = None,
        n_kv_head: int | None = None,
        head_dim: int | None = None,
    ):
        super().__init__()
        self.n_virtual, self.n_layer, self.n_head, self.d_model = (
            n_virtual,
            n_layer,
            n_head,
            d_model,
        )
        self.n_kv_head = n_head if n_kv_head is None else n_kv_head
        self.head_dim = d_model // n_head if head_dim is None else head_dim
        self.d_kv = self.n_kv_head * self.head_dim
        self.hidden = hidden
        if hidden is None:
            self.embedding = nn.Embedding(n_virtual, n_layer * 2 * self.d_kv)
        else:
            self.embedding = nn.Embedding(n_virtual, self.d_kv)
            self.transform = nn.Sequential(
                nn.Linear(self.d_kv, hidden), nn.Tanh(), nn.Linear(hidden, n_layer * 2 * self.d_kv)
            )
        if init_std is not None:
            nn.init.normal_(self.embedding.weight, std=init_std)

    def forward(self) -> torch.Tensor:
        """The prefix as ``(L, 2, H_kv, P, head_dim)``: layer, key/value, key/value head, position, head dim."""
        e = self.embedding(torch.arange(self.n_virtual, device=self.embedding.weight.device))
        flat = e if self.hidden is None else self.transform(e)
        P, L, H = self.n_virtual, self.n_layer, self.n_kv_head
        return flat.view(P, L, 2, H, self.head_dim).permute(1, 2, 3, 0, 4)


# ---------------------------------------------------------------- serial adapters (GPT)


class SerialAdapter(nn.Module):  # notebook 05 §2
    """A sublayer followed by a bottleneck: ``y = base(x)``, then ``y + up(gelu(down(y)))``.

    ``down`` (d → b) starts small and random, ``up`` (b → d) starts at **zero**, so at init the
    adapter is the identity and the model equals the base exactly. The exact zero is lorakit's
    choice (as LoRA's B = 0); Houlsby et al. §2.1 initialise near the identity, with small random
    weights in both projections.
    It adds two small matmuls *in series* with the base: a cost at inference that cannot be
    merged away, because the GELU sits between ``down`` and ``up``.
    """

    def __init__(self, base: nn.Module, d_model: int, bottleneck: int):
        super().__init__()
        self.base = base
        self.down = nn.Linear(d_model, bottleneck)
        self.up = nn.Linear(bottleneck, d_model)
        nn.init.normal_(self.down.weight, std=1e-2)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        return y + self.up(F.gelu(self.down(y)))


def add_adapters(
    model: GPT, bottleneck: int, where: tuple[str, ...] = ("attn", "mlp")
) -> GPT:  # notebook 05 §2
    """Houlsby adapters after the attention and the MLP of every block (in place); only the
    adapters train. ``where=("mlp",)`` gives one adapter per block (Pfeiffer et al.'s placement)."""
    if not isinstance(model, GPT):
        raise TypeError(
            f"add_adapters works on the course GPT (lorakit.model.GPT), got {type(model).__name__}"
        )
    positive_int(bottleneck, "bottleneck")
    if isinstance(where, str) or not where or not set(where) <= {"attn", "mlp"}:
        raise ValueError(
            f"where must be a non-empty tuple drawn from ('attn', 'mlp'), got {where!r}"
        )
    _check_fresh(model)
    model.requires_grad_(False)
    dtype = model.lm_head.weight.dtype
    device = model.lm_head.weight.device
    for block in model.blocks:
        for name in where:
            wrapped = SerialAdapter(getattr(block, name), model.cfg.d_model, bottleneck).to(
                device, dtype
            )
            setattr(block, name, wrapped)
    model.sibling_config = dict(method="adapter", bottleneck=bottleneck, where=list(where))
    return model


# ---------------------------------------------------------------- (IA)³: rescaling, mergeable


class IA3Linear(nn.Module):  # notebook 05 §2 (the bonus sibling)
    """(IA)³ on one frozen linear layer: ``base(x) * l`` (keys, values) or, for a feed-forward
    layer, ``base(x * l)`` (the MLP's hidden units, before ``down_proj``). ``l`` starts at ones, so
    the model starts equal to the base; being a diagonal scale, it merges into the weight.
    PEFT's ``ia3_l`` is the same vector shaped (out, 1) or (1, in)."""

    def __init__(self, base: nn.Linear, feedforward: bool):
        super().__init__()
        self.base, self.feedforward = base, feedforward
        n = base.in_features if feedforward else base.out_features
        self.l = nn.Parameter(torch.ones(n, dtype=base.weight.dtype, device=base.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x * self.l) if self.feedforward else self.base(x) * self.l


# notebook 05 §2 (the bonus sibling)
def add_ia3(
    model: nn.Module,
    targets: tuple[str, ...] = ("k_proj", "v_proj", "down_proj"),
    feedforward: tuple[str, ...] = ("down_proj",),
) -> nn.Module:
    """(IA)³ in place on the GPT or a Hugging Face decoder: a learned scale on each target layer
    (PEFT's defaults for Llama: keys, values, and the input of ``down_proj``). Only the scales train."""
    model_shape(model)  # the type check
    if isinstance(targets, str) or isinstance(feedforward, str):
        raise TypeError(
            f"targets and feedforward must be tuples of module names, got {targets!r}, {feedforward!r}"
        )
    if not set(feedforward) <= set(targets):
        raise ValueError(f"feedforward {feedforward!r} must be a subset of targets {targets!r}")
    _check_fresh(model)
    names = resolve_targets(model, list(targets))
    model.requires_grad_(False)
    for name in names:
        feeds = any(matches(name, t) for t in feedforward)
        replace_module(model, name, IA3Linear(model.get_submodule(name), feedforward=feeds))
    model.sibling_config = dict(method="ia3", targets=list(targets), feedforward=list(feedforward))
    return model


@torch.no_grad()  # notebook 05 §7
def merge_ia3(model: nn.Module) -> list[str]:
    """Fold every scale into its weight (``nn.Linear`` stores out×in: rows for an output scale,
    columns for an input scale) and put the plain layers back: zero cost at inference."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, IA3Linear)}
    if not layers:
        raise ValueError("the model has no (IA)³ layers to merge")
    for name, layer in layers.items():
        W = layer.base.weight
        W.mul_(layer.l.view(1, -1) if layer.feedforward else layer.l.view(-1, 1))
        if layer.base.bias is not None and not layer.feedforward:
            layer.base.bias.mul_(layer.l)
        replace_module(model, name, layer.base)
    model.__dict__.pop("sibling_config", None)
    return list(layers)


# ---------------------------------------------------------------- virtual tokens at the input


def gpt_logits_from_embeddings(
    gpt: GPT, x: torch.Tensor, start: int = 0
) -> torch.Tensor:  # notebook 05 §3
    """The GPT's forward pass from token embeddings ``x`` (B, T, d) instead of token ids:
    position embeddings (positions ``start .. start+T-1``), blocks, final norm, head.
    ``GPT.forward(idx)`` equals this applied to ``gpt.tok_emb(idx)`` (tested bit for bit), so
    soft prompts and prefixes need no change to ``lorakit.model``."""
    T = x.shape[1]
    if start + T > gpt.cfg.context:
        raise ValueError(
            f"sequence length {T} after {start} virtual positions exceeds the model's context "
            f"{gpt.cfg.context}"
        )
    x = x + gpt.pos_emb(torch.arange(start, start + T, device=x.device))
    for block in gpt.blocks:
        x = block(x)
    return gpt.lm_head(gpt.ln_f(x))


def _loss(logits: torch.Tensor, targets: torch.Tensor | None):
    if targets is None:
        return None
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))


class PromptTuned(nn.Module):  # notebook 05 §3
    """A frozen base plus virtual tokens in front of every input (prompt tuning, P-tuning v1).

    ``forward(idx, targets=None, prompts=None)`` returns ``(logits, loss)`` for the *real*
    positions only. ``prompts`` (B, P, d) overrides the learned prompt row by row: each example of
    one batch can carry a different task.
    """

    def __init__(
        self, base: nn.Module, prompt: nn.Module, n_virtual: int, method: str, settings: dict
    ):
        super().__init__()
        self.base, self.prompt, self.n_virtual = base, prompt, n_virtual
        self.sibling_config = dict(method=method, n_virtual=n_virtual, **settings)
        if isinstance(
            base, GPT
        ):  # what train()/evaluate() read: the text gets context - P positions
            self.cfg = dataclasses.replace(base.cfg, context=base.cfg.context - n_virtual)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        prompts: torch.Tensor | None = None,
    ):
        B, P = idx.shape[0], self.n_virtual
        if prompts is None:
            prompts = self.prompt().unsqueeze(0).expand(B, -1, -1)
        if isinstance(self.base, GPT):
            x = torch.cat(
                [prompts.to(self.base.tok_emb.weight.dtype), self.base.tok_emb(idx)], dim=1
            )
            logits = gpt_logits_from_embeddings(self.base, x)[:, P:]
        else:  # Hugging Face: exactly what PEFT does, inputs_embeds = [prompt; tokens]
            emb = self.base.get_input_embeddings()(idx)
            x = torch.cat([prompts.to(emb.dtype), emb], dim=1)
            mask = torch.ones(x.shape[:2], dtype=torch.long, device=x.device)
            logits = self.base(inputs_embeds=x, attention_mask=mask).logits[:, P:]
        return logits, _loss(logits, targets)


def add_prompt_tuning(
    model: nn.Module,
    n_virtual: int,
    init: torch.Tensor | None = None,  # notebook 05 §3
    seed: int = 0,
) -> PromptTuned:
    """Lester et al.: ``n_virtual`` trainable embeddings at the input, nothing else.

    Initialised, as the paper recommends, from embeddings of random vocabulary entries (``seed``),
    unless ``init`` (P × d) is given.
    """
    shape = _check_virtual(model, n_virtual)
    _check_fresh(model)
    table = model.tok_emb.weight if isinstance(model, GPT) else model.get_input_embeddings().weight
    if init is None:
        rows = torch.randint(
            table.shape[0], (n_virtual,), generator=torch.Generator().manual_seed(seed)
        )
        init = table.detach()[rows.to(table.device)]
    elif tuple(init.shape) != (n_virtual, shape["d_model"]):
        raise ValueError(
            f"init must have shape (n_virtual, d_model) = {(n_virtual, shape['d_model'])}, "
            f"got {tuple(init.shape)}"
        )
    model.requires_grad_(False)
    prompt = SoftPrompt(n_virtual, shape["d_model"], init).to(table.device, table.dtype)
    return PromptTuned(model, prompt, n_virtual, "prompt_tuning", {})


# notebook 05 §3
def add_p_tuning(
    model: nn.Module, n_virtual: int, hidden: int, encoder: str = "mlp", seed: int = 0
) -> PromptTuned:
    """Liu et al. (P-tuning v1): virtual tokens at the input, produced by an MLP or LSTM prompt
    encoder of width ``hidden``. Trainable: the encoder and its input table."""
    shape = _check_virtual(model, n_virtual)
    positive_int(hidden, "hidden (the prompt encoder's width)")
    if encoder not in ("mlp", "lstm"):
        raise ValueError(f"encoder must be 'mlp' or 'lstm', got {encoder!r}")
    _check_fresh(model)
    model.requires_grad_(False)
    ref = next(model.parameters())
    torch.manual_seed(seed)
    prompt = PromptEncoder(n_virtual, shape["d_model"], hidden, encoder).to(ref.device, ref.dtype)
    return PromptTuned(model, prompt, n_virtual, "p_tuning", dict(hidden=hidden, encoder=encoder))


# ---------------------------------------------------------------- prefixes in every layer


def prefix_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,  # notebook 05 §4
    pk: torch.Tensor,
    pv: torch.Tensor,
) -> torch.Tensor:
    """Causal attention in which every query also sees ``P`` prefix keys/values.

    ``q, k, v``: (B, H, T, d/H); ``pk, pv``: (B, H, P, d/H). Row ``t`` attends to all ``P``
    prefix positions and to real positions ``0..t``: a (T, P + T) mask, prefix columns all True.
    """
    T, P = q.shape[-2], pk.shape[-2]
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    mask = torch.cat([torch.ones(T, P, dtype=torch.bool, device=q.device), causal], dim=1)
    return F.scaled_dot_product_attention(
        q, torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2), attn_mask=mask
    )


class PrefixAttention(nn.Module):  # notebook 05 §4
    """The GPT's attention with a prefix: same projections (frozen), keys and values extended.

    ``PrefixTuned`` sets ``self.prefix = (pk, pv)`` before each forward pass and clears it after.
    """

    def __init__(self, base: Attention):
        super().__init__()
        self.base = base
        self.prefix: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.prefix is None:
            raise RuntimeError(
                "PrefixAttention called without a prefix: call the PrefixTuned wrapper, not its base"
            )
        a, (B, T, d) = self.base, x.shape
        heads = lambda t: t.view(B, T, a.n_head, d // a.n_head).transpose(1, 2)  # noqa: E731
        q, k, v = heads(a.q_proj(x)), heads(a.k_proj(x)), heads(a.v_proj(x))
        pk, pv = (p.expand(B, -1, -1, -1) if p.dim() == 3 else p for p in self.prefix)
        y = prefix_attention(q, k, v, pk.to(q.dtype), pv.to(q.dtype))
        return a.o_proj(y.transpose(1, 2).reshape(B, T, d))


class PrefixTuned(nn.Module):  # notebook 05 §4
    """A frozen base whose every attention layer sees ``P`` trainable keys and values first.

    The prefix stands for ``P`` earlier positions, so real tokens sit at positions ``P..P+T-1``
    and the text gets ``context - P`` of them, as in Li & Liang's GPT-2 and in PEFT. GPT: the
    attention modules are replaced by ``PrefixAttention``. Hugging Face: the prefix goes in as a
    ``DynamicCache`` (what PEFT does). ``forward(idx, targets=None, prefix=None)``;
    ``prefix`` (B, L, 2, H, P, d/H) overrides the learned one row by row.
    """

    def __init__(self, base: nn.Module, encoder: PrefixEncoder, method: str, settings: dict):
        super().__init__()
        self.base, self.prefix_encoder = base, encoder
        self.sibling_config = dict(method=method, n_virtual=encoder.n_virtual, **settings)
        if isinstance(base, GPT):
            self.cfg = dataclasses.replace(base.cfg, context=base.cfg.context - encoder.n_virtual)
            for block in base.blocks:
                block.attn = PrefixAttention(block.attn)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        prefix: torch.Tensor | None = None,
    ):
        kv = (
            self.prefix_encoder() if prefix is None else prefix.transpose(0, 1)
        )  # (L, [B], 2, H, P, hd)
        if isinstance(self.base, GPT):
            attns = [block.attn for block in self.base.blocks]
            try:
                for attn, layer in zip(attns, kv):
                    attn.prefix = (
                        (layer[0], layer[1]) if prefix is None else (layer[:, 0], layer[:, 1])
                    )
                x = self.base.tok_emb(idx)
                logits = gpt_logits_from_embeddings(
                    self.base, x, start=self.prefix_encoder.n_virtual
                )
            finally:
                for attn in attns:
                    attn.prefix = None
        else:
            logits = self._hf_forward(idx, kv, per_row=prefix is not None)
        return logits, _loss(logits, targets)

    def _hf_forward(self, idx, kv, per_row: bool):
        from transformers import DynamicCache

        B, P = idx.shape[0], self.prefix_encoder.n_virtual
        cache = DynamicCache(config=self.base.config)
        for i, layer in enumerate(kv):
            pk, pv = (
                (layer[:, 0], layer[:, 1])
                if per_row
                else (layer[0].expand(B, -1, -1, -1), layer[1].expand(B, -1, -1, -1))
            )
            cache.update(pk, pv, i)
        mask = torch.ones(B, P + idx.shape[1], dtype=torch.long, device=idx.device)
        # transformers 5.x renamed past_key_values to cache; pass whichever this version takes
        name = (
            "cache"
            if "cache" in inspect.signature(self.base.forward).parameters
            else "past_key_values"
        )
        return self.base(input_ids=idx, attention_mask=mask, use_cache=True, **{name: cache}).logits


@torch.no_grad()  # notebook 05 §4
def prefix_from_tokens(gpt: GPT, tokens: torch.Tensor) -> torch.Tensor:
    """The keys and values the GPT itself computes for ``P`` real tokens, flattened as a prefix
    table ``P × (L·2·d)`` (layer, key/value, head, head dim): Li & Liang's initialisation "with
    the activations of real words", which starts the prefix as a plausible context."""
    P = tokens.shape[0]
    x = gpt.tok_emb(tokens[None].long()) + gpt.pos_emb(torch.arange(P, device=tokens.device))
    layers = []
    for block in gpt.blocks:
        h = block.ln_1(x)
        layers.append(
            torch.stack([block.attn.k_proj(h)[0], block.attn.v_proj(h)[0]], dim=1)
        )  # (P, 2, d)
        x = block(x)
    return torch.stack(layers, dim=1).reshape(P, -1)


@torch.no_grad()
def _init_prefix(encoder: PrefixEncoder, flat: torch.Tensor) -> None:
    """Make the encoder output ``flat`` (P × L·2d): copied in directly, or, through the MLP, by a
    least-squares fit of its last layer (exact when the MLP is at least P wide)."""
    if encoder.hidden is None:
        encoder.embedding.weight.copy_(flat)
        return
    last = encoder.transform[-1]
    last.bias.zero_()
    Z = encoder.transform[:-1](encoder.embedding.weight)  # P × hidden
    last.weight.copy_(torch.linalg.lstsq(Z, flat).solution.T)


def add_prefix_tuning(
    model: nn.Module,
    n_virtual: int,
    hidden: int | None = None,  # notebook 05 §4
    init_std: float | None = None,
    seed: int = 0,
    init_tokens: torch.Tensor | None = None,
) -> PrefixTuned:
    """Li & Liang: trainable keys/values for ``n_virtual`` positions in every layer.

    ``hidden`` = width of the reparameterisation MLP (their §4.3); ``hidden=None`` stores the
    prefix directly (= P-tuning v2, ``add_p_tuning_v2``). ``init_tokens`` (P token ids, GPT only)
    starts the prefix at the base's own keys/values for that text (``prefix_from_tokens``); without
    it the table is random, ``init_std`` rescaling it (default ``0.02·√d`` without the MLP).
    """
    shape = _check_virtual(model, n_virtual)
    if init_tokens is not None:
        if not isinstance(model, GPT):
            raise TypeError(
                "init_tokens works on the course GPT; for a Hugging Face model leave it None"
            )
        if not isinstance(init_tokens, torch.Tensor) or tuple(init_tokens.shape) != (n_virtual,):
            got = (
                tuple(init_tokens.shape)
                if isinstance(init_tokens, torch.Tensor)
                else type(init_tokens).__name__
            )
            raise ValueError(
                f"init_tokens must be a tensor of n_virtual = {n_virtual} token ids, got {got}"
            )
    if hidden is not None:
        positive_int(hidden, "hidden (the reparameterisation MLP's width)")
    kv_heads, head_dim = shape["n_head"], None
    if not isinstance(
        model, GPT
    ):  # grouped-query attention: fewer key/value heads than query heads
        kv_heads = getattr(model.config, "num_key_value_heads", None) or shape["n_head"]
        head_dim = getattr(model.config, "head_dim", None) or shape["d_model"] // shape["n_head"]
        if shape["n_head"] % kv_heads:
            raise ValueError(
                f"the query heads ({shape['n_head']}) must be a multiple of the key/value heads "
                f"({kv_heads}): each key/value head serves a group of query heads"
            )
    elif shape["d_model"] % shape["n_head"]:
        raise ValueError(
            f"d_model {shape['d_model']} must be divisible by n_head {shape['n_head']}"
        )
    _check_fresh(model)
    model.requires_grad_(False)
    ref = next(model.parameters())
    if init_std is None and hidden is None and isinstance(model, GPT):
        init_std = 0.02 * shape["d_model"] ** 0.5
    torch.manual_seed(seed)
    encoder = PrefixEncoder(
        n_virtual,
        shape["n_layer"],
        shape["n_head"],
        shape["d_model"],
        hidden,
        init_std,
        n_kv_head=kv_heads,
        head_dim=head_dim,
    ).to(ref.device, ref.dtype)
    if init_tokens is not None:
        _init_prefix(encoder, prefix_from_tokens(model, init_tokens.to(ref.device)))
    method = "prefix_tuning" if hidden is not None else "p_tuning_v2"
    settings = dict(hidden=hidden) if hidden is not None else {}
    return PrefixTuned(model, encoder, method, settings)


def add_p_tuning_v2(
    model: nn.Module,
    n_virtual: int,
    init_std: float | None = None,
    seed: int = 0,  # notebook 05 §4
    init_tokens: torch.Tensor | None = None,
) -> PrefixTuned:
    """P-tuning v2 (Liu et al. 2022): deep prompts in every layer = prefix tuning without the MLP."""
    return add_prefix_tuning(
        model, n_virtual, hidden=None, init_std=init_std, seed=seed, init_tokens=init_tokens
    )


# ---------------------------------------------------------------- counting, saving, loading


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:  # notebook 05 §2
    """The method's parameters alone (everything with ``requires_grad``), as CPU copies."""
    return {
        n: p.detach().cpu().clone().contiguous()
        for n, p in model.named_parameters()
        if p.requires_grad
    }


def save_sibling(model: nn.Module, path: str | os.PathLike) -> Path:  # notebook 05 §7
    """Write the method's parameters (safetensors) with its name and settings in the metadata."""
    config = getattr(model, "sibling_config", None)
    if not isinstance(config, dict):
        raise ValueError(
            "the model carries no sibling method (add_adapters, add_prompt_tuning, ... first)"
        )
    path = Path(path)
    save_file(
        trainable_state(model),
        str(path),
        metadata=dict(format=SIBLING_FORMAT, config=json.dumps(config)),
    )
    return path


ADD = {
    "adapter": lambda m, c: add_adapters(m, c["bottleneck"], tuple(c["where"])),
    "prompt_tuning": lambda m, c: add_prompt_tuning(m, c["n_virtual"]),
    "p_tuning": lambda m, c: add_p_tuning(m, c["n_virtual"], c["hidden"], c["encoder"]),
    "prefix_tuning": lambda m, c: add_prefix_tuning(m, c["n_virtual"], c["hidden"]),
    "p_tuning_v2": lambda m, c: add_p_tuning_v2(m, c["n_virtual"]),
    "ia3": lambda m, c: add_ia3(m, tuple(c["targets"]), tuple(c["feedforward"])),
}


@torch.no_grad()  # notebook 05 §7
def load_sibling(base: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Rebuild the method written by ``save_sibling`` on a fresh ``base`` and load its parameters.

    The file, its settings and every key and shape are checked on a scratch copy of the method
    first, so a wrong file raises and leaves ``base`` as it was. Returns the adapted model.
    """
    path = Path(path)
    state, meta = read_safetensors(path)
    if meta.get("format") != SIBLING_FORMAT:
        raise ValueError(
            f"{path} is not a lorakit sibling file (format={meta.get('format')!r}, "
            f"expected {SIBLING_FORMAT!r})"
        )
    try:
        config = json.loads(meta["config"])
        method = config["method"]
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: metadata 'config' is missing or malformed ({e!r})") from e
    if method not in ADD:
        raise ValueError(f"{path}: unknown method {method!r}; known: {METHODS}")
    trial = ADD[method](copy.deepcopy(base), config)  # validates settings against this base
    check_state(
        state, {n: p.shape for n, p in trial.named_parameters() if p.requires_grad}, f"{path}"
    )
    model = ADD[method](base, config)
    params = dict(model.named_parameters())
    for n, t in state.items():
        params[n].copy_(t)
    return model


# ---------------------------------------------------------------- latency (notebook §7, bench)


def compare_latency(
    models: dict[str, nn.Module],
    batch_size: int,
    n_tokens: int,
    repeats: int = 7,  # notebook 05 §7
    calls: int = 10,
    seed: int = 0,
) -> dict[str, float]:
    """Median seconds of one forward pass on ``batch_size × n_tokens`` real tokens, per model.

    Every call runs under ``torch.inference_mode()``: with autograd on, a model with trainable
    parameters (the base, unmerged methods) records a graph on each call and a frozen one (a
    merged copy) does not, which alone makes a frozen copy of the base's own weights look faster
    than the base. The models are interleaved within every repeat, and each repeat times
    ``calls`` calls in a row, so load on a shared machine hits all alike: report ratios between
    models of the *same* call, not absolute times, and put a copy of the base among ``models`` to
    see how far from 1 noise alone moves a ratio.
    """
    positive_int(batch_size, "batch_size")
    positive_int(n_tokens, "n_tokens")
    positive_int(repeats, "repeats")
    positive_int(calls, "calls")
    idx = torch.randint(256, (batch_size, n_tokens), generator=torch.Generator().manual_seed(seed))
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for m in models.values():
            m.eval()
            m(idx.to(next(m.parameters()).device))  # warm up
        for _ in range(repeats):
            for name, m in models.items():
                x = idx.to(next(m.parameters()).device)
                start = time.perf_counter()
                for _ in range(calls):
                    m(x)
                times[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(t) for name, t in times.items()}


def forward_flops(model: nn.Module, n_tokens: int, batch_size: int = 1) -> int:  # notebook 05 §7
    """Exact floating-point operations of one forward pass (``torch.utils.flop_counter``).

    Attention runs on PyTorch's reference (math) kernel here, whose matrix products the counter
    sees; the fused CPU kernel would be counted as zero and hide what a prefix costs.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    positive_int(n_tokens, "n_tokens")
    positive_int(batch_size, "batch_size")
    idx = torch.zeros(
        batch_size, n_tokens, dtype=torch.long, device=next(model.parameters()).device
    )
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        model(idx)
    return counter.get_total_flops()
