"""Turn the course notebooks into reveal.js slide decks that work with no network (`make slides`).

    python scripts/make_slides.py [--fast | --no-execute] [--out DIR] [notebooks ...]

The notebooks carry no slide metadata; it is added here, at conversion time, to a copy:
- the title cell and every `## N. Section` (also Summary, Exercises, References) start a slide;
- `###` headings and each exercise's question start a sub-slide (reveal.js: press the down arrow);
- a section that would not fit on a screen is cut into sub-slides (a figure counts as a screenful
  of lines, see `HEIGHT_BUDGET`);
- code longer than `LONG_CODE` lines is folded away (its input hidden, its output shown);
- the Colab install cell and the exercise answer cells (`answer = None` ... `check_ex_`) are
  skipped: the decks show the questions, the solutions stay in notebooks/solutions/;
- the Colab badge is dropped (an image from the internet) and live widgets are dropped (a deck
  has no kernel; the static figure drawn just before each slider stays).

Figures come from running the notebooks first (like `make html`; `--fast` = test-mode sizes).
reveal.js 4.6.0 and MathJax 3.2.2 come from the npm registry (`npm pack`, once; the tarballs are
kept in .cache/npm) into DIR/_assets/, which the decks reference by a relative path: the whole
DIR can be copied to a USB stick and opened from there with a browser and no internet.
Writes DIR/NN_name.slides.html and DIR/index.html (default DIR: notebooks/_build/slides/).
"""
from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from notebook_runner import REPO, arguments, execute, finish, run_all, set_environment, write_index

DEFAULT_OUT = REPO / "notebooks" / "_build" / "slides"
TEMPLATE_DIR = REPO / "scripts" / "slides_template"
NPM_CACHE = REPO / ".cache" / "npm"
# (npm package@version, files to keep: a path prefix inside the package)
ASSETS = {
    "reveal.js": ("reveal.js@4.6.0", ("dist/reveal.js", "dist/reveal.css", "dist/theme/white.css",
                                      "dist/theme/fonts/source-sans-pro/", "plugin/notes/", "LICENSE")),
    "mathjax": ("mathjax@3.2.2", ("es5/tex-chtml.js", "es5/output/chtml/fonts/woff-v2/", "LICENSE")),
}
ASSETS_DIR = "_assets"
LONG_CODE = 15         # code cells longer than this many lines are folded (input hidden)
HEIGHT_BUDGET = 30     # lines of content per (sub-)slide before a section is cut
FIGURE_LINES = 18      # how many lines a figure counts for
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
COLAB_BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)\s*")


# ---------------------------------------------------------------- slide metadata (pure functions)

def is_colab_install(cell) -> bool:
    return cell.cell_type == "code" and 'if "google.colab" in sys.modules:' in cell.source


def is_exercise_answer(cell) -> bool:
    return cell.cell_type == "code" and "check_ex_" in cell.source and "answer" in cell.source


def cell_height(cell) -> int:
    """A rough height in lines: source lines (folded code counts 0) plus outputs (a figure is
    FIGURE_LINES, text at most 10 lines)."""
    lines = 0 if "remove_input" in cell.metadata.get("tags", []) else len(cell.source.splitlines())
    for out in cell.get("outputs", []):
        data = out.get("data", {})
        if "image/png" in data or "image/svg+xml" in data:
            lines += FIGURE_LINES
        else:
            text = out.get("text", "") or "".join(data.get("text/plain", ""))
            lines += min(10, len(str(text).splitlines()))
    return lines


def split_markdown(cells) -> list:
    """Markdown cells cut before each `## `/`### ` heading and `**Exercise` paragraph, so that a
    heading inside a longer cell (Summary and Exercises often share one) still starts a slide."""
    import nbformat

    out = []
    for cell in cells:
        if cell.cell_type != "markdown":
            out.append(cell)
            continue
        parts, current = [], []
        for line in cell.source.splitlines():
            if current and re.match(r"(#{2,3} |\*\*Exercise)", line) and "".join(current).strip():
                parts.append(current)
                current = []
            current.append(line)
        parts.append(current)
        for lines in parts:
            piece = nbformat.v4.new_markdown_cell("\n".join(lines).strip("\n"))
            piece.metadata = copy.deepcopy(cell.metadata)
            out.append(piece)
    return out


def mark_slides(nb):
    """A copy of `nb` with `slideshow` metadata (and `remove_input` tags) set as the module
    docstring says; the source notebook is not touched."""
    nb = copy.deepcopy(nb)
    nb.cells = split_markdown(nb.cells)
    if "widgets" in nb.metadata:
        del nb.metadata["widgets"]
    used = 0
    first_markdown = True
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        text = cell.source.lstrip()
        if cell.cell_type == "markdown":
            cell.source = COLAB_BADGE.sub("", cell.source)
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", []) if WIDGET_MIME not in o.get("data", {})]
            if len(cell.source.splitlines()) > LONG_CODE and "remove_input" not in tags:
                tags.append("remove_input")
        height = cell_height(cell)
        if is_colab_install(cell) or is_exercise_answer(cell) or not cell.source.strip():
            kind = "skip"
        elif cell.cell_type == "markdown" and (first_markdown or text.startswith("## ")):
            kind, first_markdown = "slide", False
        elif cell.cell_type == "markdown" and (text.startswith("### ") or text.startswith("**Exercise")):
            kind = "subslide"
        elif used and used + height > HEIGHT_BUDGET:
            kind = "subslide"
        else:
            kind = "-"
        cell.metadata["slideshow"] = {"slide_type": kind}
        if kind in ("slide", "subslide"):
            used = height
        elif kind != "skip":
            used += height
    return nb


def expected_slides(nb) -> tuple[int, int]:
    """(slides, sub-slides in all) a deck of `mark_slides(nb)` has, read from its metadata."""
    kinds = [c.metadata.get("slideshow", {}).get("slide_type", "-") for c in nb.cells]
    visible = [k for k in kinds if k not in ("skip", "notes")]
    if visible:
        visible[0] = "slide"   # nbconvert makes the first visible cell a slide
    return visible.count("slide"), sum(k in ("slide", "subslide") for k in visible)


# ---------------------------------------------------------------- assets from the npm registry

def fetch_assets(out: Path) -> Path:
    """Put reveal.js and MathJax under out/_assets (npm pack once; tarballs cached in .cache/npm)."""
    target = out / ASSETS_DIR
    NPM_CACHE.mkdir(parents=True, exist_ok=True)
    for name, (spec, keep) in ASSETS.items():
        if (target / name / keep[0]).exists():
            continue
        tarball = NPM_CACHE / (spec.replace("@", "-") + ".tgz")
        if not tarball.exists():
            npm = shutil.which("npm")
            if npm is None:
                raise SystemExit(f"make_slides: {spec} is needed in {tarball} and `npm` is not installed "
                                 "to fetch it (install Node.js, or copy that file there)")
            run = subprocess.run([npm, "pack", spec, "--prefer-offline", "--silent",
                                  "--pack-destination", str(NPM_CACHE)], capture_output=True, text=True)
            if run.returncode != 0 or not tarball.exists():
                raise SystemExit(f"make_slides: `npm pack {spec}` failed ({run.returncode}): "
                                 f"{run.stderr.strip()[-500:]}")
        with tarfile.open(tarball) as tar:
            members = [m for m in tar.getmembers() if m.isfile()
                       and m.name.removeprefix("package/").startswith(keep)]
            for m in members:
                m.name = m.name.removeprefix("package/")
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(target / name, members=members, **safe)
    return target


# ---------------------------------------------------------------- execute and convert

def to_slides(nb) -> str:
    from nbconvert import SlidesExporter
    from traitlets.config import Config

    config = Config()
    config.TagRemovePreprocessor.remove_input_tags = {"remove_input"}
    config.TagRemovePreprocessor.enabled = True
    exporter = SlidesExporter(config=config, extra_template_basedirs=[str(TEMPLATE_DIR)],
                              template_name="lorakit_reveal",
                              reveal_url_prefix=f"{ASSETS_DIR}/reveal.js", reveal_theme="white",
                              reveal_width="1280", reveal_height="800",
                              mathjax_url=f"{ASSETS_DIR}/mathjax/es5/tex-chtml.js")
    body, _ = exporter.from_notebook_node(nb)
    return body


def build(path: Path, out_dir: Path, timeout: int, run: bool):
    """Execute one notebook (unless ``run`` is False), mark its slides and write the deck."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    error = execute(nb, path, timeout) if run else None
    marked = mark_slides(nb)
    target = out_dir / f"{path.stem}.slides.html"
    target.write_text(to_slides(marked), encoding="utf-8")
    slides, subslides = expected_slides(marked)
    return target, (target.name, path.stem, f"({slides} slides)"), error, \
        f"{slides} slides, {subslides} with sub-slides, "


def main(argv: list[str] | None = None) -> int:
    def no_execute(parser):
        parser.add_argument("--no-execute", action="store_true",
                            help="convert the notebooks as they are (committed without outputs: no figures)")

    args = arguments(__doc__.splitlines()[0], DEFAULT_OUT, argv, extra=no_execute)
    set_environment(args.fast)
    args.out.mkdir(parents=True, exist_ok=True)
    fetch_assets(args.out)
    rows, failed = run_all(args.paths, lambda path: build(path, args.out, args.timeout, not args.no_execute))
    write_index(args.out, "lorakit slides", "lorakit: slides",
                "Arrow keys move between slides (down: the slide's details); <kbd>S</kbd> opens the speaker view.",
                rows)
    return finish(failed)


if __name__ == "__main__":
    sys.exit(main())
