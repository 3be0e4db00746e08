"""Which layers an adapter goes on, and how a layer is swapped for its wrapper (notebooks 02, 04, 05, 08).

LoRA, QLoRA, (IA)³ and DoRA all do the same two things to a model: pick modules by name, then
put a wrapper where each one was. Both live here, once.

A target names a module the way PEFT's ``target_modules`` does: by its full dotted path
(``"blocks.0.attn.q_proj"``) or by its last component(s) (``"q_proj"``, ``"attn.q_proj"``).
``"all-linear"`` means every linear layer except the output head (QLoRA's choice: the head
maps to the vocabulary and stays as it is).
"""

from __future__ import annotations

import torch.nn as nn


def matches(path: str, target: str) -> bool:  # notebook 02 §2
    """Does ``target`` name the module at ``path``? (its full path, or its last components)."""
    return path == target or path.endswith("." + target)


def output_head(
    model: nn.Module,
) -> nn.Module | None:  # notebook 02 §2 ('all-linear' leaves the head alone)
    """The layer that maps hidden states to the vocabulary (``lm_head``), if the model has one."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return head if head is not None else getattr(model, "lm_head", None)


def check_targets(targets) -> tuple[str, ...] | str:  # notebook 02 §2
    """``"all-linear"``, or the target names as a tuple (one name may come as a str); else raise."""
    if targets == "all-linear":
        return targets
    targets = (targets,) if isinstance(targets, str) else targets
    if not isinstance(targets, (list, tuple, set)) or not all(isinstance(t, str) for t in targets):
        raise TypeError(
            f"targets must be 'all-linear' or a list of module names (str), got {targets!r}"
        )
    if not targets:
        raise ValueError(
            "targets is empty: name at least one module, e.g. ['q_proj', 'v_proj'] or 'all-linear'"
        )
    return tuple(targets)


# notebook 02 §2 (LoRA); used again in 04 §7 (DoRA), 05 §2 ((IA)³), 08 §3 (QLoRA)
def resolve_targets(
    model: nn.Module,
    targets,
    layer_types: tuple[type, ...] = (nn.Linear,),
    head_allowed: bool = True,
) -> list[str]:
    """The module paths ``targets`` names, in module order; checked before anything changes.

    Every target must match at least one layer of ``layer_types``: a typo raises instead of
    silently adapting fewer layers. ``head_allowed=False``: the output head is never a
    candidate (QLoRA keeps it in 16 bits).
    """
    targets = check_targets(targets)
    head = output_head(model)
    skip_head = targets == "all-linear" or not head_allowed
    candidates = [
        n
        for n, m in model.named_modules()
        if n
        and isinstance(m, layer_types)
        and not (skip_head and (m is head or n.split(".")[-1] == "lm_head"))
    ]
    if targets == "all-linear":
        if not candidates:
            raise ValueError(
                f"{type(model).__name__} has no nn.Linear layers other than the output head: "
                "'all-linear' found nothing"
            )
        return candidates
    unused = [t for t in targets if not any(matches(n, t) for n in candidates)]
    if unused:
        head_note = "" if head_allowed else " (the output head is never a target)"
        raise ValueError(
            f"target(s) {unused} match no linear layer{head_note}; "
            f"the linear layers are: {candidates}"
        )
    return [n for n in candidates if any(matches(n, t) for t in targets)]


def replace_module(model: nn.Module, path: str, module: nn.Module) -> None:  # notebook 02 §2
    """Put ``module`` where the module at dotted ``path`` was (its parent's attribute)."""
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
