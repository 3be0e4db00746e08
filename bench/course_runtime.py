"""Course runtime: every notebook executed top to bottom, at test size and at learner size.

    python bench/course_runtime.py                 # both sizes, all notebooks
    python bench/course_runtime.py --sizes test    # test mode only (what CI runs)
    python bench/course_runtime.py 03 04           # some notebooks

Each notebook runs in a fresh kernel (nbclient), with the base model already cached, so the
times are what a learner sees on the second run of the day. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def run_notebook(path: Path, fast: bool, timeout: int = 1200) -> float:
    """Seconds to execute ``path`` in a fresh kernel, with LORAKIT_FAST set or unset."""
    nb = nbformat.read(path, as_version=4)
    env_before = dict(os.environ)
    os.environ["MPLBACKEND"] = "Agg"
    if fast:
        os.environ["LORAKIT_FAST"] = "1"
    else:
        os.environ.pop("LORAKIT_FAST", None)
    try:
        start = time.perf_counter()
        NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        ).execute()
        return time.perf_counter() - start
    finally:
        os.environ.clear()
        os.environ.update(env_before)


def warm_cache(fast: bool) -> None:
    """Train (or find) the cached base model first, so no notebook pays for pretraining."""
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop("LORAKIT_FAST", None)
    if fast:
        env["LORAKIT_FAST"] = "1"
    import subprocess

    subprocess.run(
        [sys.executable, "-c", "from lorakit.train import base_model; base_model()"],
        env=env,
        check=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="notebook number prefixes, e.g. 03 04")
    parser.add_argument("--sizes", default="test,learner", help="test, learner or test,learner")
    args = parser.parse_args(argv)
    sizes = args.sizes.split(",")
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        paths = [p for p in paths if p.name[:2] in args.only]
    for size in sizes:
        warm_cache(fast=(size == "test"))
    rows, failures = [], []
    for path in paths:
        times = {}
        for size in sizes:
            try:
                times[size] = run_notebook(path, fast=(size == "test"))
            except (
                CellExecutionError
            ) as e:  # report and go on: one failure should not hide the rest
                times[size] = float("nan")
                failures.append(f"{path.stem} ({size}): {str(e).strip().splitlines()[-1][:300]}")
            print(f"{path.stem:28} {size:8} {times[size]:7.1f} s", file=sys.stderr, flush=True)
        rows.append((path.stem, times))
    cores = os.cpu_count()
    print(
        f"\nCourse runtime on {platform.machine()} with {cores} cores, {platform.python_version()}, "
        f"{date.today()} (base model cached; fresh kernel per notebook)\n"
    )
    print("| notebook | " + " | ".join(f"{s} size (s)" for s in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for name, times in rows:
        print(f"| {name} | " + " | ".join(f"{times[s]:.0f}" for s in sizes) + " |")
    total = {s: sum(t[s] for _, t in rows) for s in sizes}
    print("| **all** | " + " | ".join(f"**{total[s]:.0f}**" for s in sizes) + " |")
    for failure in failures:
        print(f"FAILED {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
