"""Should ``lorakit.fast.ENABLED`` be on by default? Measured where the course uses it (issue 25).

``fast`` gives the same bits as ``quant``'s readable path (tests/test_quant_fast.py), faster; the
readable path is what a learner steps through with a debugger (notebook 06 §5). Two pieces of
work, each with the switch on and off, interleaved (on, off, off, on, ...) so that a busy
neighbour hits both alike, medians printed with the load average:

- a QLoRA training step of the course GPT at learner size (the base model, NF4 + double
  quantization on every linear layer, LoRA r = 16, AdamW, batch 16 x context): what notebooks
  08 and 10 run;
- NF4 + double quantization of a 4096 x 4096 float32 weight, quantize and dequantize: the size of
  one projection of a 7B model, what notebook 09's real-LLM path does to every weight on load.

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


def quant_times(reps: int = 4) -> tuple[dict, dict]:
    W = torch.randn(4096, 4096, generator=torch.Generator().manual_seed(0))
    qt, dt = {True: [], False: []}, {True: [], False: []}
    for rep in range(reps):
        for on in (rep % 2 == 0, rep % 2 == 1):
            fast.ENABLED = on
            start = time.perf_counter()
            q = quantize_4bit(W, "nf4", 64, double_quant=True)
            qt[on].append(time.perf_counter() - start)
            start = time.perf_counter()
            dequantize_4bit(q)
            dt[on].append(time.perf_counter() - start)
    return qt, dt


def main() -> None:
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, "
        f"load average at start {load()}"
    )
    steps = qlora_step_times()
    qt, dt = quant_times()
    med = statistics.median
    print(
        "work                                   fast.ENABLED=True   fast.ENABLED=False   off ÷ on"
    )
    print(
        f"QLoRA step, course GPT (ms)            {med(steps[True]) * 1e3:17.1f}   {med(steps[False]) * 1e3:18.1f}"
        f"   {med(steps[False]) / med(steps[True]):8.2f}"
    )
    print(
        f"quantize 4096x4096 NF4+DQ (s)          {med(qt[True]):17.3f}   {med(qt[False]):18.3f}"
        f"   {med(qt[False]) / med(qt[True]):8.2f}"
    )
    print(
        f"dequantize 4096x4096 (s)               {med(dt[True]):17.3f}   {med(dt[False]):18.3f}"
        f"   {med(dt[False]) / med(dt[True]):8.2f}"
    )
    print(f"load average at end {load()}")
    fast.ENABLED = True


if __name__ == "__main__":
    main()
