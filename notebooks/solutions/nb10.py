"""Worked solutions for notebook 10 (FSDP-QLoRA). Each ``solve_ex_10_M()`` returns the answer."""

import dataclasses
import tempfile

from lorakit import distributed as D
from lorakit.memory import (
    PAPER_DTYPES,
    estimate_memory,
    lora_parameter_count,
    parameter_counts,
    quantized_bits_per_parameter,
)
from lorakit.train import base_model


def solve_ex_10_1() -> float:
    one = estimate_memory(
        "70B", "qlora", r=64, batch_size=1, seq_len=2048, **PAPER_DTYPES
    )  # bf16, as Answer.AI
    counts = parameter_counts("70B")
    root = 2 * counts["other"] / 1e9  # 16-bit embeddings, norms, head: kept gathered, whole
    sharded = (one["weights"] - root + one["lora"] + one["gradients"] + one["optimizer"]) / 4
    n_layers = 80
    layer = (
        counts["linear"] / n_layers * quantized_bits_per_parameter() / 8 / 1e9
        + one["lora"] / n_layers
    )
    return (
        sharded + root + 2 * layer + one["activations"]
    )  # == D.fsdp_qlora_memory("70B", 4, False, batch_size=1)["total"]


def solve_ex_10_2() -> tuple[float, float]:
    """With offload the host keeps every shard; the GPU keeps the two gathered layers and activations."""
    one = estimate_memory("70B", "qlora", r=64, batch_size=1, seq_len=2048, **PAPER_DTYPES)
    n_layers = 80
    counts = parameter_counts("70B")
    layer = (
        counts["linear"] / n_layers * quantized_bits_per_parameter() / 8 / 1e9
        + one["lora"] / n_layers
    )
    root = 2 * counts["other"] / 1e9  # gathered from forward to backward, on the GPU
    gpu = 2 * layer + root + one["activations"]
    cpu = one["weights"] + one["lora"] + one["gradients"] + one["optimizer"]  # 4 shards of 1/4 each
    return gpu, cpu  # == D.fsdp_qlora_memory("70B", 4, True, batch_size=1)["total"], [...]["cpu"]


def solve_ex_10_3() -> float:
    counts = parameter_counts("70B")
    layers = counts["linear"] * quantized_bits_per_parameter() / 8 + 2 * lora_parameter_count(
        "70B", 64
    )
    root = 2 * counts["other"]
    return (
        2 * layers + root
    ) / 1e9  # layers before forward and again before backward; the root once


def solve_ex_10_4() -> dict:
    settings = dataclasses.replace(D.run_settings(), global_batch=12)
    base = base_model(progress=False)[1]["path"]
    return D.launch(
        3, tempfile.mkdtemp(prefix="lorakit-ex10-4-"), settings, base=base, timeout=600, echo=False
    )
