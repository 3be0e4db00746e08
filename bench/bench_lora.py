"""LoRA speed on the CPU, measured against the references in the same run (issue 7).

1. A LoRA training step (forward, backward, AdamW) on the course GPT: lorakit vs PEFT on the
   same model, same weights, same batch.                                   Goal: ratio <= 1.05.
2. Inference: merged LoRA vs a plain Linear model with the same (merged) weights. Goal: 1.00.
   And the overhead of the unmerged LoRA path.

Each number is a median over ``--repeats`` runs (>= 5) of ``--steps`` steps, the contenders
interleaved so that load on a shared machine hits both alike. Correctness is checked (same
loss, same outputs) before anything is timed; timings are printed, never asserted.

    python bench/bench_lora.py            # learner-size GPT (4 layers, d=128, ctx 128, batch 32)
    python bench/bench_lora.py --smoke    # tiny, a few seconds: checks that the script works
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lorakit.lora import inject_lora, lora_layers, merge_lora, remove_lora  # noqa: E402
from lorakit.model import GPT, GPTConfig  # noqa: E402


def make_models(cfg: GPTConfig, targets: list[str], r: int, alpha: float):
    """(lorakit model, PEFT model) on identical base weights with identical A and B."""
    import peft

    torch.manual_seed(0)
    base = GPT(cfg).eval()
    ours = copy.deepcopy(base)
    inject_lora(ours, targets, r=r, alpha=alpha)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = peft.get_peft_model(
            copy.deepcopy(base), peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=targets)
        )
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, layer in lora_layers(ours).items():
            layer.B.copy_(torch.randn(layer.B.shape, generator=gen) * 0.02)
            peft_layer = ref.base_model.model.get_submodule(name)
            peft_layer.lora_A["default"].weight.copy_(layer.A.T)
            peft_layer.lora_B["default"].weight.copy_(layer.B.T)
    return base, ours, ref


def stepper(model, x, y):
    """One training step as a closure: forward, backward, AdamW on the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    model.train()

    def step():
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def timed(fn, steps: int) -> float:
    """Seconds per call of ``fn``, averaged over ``steps`` calls."""
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def medians(fns: dict, steps: int, repeats: int) -> dict[str, float]:
    """Median seconds per call for each function, the functions interleaved in every repeat."""
    for fn in fns.values():  # warm-up
        fn()
    runs = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            runs[k].append(timed(fn, steps))
    return {k: statistics.median(v) for k, v in runs.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks the script, times nothing useful"
    )
    ap.add_argument(
        "--repeats", type=int, default=7, help="timed runs per contender (>= 5 for real numbers)"
    )
    ap.add_argument("--steps", type=int, default=10, help="steps per timed run")
    ap.add_argument("--targets", default="q_proj,v_proj", help="comma-separated LoRA targets")
    ap.add_argument("--r", type=int, default=8)
    args = ap.parse_args(argv)
    if args.smoke:
        cfg, batch, repeats, steps = GPTConfig(context=16, n_layer=2, n_head=2, d_model=32), 4, 2, 2
    else:
        cfg, batch, repeats, steps = (
            GPTConfig(context=128, n_layer=4, n_head=4, d_model=128),
            32,
            args.repeats,
            args.steps,
        )
    targets = [t for t in args.targets.split(",") if t]
    gen = torch.Generator().manual_seed(2)
    x = torch.randint(0, cfg.vocab_size, (batch, cfg.context), generator=gen)
    y = torch.randint(0, cfg.vocab_size, (batch, cfg.context), generator=gen)

    base, ours, ref = make_models(cfg, targets, args.r, 2.0 * args.r)
    # correctness first: same loss on the same batch, before and after one optimizer step
    with torch.no_grad():
        l_ours, l_ref = ours(x, y)[1].item(), ref(x, y)[1].item()
    assert abs(l_ours - l_ref) < 1e-5, f"lorakit and PEFT losses differ: {l_ours} vs {l_ref}"
    step_ours, step_ref = stepper(ours, x, y), stepper(ref, x, y)
    a, b = step_ours().item(), step_ref().item()
    assert abs(a - b) < 1e-5, f"first-step losses differ: {a} vs {b}"
    a, b = step_ours().item(), step_ref().item()
    assert abs(a - b) < 1e-4, f"second-step losses differ after the same AdamW step: {a} vs {b}"

    print(
        f"# bench_lora  {datetime.date.today()}  {platform.machine()} {platform.processor() or ''}  "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"# GPT {cfg.n_layer} layers, d={cfg.d_model}, ctx {cfg.context}, batch {batch}; "
        f"LoRA r={args.r} on {targets}; median of {repeats} runs x {steps} steps"
    )
    t = medians({"lorakit": step_ours, "peft": step_ref}, steps, repeats)
    print(
        f"training step   lorakit / PEFT = {t['lorakit'] / t['peft']:.3f}   "
        f"(lorakit {t['lorakit'] * 1e3:.1f} ms, PEFT {t['peft'] * 1e3:.1f} ms; goal <= 1.05)"
    )

    # inference: merged LoRA vs the plain model holding the same merged weights
    ours.eval()
    with torch.no_grad():
        y_unmerged = ours(x)[0]
    plain = copy.deepcopy(ours)
    remove_lora(plain, merge=True)
    merged = copy.deepcopy(ours)
    merge_lora(merged)
    with torch.no_grad():
        y_plain, y_merged = plain(x)[0], merged(x)[0]
    assert torch.equal(y_plain, y_merged), (
        "merged LoRA must compute exactly what the plain model does"
    )
    err = (y_merged - y_unmerged).abs().max().item()
    assert err < 1e-4, f"merged and unmerged outputs differ by {err}"

    def forward(model):
        def fn():
            with torch.no_grad():
                model(x)

        return fn

    t = medians(
        {"plain": forward(plain), "merged": forward(merged), "unmerged": forward(ours)},
        steps,
        repeats,
    )
    print(
        f"inference       merged / plain = {t['merged'] / t['plain']:.3f}   "
        f"(merged {t['merged'] * 1e3:.2f} ms, plain {t['plain'] * 1e3:.2f} ms; goal 1.00)"
    )
    print(
        f"inference     unmerged / plain = {t['unmerged'] / t['plain']:.3f}   "
        f"(unmerged {t['unmerged'] * 1e3:.2f} ms: the cost of the separate x A B path)"
    )
    print(f"# max |merged - unmerged| logits = {err:.2e}")
    del base
    return 0


if __name__ == "__main__":
    sys.exit(main())
