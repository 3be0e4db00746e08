"""Render the course notebooks to static HTML (figures included) for reading without running anything.

`make html` runs this: each notebook is executed top to bottom in a fresh kernel, from its own
folder, and written with its outputs to notebooks/_build/html/NN_name.html (git-ignored), plus an
index.html linking them. The source notebooks are never modified (commit-ready notebooks keep no
outputs). Figures are PNGs embedded in the HTML as data: URLs, so each file stands alone.

    python scripts/render_html.py                     # every notebooks/NN_*.ipynb, learner size
    python scripts/render_html.py --fast              # test mode (LORAKIT_FAST=1): quick, smaller runs
    python scripts/render_html.py notebooks/00_start_here.ipynb --out /tmp/html

Sliders are saved as widget state; they display when the page can load the ipywidgets
JavaScript from its CDN, and each one has a static figure drawn just before it in any case.
"""
from __future__ import annotations

import argparse
import html
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "notebooks" / "_build" / "html"
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def set_environment(fast: bool) -> None:
    """Environment the kernels inherit. The inline matplotlib backend is forced because a
    non-interactive one (MPLBACKEND=Agg, as `make test` sets) would drop every figure."""
    os.environ["MPLBACKEND"] = INLINE_BACKEND
    if fast:
        os.environ["LORAKIT_FAST"] = "1"
        os.environ.setdefault("LORAKIT_CACHE", str(REPO / ".cache" / "test"))


def title_of(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return ""


def render(path: Path, out_dir: Path, timeout: int):
    """Execute one notebook (cwd = its folder) and write its HTML. Returns (html_path, nb, error)."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import CellExecutionError, ExecutePreprocessor

    nb = nbformat.read(path, as_version=4)
    runner = ExecutePreprocessor(timeout=timeout, kernel_name="python3", store_widget_state=True)
    error = None
    try:
        runner.preprocess(nb, {"metadata": {"path": str(path.parent)}})
    except CellExecutionError as e:   # still write what ran, so the failure can be read too
        error = str(e).splitlines()[-1] if str(e) else repr(e)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    target = out_dir / (path.stem + ".html")
    target.write_text(body, encoding="utf-8")
    return target, nb, error


def write_index(out_dir: Path, rows: list[tuple[str, str, str]]) -> Path:
    items = "\n".join(f'<li><a href="{html.escape(href)}">{html.escape(name)}</a> {html.escape(title)}</li>'
                      for href, name, title in rows)
    index = out_dir / "index.html"
    index.write_text("<!doctype html>\n<meta charset='utf-8'>\n<title>lorakit notebooks</title>\n"
                     "<h1>lorakit: LoRA and QLoRA from first principles</h1>\n"
                     "<p>Executed copies of the course notebooks, for reading without running anything.</p>\n"
                     f"<ol>\n{items}\n</ol>\n", encoding="utf-8")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to render (default: every notebooks/NN_*.ipynb)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--fast", action="store_true",
                        help="test mode (LORAKIT_FAST=1, cache in .cache/test): smaller, quicker runs")
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell (default 900)")
    args = parser.parse_args(argv)

    paths = args.notebooks or sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    if not paths:
        parser.error("no notebooks/NN_*.ipynb found to render")
    set_environment(args.fast)
    args.out.mkdir(parents=True, exist_ok=True)

    rows, failed = [], []
    for path in paths:
        start = time.monotonic()
        target, nb, error = render(path.resolve(), args.out, args.timeout)
        took = time.monotonic() - start
        rows.append((target.name, path.stem, title_of(nb)))
        if error:
            failed.append(path.name)
            print(f"FAILED {path.name} after {took:.1f} s: {error}  (partial HTML in {target})", flush=True)
        else:
            print(f"ok     {path.name} -> {target} ({took:.1f} s)", flush=True)
    index = write_index(args.out, rows)
    print(f"index: {index}")
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
