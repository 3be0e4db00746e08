"""Should ``lorakit.fast.ENABLED`` be on by default? Measured where the course uses it (issue 25).

``fast`` gives the same bits as ``quant``'s readable path (tests/test_quant_fast.py), faster; the
readable path is what a learner steps through with a debugger (notebook 06 §5). Two pieces of
work, each with the switch on and off, interleaved (on, off, off, on, ...) so that a busy
neighbour hits both alike, medians printed with the load average:

- a QLoRA training step of the course GPT at learner size (the base model, NF4 + double
  quantization on every linear layer, LoRA r = 16, AdamW, batch 16 x context): what notebooks
  08 and 10 run;
- NF4 + double quantization then dequantization of one weight, at three sizes: the course GPT's
  up_proj (512 x 128), SmolLM2-360M's MLP (960 x 2560: notebook 09's real model, quantized
  weight by weight on load) and a 7B model's projection (4096 x 4096).

Run: ``python bench/bench_fast_default.py`` (``make bench`` writes bench/results/cpu-fast-default.txt).
"""

import platform
import statistics
import time

import torch

from lorakit import fast
from lorakit.data import get_batch, load_splits
from lorakit.qlora import prepare_qlora
from lorakit.quant import dequantize_4bit, quantize_4bit
from lorakit.train import base_model, set_seed


def load() -> str:
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def qlora_step_times(reps: int = 8, steps: int = 3) -> dict[bool, list[float]]:
    model, _ = base_model(progress=False)
    set_seed(0)
    model = prepare_qlora(model, "all-linear", r=16, alpha=16)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    train, _ = load_splits("docs", 400_000)
    gen = torch.Generator().manual_seed(0)

    def step():
        x, y = get_batch(train, 16, model.cfg.context, gen)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up
        step()
    times = {True: [], False: []}
    for rep in range(reps):
        for on in (rep % 2 == 0, rep % 2 == 1):
            fast.ENABLED = on
            start = time.perf_counter()
            for _ in range(steps):
                step()
            times[on].append((time.perf_counter() - start) / steps)
    return times


SHAPES = [
    (512, 128),
    (960, 2560),
    (4096, 4096),
]  # course GPT's up_proj, SmolLM2-360M's MLP, a 7B projection


def quant_times(shape: tuple[int, int]) -> dict[bool, float]:
    """Median seconds of quantize (NF4 + double quantization) then dequantize, switch on and off."""
    W = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    reps = 4 if W.numel() > 4_000_000 else 20
    times = {True: [], False: []}
    for rep in range(2 * reps):
        on = rep % 4 in (0, 3)  # on, off, off, on, ...
        fast.ENABLED = on
        start = time.perf_counter()
        dequantize_4bit(quantize_4bit(W, "nf4", 64, double_quant=True))
        times[on].append(time.perf_counter() - start)
    return {on: statistics.median(ts) for on, ts in times.items()}


def main() -> None:
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, "
        f"load average at start {load()}"
    )
    steps = qlora_step_times()
    med = statistics.median
    print(
        "work                                        fast.ENABLED=True   fast.ENABLED=False   off ÷ on"
    )
    on, off = med(steps[True]) * 1e3, med(steps[False]) * 1e3
    print(f"QLoRA step, course GPT at learner size (ms) {on:17.1f}   {off:18.1f}   {off / on:8.2f}")
    for shape in SHAPES:
        t = quant_times(shape)
        what = f"quantize + dequantize {shape[0]}x{shape[1]} (ms)"
        print(
            f"{what:43} {t[True] * 1e3:17.2f}   {t[False] * 1e3:18.2f}   {t[False] / t[True]:8.2f}"
        )
    print(f"load average at end {load()}")
    fast.ENABLED = True


if __name__ == "__main__":
    main()
