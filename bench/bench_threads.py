"""How torch's threads should wait on a busy laptop: measured, idle and beside a CPU-bound neighbour.

PyTorch's CPU kernels run on OpenMP threads. By default, a thread that finishes its share of a
parallel region *spins* (busy-waits) for the next one. On an idle machine that saves a wake-up;
when another program holds a core, the spinning threads and the program fight for it, and every
parallel region waits for a time slice. ``OMP_WAIT_POLICY=PASSIVE`` makes waiting threads sleep
(GNU OpenMP, Linux; LLVM/Intel OpenMP on macOS/Windows read it too, with ``KMP_BLOCKTIME=0`` as
their own spelling). Fewer threads is the other lever.

Each setting runs in a fresh process (OpenMP reads its environment once, when torch loads):

- ``spin (torch default)``: nothing set, threads = cores (what a participant's own ``jupyter`` gets);
- ``PASSIVE``: ``OMP_WAIT_POLICY=PASSIVE KMP_BLOCKTIME=0``, threads = cores (what ``make`` exports);
- ``1 thread``: ``OMP_NUM_THREADS=1`` (spinning, but alone);
- ``PASSIVE, free cores``: PASSIVE and threads = the cores idle when the process starts
  (sampled from /proc/stat for 0.3 s; all cores elsewhere).

on two pieces of work the course does all the time: a training step of the course GPT at learner
size (4 layers, d = 128, context 128, batch 32, full fine-tuning with AdamW) and NF4
quantize + dequantize of a 4096 x 4096 float32 weight (``lorakit.quant``), each a median of
several runs after a warm-up, under three conditions: the machine as it is ("idle": its load
average is printed beside every number, because a shared machine is never really idle), and with
1 and with <cores> CPU-bound neighbour processes that this script starts and ends by PID.

    python bench/bench_threads.py            # writes nothing: `make bench` tees it to bench/results/cpu-threads.txt
    python bench/bench_threads.py --smoke    # tiny sizes, one condition: checks the script runs

Times are printed, never asserted. Read ratios within one condition (the same neighbours).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARS = (
    "OMP_WAIT_POLICY",
    "KMP_BLOCKTIME",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "GOMP_SPINCOUNT",
)
SETTINGS = ["spin (torch default)", "PASSIVE", "1 thread", "PASSIVE, free cores"]


def load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def free_cores(seconds: float = 0.3) -> int:
    """Cores idle right now, from /proc/stat (Linux); every core elsewhere."""
    cores = os.cpu_count() or 1
    try:

        def sample():
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
            return fields[3] + fields[4], sum(fields)  # idle + iowait, total

        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
        return max(1, round(cores * (idle1 - idle0) / max(1, total1 - total0)))
    except (OSError, ValueError, IndexError):
        return cores


def setting_env(name: str) -> dict[str, str]:
    """The environment a child runs with: this process's, the thread variables replaced."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    if name.startswith("PASSIVE"):
        env.update(OMP_WAIT_POLICY="PASSIVE", KMP_BLOCKTIME="0")
    if name == "1 thread":
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if name == "PASSIVE, free cores":
        env["LORAKIT_BENCH_FREE_CORES"] = "1"
    return env


# ---------------------------------------------------------------- the child: one setting, one work
def child(work: str, smoke: bool, runs: int) -> dict:
    if os.environ.get("LORAKIT_BENCH_FREE_CORES"):
        os.environ["OMP_NUM_THREADS"] = str(free_cores())
    import torch  # after OMP_NUM_THREADS is final

    sys.path.insert(0, str(ROOT))
    if work == "gpt":
        from lorakit.model import GPT, GPTConfig

        cfg = GPTConfig(n_layer=2, d_model=32, n_head=2, context=32) if smoke else GPTConfig()
        torch.manual_seed(0)
        model = GPT(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x, y = torch.randint(
            0,
            cfg.vocab_size,
            (2, 8 if smoke else 32, cfg.context),
            generator=torch.Generator().manual_seed(1),
        )

        def step():
            _, loss = model(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    else:
        from lorakit import quant

        w = torch.randn(
            256 if smoke else 4096,
            256 if smoke else 4096,
            generator=torch.Generator().manual_seed(0),
        )

        def step():
            quant.dequantize_4bit(quant.quantize_4bit(w, "nf4", 64))

    step()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {
        "median_s": statistics.median(times),
        "runs": runs,
        "threads": torch.get_num_threads(),
        "load": load(),
    }


def run_child(setting: str, work: str, smoke: bool, runs: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", work, "--runs", str(runs)]
        + (["--smoke"] if smoke else []),
        env=setting_env(setting),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if out.returncode:
        raise RuntimeError(f"{setting} / {work} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the parent
def neighbours(n: int) -> list[subprocess.Popen]:
    """n CPU-bound processes (a Python busy loop each), ended by PID in main's finally."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=["gpt", "nf4"])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument(
        "--busy", default=None, help="neighbour counts, e.g. 0,1,2 (default 0,1,<cores>)"
    )
    args = parser.parse_args(argv)
    runs = args.runs or (2 if args.smoke else 5)
    if args.child:
        print(json.dumps(child(args.child, args.smoke, runs)))
        return 0
    import torch

    cores = os.cpu_count() or 1
    busy = [int(b) for b in (args.busy or ("0" if args.smoke else f"0,1,{cores}")).split(",")]
    print(
        f"bench_threads {datetime.date.today()}: {platform.machine()} {cores} cores, {platform.system()}, "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )
    print(
        f"this process ran with OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')} "
        f"KMP_BLOCKTIME={os.environ.get('KMP_BLOCKTIME', '(unset)')} "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')}; each setting below runs in "
        "its own process with exactly the variables it names"
    )
    print(
        f"work: gpt = one training step, course GPT {'(smoke size)' if args.smoke else '4 layers d=128 ctx 128 batch 32'}, "
        f"full fine-tuning, AdamW; nf4 = lorakit NF4 quantize+dequantize {'256²' if args.smoke else '4096² float32'}; "
        f"median of {runs} runs after a warm-up; load = 1-min load average when the run ended"
    )
    rows = []
    for n in busy:
        procs = neighbours(n)
        try:
            time.sleep(1.0 if n else 0)
            print(
                f"\n== {n} CPU-bound neighbour process(es){' (the machine as it is: shared, not idle)' if n == 0 else ''}"
            )
            for work in ("gpt", "nf4"):
                base = None
                for setting in SETTINGS:
                    r = run_child(setting, work, args.smoke, runs)
                    base = base or r["median_s"]
                    rows.append({"neighbours": n, "work": work, "setting": setting, **r})
                    print(
                        f"  {work:<4} {setting:<22} {1e3 * r['median_s']:9.1f} ms   "
                        f"x{r['median_s'] / base:5.2f} vs spin   threads {r['threads']}   load {r['load']:.2f}",
                        flush=True,
                    )
        finally:
            for p in procs:  # ended by PID, never by name
                p.kill()
                p.wait()
    print("\nsummary (median ms; ratio to the torch default in the same condition):")
    for work in ("gpt", "nf4"):
        for n in busy:
            cells = {r["setting"]: r for r in rows if r["work"] == work and r["neighbours"] == n}
            spin = cells[SETTINGS[0]]["median_s"]
            print(
                f"  {work:<4} {n} neighbour(s): "
                + "; ".join(
                    f"{s} {1e3 * c['median_s']:.0f} ({c['median_s'] / spin:.2f})"
                    for s, c in cells.items()
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
