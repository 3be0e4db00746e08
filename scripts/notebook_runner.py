"""What `make html` and `make slides` share: the command line, running each notebook, the index.

Both scripts execute every course notebook top to bottom in a fresh kernel (cwd = its folder),
write one file per notebook and an index.html linking them, say `ok`/`FAILED` per notebook with
its time, and exit 1 if any failed (a failed notebook still gets its partial file, so the error
can be read). Only what each one *writes* differs: `render_html.build` and `make_slides.build`.
"""
from __future__ import annotations

import argparse
import html
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def arguments(description: str, default_out: Path, argv: list[str] | None, extra=None) -> argparse.Namespace:
    """Parse `notebooks... --out --fast --timeout` (+ the script's ``extra(parser)`` options);
    ``args.paths`` holds the notebooks, checked to exist."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to use (default: every notebooks/NN_*.ipynb)")
    parser.add_argument("--out", type=Path, default=default_out, help=f"output folder (default {default_out})")
    parser.add_argument("--fast", action="store_true",
                        help="test mode (LORAKIT_FAST=1, cache in .cache/test): smaller, quicker runs")
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell (default 900)")
    if extra:
        extra(parser)
    args = parser.parse_args(argv)
    args.paths = args.notebooks or sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    missing = [str(p) for p in args.paths if not p.is_file()]
    if missing or not args.paths:
        parser.error(f"no such notebook: {', '.join(missing) or 'notebooks/NN_*.ipynb'}")
    return args


def set_environment(fast: bool) -> None:
    """Environment the kernels inherit. The inline matplotlib backend is forced because a
    non-interactive one (MPLBACKEND=Agg, as `make test` sets) would drop every figure."""
    os.environ["MPLBACKEND"] = INLINE_BACKEND
    if fast:
        os.environ["LORAKIT_FAST"] = "1"
        os.environ.setdefault("LORAKIT_CACHE", str(REPO / ".cache" / "test"))


def execute(nb, path: Path, timeout: int, store_widget_state: bool = False) -> str | None:
    """Run ``nb`` in place (cwd = the notebook's folder); the last line of a cell's error, or None."""
    from nbconvert.preprocessors import CellExecutionError, ExecutePreprocessor

    runner = ExecutePreprocessor(timeout=timeout, kernel_name="python3", store_widget_state=store_widget_state)
    try:
        runner.preprocess(nb, {"metadata": {"path": str(path.parent)}})
    except (CellExecutionError, TimeoutError, RuntimeError) as e:  # a failing cell, a hung one, a dead kernel
        return (str(e).strip().splitlines() or [repr(e)])[-1]
    return None


def run_all(paths: list[Path], build) -> tuple[list, list[str]]:
    """``build(path) -> (target, row, error, note)`` for each notebook, reporting as it goes.

    Returns the rows (for the index) and the names of the notebooks that failed."""
    rows, failed = [], []
    for path in paths:
        start = time.monotonic()
        target, row, error, note = build(path.resolve())
        took = time.monotonic() - start
        rows.append(row)
        if error:
            failed.append(path.name)
            print(f"FAILED {path.name} after {took:.1f} s: {error}  (partial output in {target})", flush=True)
        else:
            print(f"ok     {path.name} -> {target} ({note}{took:.1f} s)", flush=True)
    return rows, failed


def write_index(out_dir: Path, title: str, heading: str, intro: str, items: list[tuple[str, str, str]]) -> Path:
    """out_dir/index.html: an ordered list of (href, name, text after the link)."""
    lines = "\n".join(f'<li><a href="{html.escape(href)}">{html.escape(name)}</a> {html.escape(after)}</li>'
                      for href, name, after in items)
    index = out_dir / "index.html"
    index.write_text(f"<!doctype html>\n<meta charset='utf-8'>\n<title>{html.escape(title)}</title>\n"
                     f"<h1>{html.escape(heading)}</h1>\n<p>{intro}</p>\n<ol>\n{lines}\n</ol>\n", encoding="utf-8")
    print(f"index: {index}")
    return index


def finish(failed: list[str]) -> int:
    """The exit code: 1 (and the names, on stderr) if any notebook failed."""
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
