"""Worked solutions for notebook 07 (double quantization)."""

from lorakit import quant


def solve_ex_7_1() -> float:
    """4 bits + one uint8 per 128 values + one float32 per 256·128 values."""
    return 4 + 8 / 128 + 32 / (128 * 256)


def solve_ex_7_2() -> float:
    """(0.5 − 0.126953) bits/param saved × 7e9 parameters, in GB."""
    saved_bits = 32 / 64 - (8 / 64 + 32 / (64 * 256))
    return 7e9 * saved_bits / 8 / 1e9


def solve_ex_7_3() -> float:
    """The dynamic map's value for code 200, scaled by absmax2, plus the offset."""
    return float(quant.dynamic_map()[200]) * 0.05 + 0.1


def solve_ex_7_4() -> set:
    """Loop over the calculator with its defaults, the course's T4 path (float32 A, B and compute).
    Result: 7B and 13B with QLoRA only. LoRA on a 16-bit 7B base fits only with the paper's 16-bit
    adapters and activations (PAPER_DTYPES): 13.5 GB of frozen 16-bit weights leave almost no room."""
    from lorakit.memory import MODEL_SHAPES, estimate_memory

    return {
        (model, method)
        for model in MODEL_SHAPES
        for method in ("full", "lora", "qlora")
        if estimate_memory(model, method, r=64, batch_size=1, seq_len=512)["total"] < 16
    }
