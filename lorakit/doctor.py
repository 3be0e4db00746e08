"""The adapter doctor: check a LoRA model before and after training (notebook 04 §8).

``diagnose(model)`` looks at every adapted layer — lorakit's ``LoRALinear`` (and the variants in
``lorakit.variants``) or PEFT's LoRA layers, on the course GPT or on a Hugging Face model — and
reports what a learner otherwise finds out only after a wasted run:

- which modules carry an adapter, which linear layers do not, and target names that match nothing;
- trainable parameters and their share, and trainable parameters outside the adapters;
- the scaling in use (α/r or rsLoRA's α/√r) and whether it looks like α was confused with α/r;
- whether every ``B`` has moved from zero and by how much: ‖B‖ and the update ratio ‖s A B‖/‖W0‖;
- gradients that are None or zero (A and B both zero: no gradient can ever flow);
- the adapters' dtype, and (given the optimizer) how many entries one step of lr cannot move;
- the merged flag, and (given the original weights) how many times the update sits in the weight;
- a PEFT adapter loaded for inference (``PeftModel.from_pretrained``'s ``is_trainable=False``) and
  reentrant gradient checkpointing with no input gradient (the adapters in checkpointed layers get none).

``check_added_tokens(model, token_ids)`` answers the question of tokens added to the vocabulary:
will their embedding rows train, and will they be saved with the adapter?

Every finding has a ``code`` (a stable name the tests use), a ``level`` (``"error"``, ``"warning"``
or ``"info"``) and a message that says what to do. Notation as in ``lorakit.lora``: ``A`` in×r,
``B`` r×out (PEFT stores the transposes, ``lora_A.weight = Aᵀ``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .adapters import PEFT_PREFIX
from .lora import LoRALinear
from .targets import check_targets, matches

LOW_PRECISION = (torch.bfloat16, torch.float16)
USUAL_SCALING = (1 / 8, 8.0)  # α/r from α = r/8 ... 8r; outside it α and α/r were likely confused
TINY_UPDATE = 1e-4  # ‖s A B‖ / ‖W0‖ below this after training: the adapter did nothing


@dataclass  # notebook 04 §8
class Finding:
    level: str  # "error", "warning" or "info"
    code: str  # stable name, e.g. "B_zero"
    message: str
    value: float | None = None  # the measured number behind it, where there is one

    def __str__(self) -> str:
        mark = {"error": "✗", "warning": "!", "info": "·"}[self.level]
        return f"{mark} [{self.code}] {self.message}"


@dataclass  # notebook 04 §8
class Report:
    """What ``check`` found: one row per adapted layer, totals, and the findings."""

    layers: list[dict] = field(default_factory=list)
    untargeted: list[str] = field(default_factory=list)
    trainable: int = 0
    total: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def share(self) -> float:
        """Trainable parameters as a fraction of all parameters."""
        return self.trainable / max(self.total, 1)

    @property
    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    @property
    def ok(self) -> bool:
        """No errors (warnings and info may remain)."""
        return not any(f.level == "error" for f in self.findings)

    def __str__(self) -> str:
        lines = [
            f"adapted layers: {len(self.layers)}; untargeted linear layers: {len(self.untargeted)}; "
            f"trainable {self.trainable:,} of {self.total:,} ({100 * self.share:.2f} %)"
        ]
        if self.layers:
            lines.append(
                f"  {'layer':<32} {'r':>3} {'scaling':>9} {'dtype':>9} {'merged':>6} "
                f"{'‖B‖':>9} {'‖sAB‖/‖W0‖':>11} {'grad A,B':>10}"
            )
            for row in self.layers:
                lines.append(
                    f"  {row['layer'][-32:]:<32} {row['r']:>3} {row['scaling']:>9.4g} "
                    f"{str(row['dtype']).replace('torch.', ''):>9} {str(row['merged']):>6} "
                    f"{row['B_norm']:>9.3g} {row['update_ratio']:>11.3g} {row['grad']:>10}"
                )
        lines += [str(f) for f in self.findings] or ["✓ no problems found"]
        return "\n".join(lines)


# ---------------------------------------------------------------- one view of both kinds of adapter


@dataclass
class _Adapter:
    name: str  # module path in the unwrapped model (PEFT's prefix removed)
    A: torch.Tensor  # in×r (a view of the parameter)
    B: torch.Tensor  # r×out
    params: dict  # parameter name -> Parameter (A, B, magnitude ...)
    r: int
    alpha: float
    scaling: float
    weight: torch.Tensor  # W0 as the base layer computes with it (out×in; 4-bit: dequantized)
    merged: bool
    delta: torch.Tensor  # the update this adapter makes to W0, in×out (DoRA: W' − W0)


def _base_weight(layer: nn.Module) -> torch.Tensor:
    """W0 as the base layer computes with it (out×in). A 4-bit layer stores codes, not W0:
    lorakit's ``Linear4bit`` has no ``weight`` at all, and bitsandbytes' ``Params4bit`` holds packed
    uint8 codes, whose norm says nothing about W0. Both are dequantized (float32) here."""
    if hasattr(layer, "dequantized_weight"):  # lorakit.qlora.Linear4bit
        return layer.dequantized_weight(torch.float32)
    weight = layer.weight
    quant_state = getattr(weight, "quant_state", None)
    if quant_state is not None:  # bitsandbytes Linear4bit (Params4bit)
        from bitsandbytes.functional import dequantize_4bit

        return dequantize_4bit(weight.data, quant_state).float()
    return weight


def _is_peft_lora(module: nn.Module) -> bool:
    return all(
        hasattr(module, a) for a in ("lora_A", "lora_B", "scaling", "base_layer")
    ) and isinstance(module.lora_A, nn.ModuleDict)


def _adapters(model: nn.Module) -> list[_Adapter]:
    found = []
    for path, m in model.named_modules():
        if isinstance(m, LoRALinear):
            with torch.no_grad():
                delta = m.delta().detach()
            params = {k: p for k, p in m.named_parameters() if not k.startswith("base.")}
            found.append(
                _Adapter(
                    path,
                    m.A,
                    m.B,
                    params,
                    m.config.r,
                    m.config.alpha,
                    m.scaling,
                    _base_weight(m.base),
                    m.merged,
                    delta,
                )
            )
        elif _is_peft_lora(m):
            for key in m.lora_A:
                A, B = m.lora_A[key].weight.t(), m.lora_B[key].weight.t()
                s = float(m.scaling[key])
                params = {
                    f"lora_A.{key}": m.lora_A[key].weight,
                    f"lora_B.{key}": m.lora_B[key].weight,
                }
                magnitude = getattr(m, "lora_magnitude_vector", {})
                if key in magnitude:  # PEFT's DoRA
                    params[f"magnitude.{key}"] = magnitude[key].weight
                with torch.no_grad():
                    delta = (A.float() @ B.float()) * s
                name = path.removeprefix(PEFT_PREFIX)
                found.append(
                    _Adapter(
                        name,
                        A,
                        B,
                        params,
                        int(m.r[key]),
                        float(m.lora_alpha[key]),
                        s,
                        _base_weight(m.base_layer),
                        key in getattr(m, "merged_adapters", []),
                        delta,
                    )
                )
    return found


def _linear_paths(model: nn.Module, adapter_paths: list[str]) -> list[str]:
    """Linear layers that are not an adapter's own parts (its base, PEFT's lora_A/lora_B)."""
    inside = tuple(p + "." for p in adapter_paths)
    out = []
    for path, m in model.named_modules():
        name = path.removeprefix(PEFT_PREFIX)
        if isinstance(m, nn.Linear) and name not in adapter_paths and not name.startswith(inside):
            out.append(name)
    return out


def _reference_weight(reference, name: str) -> torch.Tensor | None:
    if isinstance(reference, nn.Module):
        try:
            return reference.get_submodule(name).weight
        except AttributeError:
            return None
    return reference.get(f"{name}.weight")


# ---------------------------------------------------------------- the check


@torch.no_grad()  # notebook 04 §8
def diagnose(
    model: nn.Module,
    targets: list[str] | str | None = None,
    *,
    after_training: bool = False,
    optimizer: torch.optim.Optimizer | None = None,
    reference: nn.Module | dict | None = None,
) -> Report:
    """Examine ``model``'s LoRA adapters and return a ``Report`` (print it to read it).

    - ``targets``: the target list you meant; names that match no linear layer are reported.
    - ``after_training``: a ``B`` still at zero is then an error (before training it is expected).
    - ``optimizer``: checked to hold every trainable adapter parameter at a learning rate > 0, and
      used to count adapter entries too large for one step of that lr to change in their dtype.
    - ``reference``: the original base model (or its ``state_dict``); each base weight is compared
      with it to count how many times the update has been merged into it.
    Gradients are read from ``.grad`` as they are (run it after ``loss.backward()`` to see them).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(after_training, bool):
        raise TypeError(f"after_training must be True or False, got {after_training!r}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    if reference is not None and not isinstance(reference, (nn.Module, dict)):
        raise TypeError(
            f"reference must be an nn.Module or a state_dict, got {type(reference).__name__}"
        )
    targets = None if targets is None else check_targets(targets)

    report = Report()
    adapters = _adapters(model)
    report.untargeted = _linear_paths(model, [a.name for a in adapters])
    report.total = sum(p.numel() for p in model.parameters())
    report.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    add = lambda level, code, msg, value=None: report.findings.append(
        Finding(level, code, msg, value)
    )  # noqa: E731

    _check_targets(adapters, report, targets, add)
    if not adapters:
        return report
    adapter_ids = {id(p) for a in adapters for p in a.params.values()}
    extra = sum(
        p.numel() for p in model.parameters() if p.requires_grad and id(p) not in adapter_ids
    )
    if extra:
        add(
            "warning",
            "extra_trainable",
            f"{extra:,} trainable parameters sit outside the adapters "
            "(the base is not frozen): this is partly full fine-tuning. Freeze them unless you meant it.",
        )
    frozen = [a.name for a in adapters if not all(p.requires_grad for p in a.params.values())]
    if frozen:
        add(
            "error",
            "frozen_adapter",
            f"adapter parameters of {_few(frozen)} have requires_grad=False: "
            "they can never train. Call requires_grad_(True) on A and B (inject_lora does).",
        )
    _check_loaded_frozen(model, add)
    _check_checkpointing(model, adapters, add)

    for a in adapters:
        report.layers.append(_row(a))
    _check_scaling(adapters, add)
    _check_B_and_updates(adapters, report, after_training, add)
    _check_grads(adapters, add)
    _check_dtype(adapters, optimizer, add)
    if optimizer is not None:
        _check_optimizer(adapters, optimizer, add)
    merged = [a.name for a in adapters if a.merged]
    if merged:
        add(
            "info",
            "merged",
            f"{len(merged)} of {len(adapters)} adapters are merged into their base weight "
            "(do not train or merge again; unmerge to switch adapters).",
        )
    if reference is not None:
        _check_against_reference(adapters, reference, add)
    return report


def _few(names: list[str], k: int = 3) -> str:
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


def _row(a: _Adapter) -> dict:
    W0 = torch.linalg.matrix_norm(a.weight.float()).item()
    grads = []
    for key in ("A", "B"):
        p = next((p for k, p in a.params.items() if k == key or k.startswith(f"lora_{key}.")), None)
        g = None if p is None else p.grad
        grads.append("None" if g is None else ("0" if not g.abs().max() > 0 else "ok"))
    return dict(
        layer=a.name,
        r=a.r,
        alpha=a.alpha,
        scaling=a.scaling,
        dtype=a.A.dtype,
        merged=a.merged,
        B_norm=torch.linalg.matrix_norm(a.B.float()).item(),
        update_ratio=torch.linalg.matrix_norm(a.delta.float()).item() / max(W0, 1e-30),
        grad=",".join(grads),
    )


def _check_targets(adapters, report, targets, add) -> None:
    if targets is not None and targets != "all-linear":
        names = [a.name for a in adapters] + report.untargeted
        unmatched = [t for t in targets if not any(matches(n, t) for n in names)]
        if unmatched:
            add(
                "error",
                "unmatched_targets",
                f"target(s) {unmatched} match no linear layer. "
                f"This model's linear layers are named like: {_few(sorted({n.split('.')[-1] for n in names}), 8)}.",
            )
        missed = [n for n in report.untargeted if any(matches(n, t) for t in targets)]
        if missed:
            add(
                "error",
                "targets_not_adapted",
                f"{_few(missed)} match your targets but carry no adapter "
                "(was the adapter injected into another copy of the model?).",
            )
    if not adapters:
        add(
            "error",
            "no_adapters",
            "no LoRA layer found: nothing will train as LoRA. Inject one "
            "(lorakit.lora.inject_lora or peft.get_peft_model) with targets from the linear layers: "
            f"{_few(sorted({n.split('.')[-1] for n in report.untargeted}), 8)}.",
        )
    elif report.untargeted:
        kinds = sorted({n.split(".")[-1] for n in report.untargeted})
        add(
            "info",
            "untargeted",
            f"{len(report.untargeted)} linear layers carry no adapter ({', '.join(kinds)}).",
        )


def _check_scaling(adapters, add) -> None:
    kinds = set()
    for a in adapters:
        rs = math.isclose(a.scaling, a.alpha / math.sqrt(a.r), rel_tol=1e-6)
        kinds.add("α/√r (rsLoRA)" if rs and a.r > 1 else "α/r")
    scalings = sorted({round(a.scaling, 6) for a in adapters})
    a0 = adapters[0]
    add(
        "info",
        "scaling",
        f"scaling in use: {' and '.join(sorted(kinds))} = {_few([f'{s:g}' for s in scalings])} "
        f"(e.g. r = {a0.r}, α = {a0.alpha:g}).",
    )
    odd = [a for a in adapters if not USUAL_SCALING[0] <= a.scaling <= USUAL_SCALING[1]]
    if odd:
        a = odd[0]
        add(
            "warning",
            "unusual_scaling",
            f"scaling {a.scaling:.4g} (r = {a.r}, α = {a.alpha:g}) is outside the usual "
            f"{USUAL_SCALING[0]:g}…{USUAL_SCALING[1]:g}. α is not the scaling: the scaling is α/r. For a scaling of 2 "
            f"at r = {a.r}, pass α = {2 * a.r:g}. A scaling this far off acts like a learning rate {a.scaling:.3g}× too large/small.",
        )


def _check_B_and_updates(adapters, report, after_training, add) -> None:
    zero_B = [a.name for a in adapters if not a.B.abs().max() > 0]
    zero_A = [a.name for a in adapters if not a.A.abs().max() > 0]
    both = sorted(set(zero_A) & set(zero_B))
    if both:
        add(
            "error",
            "both_zero",
            f"A and B are both zero in {_few(both)}: ∂L/∂A = s·xᵀ(g Bᵀ) and ∂L/∂B = "
            "s·(xA)ᵀ g are then both zero, so no step can ever move them. Start A random (B zero).",
        )
    only_B = [n for n in zero_B if n not in both]
    if only_B and after_training:
        add(
            "error",
            "B_zero",
            f"B is still exactly zero in {len(only_B)} of {len(adapters)} adapters "
            f"({_few(only_B)}): they never trained. Is B frozen, the lr 0, or B missing from the optimizer?",
        )
    elif only_B:
        add(
            "info",
            "B_zero",
            f"B is zero in {len(only_B)} of {len(adapters)} adapters: the model equals its "
            "base (expected before training; run check(model, after_training=True) afterwards).",
        )
    if after_training:
        tiny = [row["layer"] for row in report.layers if 0 < row["update_ratio"] < TINY_UPDATE]
        if tiny:
            add(
                "warning",
                "tiny_update",
                f"the update ‖sAB‖/‖W0‖ is below {TINY_UPDATE:g} in {_few(tiny)}: "
                "the adapter barely changed the model (scaling or lr too small, or too few steps).",
            )
        moved = [row for row in report.layers if row["B_norm"] > 0]
        if moved:
            ratios = [row["update_ratio"] for row in moved]
            add(
                "info",
                "update_size",
                f"B moved from zero in {len(moved)} of {len(adapters)} adapters; "
                f"‖sAB‖/‖W0‖ from {min(ratios):.2g} to {max(ratios):.2g}.",
            )


def _check_grads(adapters, add) -> None:
    params = [(a.name, k, p) for a in adapters for k, p in a.params.items() if p.requires_grad]
    with_grad = [(n, k, p) for n, k, p in params if p.grad is not None]
    if not with_grad:
        add(
            "info",
            "no_grads",
            "no gradients yet (run check after loss.backward() to inspect them).",
        )
        return
    none = sorted({n for n, k, p in params if p.grad is None})
    if none:
        add(
            "warning",
            "grad_none",
            f"{len(none)} adapters got no gradient (grad is None) while others did: "
            f"{_few(none)}. Are they on the forward path (right module, adapter enabled)?",
        )
    zero = sorted(
        {n for n, k, p in with_grad if not p.grad.abs().max() > 0}
        - {n for n, k, p in with_grad if p.grad.abs().max() > 0}
    )
    if zero:
        add(
            "error",
            "grad_zero",
            f"every gradient of {_few(zero)} is exactly zero: those adapters cannot learn "
            "(A and B both zero? a detached or disabled path?).",
        )


def _check_dtype(adapters, optimizer, add) -> None:
    dtypes = sorted(
        {str(p.dtype).replace("torch.", "") for a in adapters for p in a.params.values()}
    )
    low = [a for a in adapters if any(p.dtype in LOW_PRECISION for p in a.params.values())]
    if not low:
        add("info", "dtype", f"adapter dtype: {', '.join(dtypes)}.")
        return
    lrs = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]} if optimizer else {}
    stuck, counted = 0, 0
    for a in low:
        for p in a.params.values():
            lr = lrs.get(id(p))
            if lr:
                # Adam moves each entry by about lr per step: does adding lr change it at all?
                w = p.detach()[p.detach() != 0]
                stuck += (w + lr == w).sum().item()
                counted += w.numel()
    detail, share = "", None
    if counted:
        share = stuck / counted
        detail = (
            f" With this optimizer's lr, one step cannot change {stuck:,} of the {counted:,} non-zero "
            f"adapter entries ({100 * share:.1f} %): the update rounds away."
        )
    add(
        "warning",
        "low_precision",
        f"adapters are stored in {', '.join(dtypes)}: a step smaller than about "
        f"|value|·2^-8 (bfloat16) rounds to nothing.{detail} Keep A and B in float32 (compute in 16 bits).",
        share,
    )


def _check_optimizer(adapters, optimizer, add) -> None:
    lrs = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    missing = sorted(
        {
            a.name
            for a in adapters
            for p in a.params.values()
            if p.requires_grad and id(p) not in lrs
        }
    )
    if missing:
        add(
            "error",
            "not_in_optimizer",
            f"the optimizer does not hold the adapters of {_few(missing)} "
            f"({len(missing)} layers): they will never step. Build the optimizer after injecting LoRA.",
        )
    zero = sorted({a.name for a in adapters for p in a.params.values() if lrs.get(id(p)) == 0})
    if zero:
        add("error", "zero_lr", f"learning rate 0 for the adapters of {_few(zero)}.")


def _check_against_reference(adapters, reference, add) -> None:
    """How many times is the update in the weight? k = ⟨W − W_ref, δ⟩ / ⟨δ, δ⟩ (δ = s A B)."""
    twice, stacked, residual, unknown = [], [], [], []
    for a in adapters:
        ref = _reference_weight(reference, a.name)
        delta = a.delta.float().t()  # out×in, like the stored weight
        if ref is None or ref.shape != a.weight.shape:
            unknown.append(a.name)
            continue
        dd = (delta * delta).sum().item()
        if dd == 0:
            continue
        k = (
            (a.weight.float() - ref.float()) * delta
        ).sum().item() / dd  # least squares: W − W_ref ≈ k δ
        if a.merged and abs(k - 1) > 0.1:
            twice.append(f"{a.name} (k = {k:.2f})")
        elif not a.merged and abs(k - 1) < 0.1:
            stacked.append(a.name)
        elif not a.merged and abs(k + 1) < 0.1:
            residual.append(a.name)
    if twice:
        add(
            "error",
            "merged_twice",
            f"the weight holds the update k times instead of once: {_few(twice)}. "
            "It was merged more than once; reload the base and merge once.",
        )
    if stacked:
        add(
            "error",
            "double_applied",
            f"the base weight already contains this update and the adapter is "
            f"active on top of it in {_few(stacked)}: the update counts twice. Load the adapter into the "
            "original base, or use the merged model without the adapter.",
        )
    if residual:
        add(
            "info",
            "pissa_residual",
            f"the base weight is the reference minus the update in {_few(residual)}: "
            "a PiSSA residual (expected for PiSSA; unmerged it is the original model).",
        )
    if unknown:
        add("warning", "no_reference", f"no matching reference weight for {_few(unknown)}.")


def _check_loaded_frozen(model, add) -> None:  # notebook 04 §8
    """``PeftModel.from_pretrained(base, path)`` loads an adapter for inference: ``is_trainable``
    defaults to False, which sets ``inference_mode`` and freezes A and B. Training then moves nothing
    (or fails: the optimizer gets an empty parameter list)."""
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, dict):
        return
    frozen = [name for name, cfg in configs.items() if getattr(cfg, "inference_mode", False)]
    if frozen and not any(p.requires_grad for p in model.parameters()):
        add(
            "error",
            "loaded_frozen",
            f"adapter {_few(frozen)} was loaded for inference: PeftModel.from_pretrained "
            "defaults to is_trainable=False, so A and B have requires_grad=False and cannot train. To continue "
            "training, load it with PeftModel.from_pretrained(base, path, is_trainable=True) "
            "(for inference only, this is expected).",
        )


def _reentrant(func) -> bool:
    """Does this checkpoint function run torch's reentrant checkpoint? (``use_reentrant`` None means True)."""
    return getattr(func, "keywords", {}).get("use_reentrant") is not False


def _input_grads_on(model: nn.Module) -> bool | None:
    """Does the input embeddings' output require grad (weight trainable, or
    ``enable_input_require_grads``' forward hook)? None when the model has no input embeddings."""
    for m in model.modules():
        if not hasattr(type(m), "get_input_embeddings"):
            continue
        try:
            emb = m.get_input_embeddings()
        except (NotImplementedError, AttributeError):
            continue
        if emb is None:
            continue
        hooks = [
            getattr(h, "__name__", getattr(getattr(h, "func", None), "__name__", ""))
            for h in emb._forward_hooks.values()
        ]
        return any(p.requires_grad for p in emb.parameters()) or any(
            "require_grad" in h for h in hooks
        )
    return None


def _check_checkpointing(model, adapters, add) -> None:  # notebook 04 §8
    """Reentrant activation checkpointing (``use_reentrant=True``, torch's old default and
    transformers 4's) gives gradients only to a block's *inputs* that require grad. With the
    embeddings frozen, the hidden states entering the first block do not, so no adapter inside a
    checkpointed layer gets a gradient: B stays 0, and the loss may have no grad_fn at all.
    ``model.enable_input_require_grads()`` makes the embeddings' output require grad."""
    checkpointed = [
        path.removeprefix(PEFT_PREFIX)
        for path, m in model.named_modules()
        if getattr(m, "gradient_checkpointing", False) is True
        and _reentrant(getattr(m, "_gradient_checkpointing_func", None))
    ]
    if not checkpointed or _input_grads_on(model) is not False:
        return
    inside = [
        a.name for a in adapters if any(c == "" or a.name.startswith(c + ".") for c in checkpointed)
    ]
    if inside:
        add(
            "error",
            "checkpointing_no_input_grads",
            f"gradient checkpointing is on with use_reentrant=True and the "
            f"input embeddings' output does not require grad: {len(inside)} of {len(adapters)} adapters sit in "
            "checkpointed layers and get no gradient, so B stays 0 (or loss.backward() finds no grad_fn). Call "
            "model.enable_input_require_grads() after gradient_checkpointing_enable() (prepare_model_for_kbit_training "
            "does), or pass gradient_checkpointing_kwargs={'use_reentrant': False}.",
            len(inside),
        )


# ---------------------------------------------------------------- tokens added to the vocabulary


def _token_rows(model: nn.Module, token_ids: list[int]) -> torch.Tensor:
    """The input-embedding rows the model uses for ``token_ids`` (through PEFT's wrappers, if any)."""
    return model.get_input_embeddings()(torch.tensor(token_ids)).detach().float()


def _rows_trained_by_adapter(model: nn.Module, token_ids: list[int]) -> bool:
    """Are the rows trained by something the adapter saves: PEFT's trainable tokens (for these ids)
    or a ``modules_to_save`` copy of the embedding?"""
    emb = model.get_input_embeddings()
    for m in emb.modules():
        indices = getattr(m, "token_indices", None)
        if isinstance(indices, dict) and any(set(token_ids) <= set(v) for v in indices.values()):
            return any(p.requires_grad for p in m.parameters())
        if type(m).__name__ == "ModulesToSaveWrapper":
            return any(
                p.requires_grad for p in getattr(m, "modules_to_save", nn.ModuleDict()).parameters()
            )
    return False


@torch.no_grad()  # notebook 04 §9
def check_added_tokens(
    model: nn.Module, token_ids: list[int], *, trained: nn.Module | None = None
) -> Report:
    """Tokens added to the vocabulary (``tokenizer.add_special_tokens`` + ``resize_token_embeddings``):
    will their embedding rows train, and are they saved with the adapter?

    The new rows start at ``resize_token_embeddings``' initial values (random, drawn around the mean
    of the old rows): a LoRA on the attention or MLP never changes them, and rows trained outside the
    adapter's config are not in a LoRA-only adapter file. ``model``: the (PEFT) model to train, or —
    with ``trained``, the model the rows were trained in — the model reloaded from what was saved;
    the rows are then compared.
    """
    if not isinstance(model, nn.Module) or not hasattr(model, "get_input_embeddings"):
        raise TypeError(
            f"model must be a Hugging Face or PEFT model with input embeddings, got {type(model).__name__}"
        )
    if trained is not None and not isinstance(trained, nn.Module):
        raise TypeError(f"trained must be an nn.Module or None, got {type(trained).__name__}")
    vocab = _vocab_size(model)
    token_ids = [int(token_ids)] if isinstance(token_ids, int) else [int(t) for t in token_ids]
    bad = [t for t in token_ids if not 0 <= t < vocab]
    if not token_ids or bad:
        raise ValueError(
            f"token_ids must be a non-empty list of ids in 0..{vocab - 1} (the resized vocabulary), "
            f"got {token_ids}"
        )
    report = Report()
    report.total = sum(p.numel() for p in model.parameters())
    report.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    add = lambda level, code, msg, value=None: report.findings.append(
        Finding(level, code, msg, value)
    )  # noqa: E731
    fix = (
        f"LoraConfig(..., trainable_token_indices={{'embed_tokens': {token_ids}}}), which trains just these rows "
        "and saves them in the adapter (or modules_to_save=['embed_tokens', 'lm_head'], which saves whole copies)"
    )
    if trained is not None:
        lost = (_token_rows(model, token_ids) - _token_rows(trained, token_ids)).abs().max().item()
        if lost > 1e-6:
            add(
                "error",
                "added_tokens_lost",
                f"the reloaded rows of tokens {token_ids} differ from the trained ones "
                f"(max |Δ| = {lost:.3g}): they were not saved, and the reloaded model uses resize_token_embeddings' "
                f"fresh random rows. Train them with {fix}.",
                lost,
            )
        else:
            add(
                "info",
                "added_tokens_saved",
                f"the reloaded rows of tokens {token_ids} equal the trained ones.",
                lost,
            )
        return report
    if _rows_trained_by_adapter(model, token_ids):
        add(
            "info",
            "added_tokens_trained",
            f"the rows of tokens {token_ids} train with the adapter and are saved with it.",
        )
    elif any(p.requires_grad for p in model.get_input_embeddings().parameters()):
        add(
            "error",
            "added_tokens_not_saved",
            f"the embedding of tokens {token_ids} trains outside the adapter's config "
            "(unfrozen by hand): an adapter file stores only what its config names, so after reloading these rows "
            f"are random again. Use {fix}.",
        )
    else:
        add(
            "error",
            "added_tokens_untrained",
            f"the rows of tokens {token_ids} are frozen: they keep "
            f"resize_token_embeddings' random initial values and the model cannot learn what they mean "
            f"(LoRA on the linear layers does not reach the embedding). Use {fix}.",
        )
    return report


def _vocab_size(model: nn.Module) -> int:
    emb = model.get_input_embeddings()
    weight = getattr(emb, "weight", None)
    if weight is None:  # PEFT wrapper: the base layer holds the matrix
        weight = next(m.weight for m in emb.modules() if isinstance(m, nn.Embedding))
    return weight.shape[0]


# ---------------------------------------------------------------- after SFT: an RL run (notebook 11 §6)

FLAT_REWARD = 0.02  # last third's mean reward minus the first third's, below this: it never rose
ZERO_GROUPS = (
    0.5  # share of groups whose rewards were all equal, above this: most steps teach nothing
)
KL_LIMIT = 3.0  # KL to the reference (nats per answer token) above this: the policy ran away
LR_TOO_SMALL = 1e-3  # a LoRA update ‖sAB‖/‖W0‖ below this after a run: the lr is too small for LoRA


def _thirds(values: list[float]) -> tuple[float, float]:
    k = max(1, len(values) // 3)
    return sum(values[:k]) / k, sum(values[-k:]) / k


@torch.no_grad()  # notebook 11 §6
def check_rl(model: nn.Module, history: dict | None = None, *, lr: float | None = None) -> Report:
    """Examine a model before or after a GRPO run (``rl.train_grpo``'s ``history``) for the four
    failures RL with LoRA is known for; each finding's message names the fix.

    - ``loaded_frozen`` / ``frozen_adapter`` / ``no_trainable``: nothing can train (an adapter loaded
      for inference, or frozen by hand); checked before any step is spent;
    - ``lr_too_small``: after training the adapter barely moved (its update is a tiny fraction of
      the weight, so the reward cannot rise): a full-fine-tuning learning rate on LoRA (LoRA's best
      rate is about 10× full fine-tuning's); ``reward_flat`` (a warning): the reward did not rise;
    - ``zero_advantage``: most groups scored every answer the same, so every advantage was 0;
    - ``kl_exploding``: the KL to the reference grew past ``KL_LIMIT``: the policy ran away.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    adapters = diagnose(model, after_training=history is not None)
    report = Report(
        layers=adapters.layers,
        untargeted=adapters.untargeted,
        trainable=adapters.trainable,
        total=adapters.total,
    )
    add = lambda level, code, msg, value=None: report.findings.append(
        Finding(level, code, msg, value)
    )  # noqa: E731
    report.findings += [
        f for f in adapters.findings if f.code in ("frozen_adapter", "loaded_frozen")
    ]
    if report.trainable == 0 and not report.findings:
        add(
            "error",
            "no_trainable",
            "no parameter has requires_grad=True: the optimizer would get nothing to train "
            "and the reward could never rise. Inject an adapter (inject_lora), or load it trainable "
            "(PeftModel.from_pretrained(base, path, is_trainable=True)).",
        )
    if not history:
        return report

    rewards = list(history.get("reward", []))
    zero = list(history.get("zero_groups", []))
    kl = list(history.get("kl", []))
    if zero and sum(zero) / len(zero) > ZERO_GROUPS:
        share = sum(zero) / len(zero)
        add(
            "error",
            "zero_advantage",
            f"{100 * share:.0f} % of the groups gave every answer the same reward: "
            "their advantages (r − mean)/std are all 0, so they teach nothing (the loss is ≈ 0). Give partial "
            "credit (a graded reward), sample more answers per group or at a higher temperature, or use prompts "
            "the model sometimes, not always or never, gets right.",
            share,
        )
    if kl and max(kl) > KL_LIMIT:
        add(
            "error",
            "kl_exploding",
            f"the KL to the reference reached {max(kl):.3g} nats per token (limit "
            f"{KL_LIMIT:g}; it started at {kl[0]:.2g}): the policy runs away from the model it started from and "
            "the reward stops meaning what it should. Lower the learning rate, raise kl_coef, keep the clip "
            "(ε = 0.2), or take fewer updates per batch.",
            max(kl),
        )
    ratios = [row["update_ratio"] for row in report.layers]
    first, last = _thirds(rewards) if rewards else (0.0, 0.0)
    if ratios and 0 < max(ratios) < LR_TOO_SMALL:
        fix = f"try {10 * lr:.2g}" if lr else "try 10× the rate"
        add(
            "error",
            "lr_too_small",
            f"the adapter barely moved (‖sAB‖/‖W0‖ ≤ {max(ratios):.2g} after "
            f"{len(rewards)} steps; reward {first:.3f} → {last:.3f}): a full-fine-tuning learning rate on LoRA. "
            f"LoRA's best rate is about 10× full fine-tuning's (notebook 04; LoRA Without Regret): {fix}.",
            max(ratios),
        )
    elif len(rewards) >= 3 and last - first < FLAT_REWARD and "zero_advantage" not in report.codes:
        add(
            "warning",
            "reward_flat",
            f"the reward did not rise ({first:.3f} → {last:.3f} over {len(rewards)} "
            "steps): tune the learning rate (a small grid), check the verifier on hand-made answers, or "
            "train longer.",
            last - first,
        )
    return report


# old name (deprecated, issue 25: ``lorakit.check`` is the environment check; ``doctor.diagnose``
# examines a model). A plain alias, no warning: a notebook cell that writes to stderr fails.
check = diagnose  # deprecated: use diagnose
