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

import sys
from pathlib import Path

from notebook_runner import REPO, arguments, execute, finish, run_all, set_environment, write_index

DEFAULT_OUT = REPO / "notebooks" / "_build" / "html"


def title_of(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return ""


def build(path: Path, out_dir: Path, timeout: int):
    """Execute one notebook and write its HTML (figures embedded; widgets saved as state)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(path, as_version=4)
    error = execute(nb, path, timeout)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    target = out_dir / (path.stem + ".html")
    target.write_text(body, encoding="utf-8")
    return target, (target.name, path.stem, title_of(nb)), error, ""


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__.splitlines()[0], DEFAULT_OUT, argv)
    set_environment(args.fast)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, failed = run_all(args.paths, lambda path: build(path, args.out, args.timeout))
    write_index(
        args.out,
        "lorakit notebooks",
        "lorakit: LoRA and QLoRA from first principles",
        "Executed copies of the course notebooks, for reading without running anything.",
        rows,
    )
    return finish(failed)


if __name__ == "__main__":
    sys.exit(main())
