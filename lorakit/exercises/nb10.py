"""Self-checks for notebook 10 (FSDP-QLoRA). Each ``check_ex_10_M(answer)`` prints right/wrong and why."""

from __future__ import annotations

from . import report, tolerance_below

TOL = 0.02  # relative tolerance of the arithmetic exercises (2 %), narrowed below any named wrong answer


def _number(answer) -> float | None:
    if isinstance(answer, (bool, str, bytes)):
        return None
    try:
        return float(answer)  # int, float, numpy and 0-d torch numbers
    except (TypeError, ValueError):
        return None


def _close(value: float, right: float, tol: float = TOL) -> bool:
    return abs(value - right) <= tol * abs(right)


def check_ex_10_1(answer) -> bool:
    """GB per GPU: Llama-2 70B QLoRA (r=64) on 4 GPUs, no offload, batch 1 × 2,048 tokens."""
    from ..distributed import fsdp_qlora_memory
    from ..memory import PAPER_DTYPES, estimate_memory

    est = fsdp_qlora_memory("70B", 4, False, r=64, batch_size=1, seq_len=2048)
    one = estimate_memory("70B", "qlora", r=64, batch_size=1, seq_len=2048, **PAPER_DTYPES)
    root_sharded = est["total"] - est["root"] + est["root"] / 4
    wrongs = [
        one["total"],
        one["total"] / 4,
        est["total"] - est["gathered"],
        est["total"] - est["activations"],
        root_sharded,
    ]
    tol = tolerance_below(est["total"], wrongs, TOL)
    value = _number(answer)
    if value is None:
        return report(False, "", f"expected a number of GB (a float), got {type(answer).__name__}")
    if _close(value, est["total"], tol):
        return report(
            True,
            f"{value:.2f} GB per GPU (tolerance {100 * tol:.2g} %): the states ÷ 4, plus two gathered "
            "layers and the GPU's own activations. It fits a 24 GB card.",
            "",
        )
    if _close(value, one["total"], tol):
        return report(
            False,
            "",
            "that is the whole model on one GPU: FSDP divides weights, LoRA, gradients "
            "and optimizer states by the number of GPUs.",
        )
    if _close(value, one["total"] / 4, tol):
        return report(
            False,
            "",
            "you divided everything by 4, activations too: each GPU keeps the "
            "activations of its own batch, whole.",
        )
    if _close(value, est["total"] - est["gathered"], tol):
        return report(
            False,
            "",
            "add the gathered layers: while a layer computes, its full parameters "
            "(and the prefetched next layer's) sit on every GPU.",
        )
    if _close(value, est["total"] - est["activations"], tol):
        return report(False, "", "you left out the activations (estimate_memory's 'activations').")
    if _close(value, root_sharded, tol):
        return report(
            False,
            "",
            "the root (embeddings, final norm, head: 16 bits) is not sharded while it "
            "works: FSDP2 keeps it gathered from forward to backward. Count it whole.",
        )
    return report(
        False,
        "",
        f"{value:.4g} GB is not it. Hint: (weights without the root + lora + gradients + "
        "optimizer) / 4 + the root whole + 2 decoder layers (4-bit + LoRA) + activations.",
    )


def _pair(answer) -> tuple[float, float] | None:
    try:
        items = list(answer)
    except TypeError:
        return None
    if len(items) != 2:
        return None
    values = [_number(v) for v in items]
    return None if None in values else (values[0], values[1])


def check_ex_10_2(answer) -> bool:
    """(GB per GPU, GB of CPU RAM): the same run as 10.1 with CPU offload."""
    from ..distributed import fsdp_qlora_memory

    est = fsdp_qlora_memory("70B", 4, True, r=64, batch_size=1, seq_len=2048)
    pair = _pair(answer)
    if pair is None:
        return report(False, "", f"expected a pair of numbers (gpu_gb, cpu_gb), got {answer!r:.60}")
    gpu, cpu = pair
    gpu_tol = tolerance_below(est["total"], [est["cpu"]], TOL)
    cpu_tol = tolerance_below(est["cpu"], [est["total"], est["cpu"] / 4], TOL)
    gpu_ok, cpu_ok = _close(gpu, est["total"], gpu_tol), _close(cpu, est["cpu"], cpu_tol)
    if gpu_ok and cpu_ok:
        return report(
            True,
            f"{gpu:.2f} GB per GPU, {cpu:.1f} GB of CPU RAM (tolerance "
            f"{100 * min(gpu_tol, cpu_tol):.2g} %): the GPU keeps "
            "two gathered layers, the gathered root and its activations; the host holds every shard.",
            "",
        )
    if _close(gpu, est["cpu"]) and _close(cpu, est["total"]):
        return report(False, "", "the two numbers are swapped: (gpu_gb, cpu_gb).")
    if gpu_ok and _close(cpu, est["cpu"] / 4):
        return report(
            False,
            "",
            "that CPU figure is one rank's shard; the host holds the shards of all four ranks.",
        )
    if not gpu_ok:
        return report(
            False,
            "",
            f"the GPU figure {gpu:.4g} GB is not it: with offload the sharded states "
            "leave the GPU; what is left is the gathered layers, the root and the activations.",
        )
    return report(
        False,
        "",
        f"the CPU figure {cpu:.4g} GB is not it: weights + lora + gradients + optimizer "
        "of the whole model (estimate_memory).",
    )


def check_ex_10_3(answer) -> bool:
    """GB all-gathered per step for 70B QLoRA: decoder layers twice, root once."""
    from ..memory import lora_parameter_count, parameter_counts, quantized_bits_per_parameter

    counts = parameter_counts("70B")
    layers = counts["linear"] * quantized_bits_per_parameter() / 8 + 2 * lora_parameter_count(
        "70B", 64
    )
    root = 2 * counts["other"]
    right = (2 * layers + root) / 1e9
    layers16 = 2 * counts["linear"] + 2 * lora_parameter_count("70B", 64)
    once, root_twice, base16 = (
        (layers + root) / 1e9,
        2 * (layers + root) / 1e9,
        (2 * layers16 + root) / 1e9,
    )
    tol = tolerance_below(right, [once, root_twice, base16], TOL)  # root twice is only 1.4 % more
    value = _number(answer)
    if value is None:
        return report(False, "", f"expected a number of GB (a float), got {type(answer).__name__}")
    if _close(value, right, tol):
        return report(
            True,
            f"{value:.2f} GB per step, whatever the number of GPUs (tolerance {100 * tol:.2g} %).",
            "",
        )
    if _close(value, once, tol):
        return report(
            False,
            "",
            "each decoder layer is gathered again for backward (reshard_after_forward): count it twice.",
        )
    if _close(value, root_twice, tol):
        return report(
            False,
            "",
            "the root is gathered once: FSDP2 keeps it after forward, backward needs it at once.",
        )
    if _close(value, base16, tol):
        return report(
            False, "", "that is a 16-bit base; QLoRA's decoder weights are 4.127 bits/param."
        )
    return report(
        False,
        "",
        f"{value:.4g} GB is not it. Hint: 2 × (linear × 4.127/8 + 2 bytes × LoRA params) "
        "+ 2 bytes × other parameters.",
    )


def check_ex_10_4(answer) -> bool:
    """The ``result`` dict of a 3-rank ``launch``: uneven shards, padding, predicted communication."""
    from ..distributed import RunSettings, build_qlora
    from ..train import base_model

    if not isinstance(answer, dict) or not {
        "world_size",
        "rank_bytes",
        "settings",
        "comm_measured",
        "comm_predicted",
        "train_bpb",
    } <= set(answer):
        return report(
            False,
            "",
            "expected the dict that D.launch(3, ...) returns (world_size, rank_bytes, ...), "
            f"got {type(answer).__name__}",
        )
    if answer["world_size"] != 3 or len(answer["rank_bytes"]) != 3:
        return report(
            False,
            "",
            f"this run had {answer['world_size']} ranks; the exercise asks for 3 "
            "(and global_batch=12, which 3 divides).",
        )
    settings = RunSettings(**answer["settings"])
    if len(answer["train_bpb"]) != settings.steps:
        return report(
            False,
            "",
            f"{len(answer['train_bpb'])} losses for {settings.steps} steps: the run is incomplete.",
        )
    if answer["comm_measured"] != answer["comm_predicted"]:
        return report(
            False,
            "",
            f"measured communication {answer['comm_measured']} differs from the prediction "
            f"{answer['comm_predicted']}: this is not an unmodified result.",
        )
    model = build_qlora(base_model(progress=False)[1]["path"], settings)
    whole = sum(p.numel() * p.element_size() for p in model.parameters())
    held = [b["parameters"] for b in answer["rank_bytes"]]
    if any(h < whole / 3 for h in held) or sum(held) < whole:
        return report(
            False,
            "",
            f"the ranks hold {held} bytes, less than a third each of the whole {whole:,}: "
            "the result does not come from this model.",
        )
    padding = sum(held) - whole
    if padding > 0.05 * whole:
        return report(
            False,
            "",
            f"{padding:,} bytes of padding is far more than the shards need: not a real run.",
        )
    return report(
        True,
        f"ranks hold {', '.join(f'{h:,}' for h in held)} parameter bytes (whole: {whole:,}); "
        f"together {padding:,} bytes more: FSDP2's padding of dim-0 sizes that 3 does not divide. "
        "The communication is the predicted one.",
        "",
    )
