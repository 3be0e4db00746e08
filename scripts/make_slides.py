"""Turn the course notebooks into reveal.js slide decks that work with no network (`make slides`).

    python scripts/make_slides.py [--fast | --no-execute | --reuse] [--out DIR] [notebooks ...]

The notebooks carry no slide metadata; it is added here, at conversion time, to a copy:
- the title cell and every `## N. Section` (also Summary, Exercises, References) start a slide;
- `###` headings and each exercise's question start a sub-slide (reveal.js: press the down arrow);
- the slides are sized to be read from the back of a room: 1280x720, body text 30 px, code and
  output 24 px (scripts/slides_template). Content that would not fit is moved to more
  sub-slides: each cell's height is estimated (text wraps at a known width, a figure's size is
  read from its PNG header), a section is cut when the next cell would not fit, a markdown
  cell taller than a slide is cut between paragraphs and a long table between rows (the header
  repeated), and a cell's outputs are spread over sub-slides;
- code longer than `LONG_CODE` lines is folded (a one-line summary that opens on a click), text
  output longer than `LONG_OUTPUT` lines shows its first lines and folds the rest; long lines wrap;
- a live widget cannot work in a deck (there is no kernel): after the notebook has run, its first
  slider is moved, in the still-running kernel, to its minimum, starting value and maximum
  (scripts/widget_states.py), and each position becomes a captioned slide with what the widget
  drew there, marked "live in JupyterLab";
- the Colab install cell and the exercise answer cells (`answer = None` ... `check_ex_`) are
  skipped: the decks show the questions, the solutions stay in notebooks/solutions/; the Colab
  badge (an image from the internet) is dropped; a deck built with `--fast` says on its title
  slide that its numbers are test-mode numbers; this machine's paths (repository, virtualenv,
  home folder) are replaced by short names.

Figures come from running the notebooks first (like `make html`; `--fast` = test-mode sizes). A
notebook that fails is reported as `FAILED NN: why`, the others are still built, and the exit
code is 1. The executed notebooks are kept in .cache/slides/ so that `--reuse` can convert them
again without running anything. reveal.js 4.6.0 and MathJax 3.2.2 come from the npm registry
(`npm pack`, once; the tarballs are kept in .cache/npm) into DIR/_assets/, which the decks
reference by a relative path: the whole DIR can be copied to a USB stick and opened from there
with a browser and no internet. Writes DIR/NN_name.slides.html and DIR/index.html (default DIR:
notebooks/_build/slides/). tests/test_slides.py measures every slide in Chromium.
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
from widget_states import STATE_MIME

DEFAULT_OUT = REPO / "notebooks" / "_build" / "slides"
TEMPLATE_DIR = REPO / "scripts" / "slides_template"
NPM_CACHE = REPO / ".cache" / "npm"
EXECUTED = REPO / ".cache" / "slides"  # executed copies, for --reuse
WIDGET_STATES = Path(__file__).with_name("widget_states.py")  # sent to the kernel
# (npm package@version, files to keep: a path prefix inside the package)
ASSETS = {
    "reveal.js": (
        "reveal.js@4.6.0",
        (
            "dist/reveal.js",
            "dist/reveal.css",
            "dist/theme/white.css",
            "dist/theme/fonts/source-sans-pro/",
            "plugin/notes/",
            "LICENSE",
        ),
    ),
    "mathjax": (
        "mathjax@3.2.2",
        ("es5/tex-chtml.js", "es5/output/chtml/fonts/woff-v2/", "LICENSE"),
    ),
}
ASSETS_DIR = "_assets"
# Slide geometry, in CSS pixels of reveal.js's 1280x720 canvas (scripts/slides_template sets the
# fonts; tests/test_slides.py measures the decks in Chromium). The estimates below are deliberately
# pessimistic: a slide left a little empty is fine, one taller than the screen is not.
SLIDE_W, SLIDE_H = 1280, 720
BODY_PX, CODE_PX = 30, 24  # reveal's margin scales these by 1/1.02 at 1280x720: 29.4 and 23.5 px
BODY_LINE, CODE_LINE = 41, 32  # line heights (CSS: 1.35 and 1.3)
BODY_CHARS, CODE_CHARS = 66, 80  # characters per line before a line wraps (body: an average)
HEIGHT_BUDGET = 590  # px of content per slide before a section is cut
IMAGE_MAX_H = 480  # CSS max-height of a figure (see the template)
CELL_GAP = 14  # px between two cells
LONG_CODE = 12  # code longer than this many (wrapped) lines is folded
LONG_OUTPUT = 12  # text output longer than this is cut, the rest folded
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
NBVAL_MARK = re.compile(r"^# NBVAL_[A-Z_]+[^\n]*\n", re.M)
LIST_ITEM = re.compile(r"\s{0,3}([-*+]|\d+\.) ")
COLAB_BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)\s*")
FAST_NOTE = (
    "*Built in test mode (`make slides FAST=1`): small models and short runs, so the numbers "
    "are not the course's. Build with `make slides` for the real ones.*"
)


# ---------------------------------------------------------------- slide metadata (pure functions)


def is_colab_install(cell) -> bool:
    return cell.cell_type == "code" and 'if "google.colab" in sys.modules:' in cell.source


def is_exercise_answer(cell) -> bool:
    return cell.cell_type == "code" and "check_ex_" in cell.source and "answer" in cell.source


def wrapped(text: str, width: int) -> int:
    """Lines ``text`` takes when lines longer than ``width`` characters wrap."""
    return sum(max(1, -(-len(line) // width)) for line in text.split("\n"))


def png_size(b64: str) -> tuple[int, int]:
    """(width, height) in pixels, read from a base64 PNG's header."""
    import base64

    head = base64.b64decode(b64[:44])
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise ValueError("not a PNG header")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def image_height(output) -> int:
    """Height a figure takes on a slide: its own size, shrunk to the width and IMAGE_MAX_H."""
    data = output.get("data", {})
    if "image/png" not in data:
        return IMAGE_MAX_H
    try:
        w, h = png_size(data["image/png"])
    except Exception:  # noqa: BLE001 - a PNG we cannot read counts as a full-height figure
        return IMAGE_MAX_H
    meta = output.get("metadata", {}).get("image/png", {})
    w, h = meta.get("width", w), meta.get("height", h)
    scale = min(1.0, (SLIDE_W - 60) / max(w, 1), IMAGE_MAX_H / max(h, 1))
    return int(h * scale) + 10


def table_row_height(row: str) -> int:
    """A markdown table row: the browser shares the width among the columns by their content,
    so a row wraps about as often as its text would on (BODY_CHARS - 3 per column) characters,
    and a little more (cells end on partly filled lines)."""
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    chars = sum(len(re.sub(r"[`*$\\]", "", c)) for c in cells)
    width = max(10, BODY_CHARS - 3 * len(cells))
    lines = 1 if chars <= width else int(-(-chars * 1.25 // width))
    return BODY_LINE * lines + 8


def markdown_height(source: str) -> int:
    """Estimated px of a markdown cell: headings, paragraphs, list items, table rows, display math."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", source)  # links show their text only
    height, in_math = 0, False
    for line in text.split("\n"):
        stripped = line.strip()
        if in_math or stripped.startswith("$$"):
            # display math: about two body lines, one more per row of a matrix/cases
            if not in_math:
                height += 2 * BODY_LINE
            height += BODY_LINE * stripped.count("\\\\")
            opens = stripped.count("$$")
            in_math = (in_math + opens) % 2 == 1
            continue
        if not stripped:
            height += BODY_LINE // 2  # paragraph spacing
        elif stripped.startswith("# "):
            height += 80 * wrapped(stripped, 34) + 20
        elif stripped.startswith("## "):
            height += 64 * wrapped(stripped, 42) + 20
        elif stripped.startswith("### "):
            height += 52 * wrapped(stripped, 52) + 14
        elif re.fullmatch(r"\|?\s*:?-{3,}.*", stripped):
            continue  # a table's |---| line
        elif stripped.startswith("|"):
            height += table_row_height(stripped)
        else:
            height += BODY_LINE * wrapped(
                stripped, BODY_CHARS - 4 * (len(line) - len(line.lstrip())) // 2
            )
    return height + BODY_LINE // 2


def output_height(output) -> int:
    data = output.get("data", {})
    if "image/png" in data or "image/svg+xml" in data or "image/jpeg" in data:
        return image_height(output)
    if "text/markdown" in data:
        return markdown_height("".join(data["text/markdown"]))
    if "text/html" in data:
        html = "".join(data["text/html"])
        if "lorakit-fold" in html:
            return CODE_LINE * (LONG_OUTPUT + 1) + 20
        return BODY_LINE * max(2, html.count("<tr") + html.count("<p") + html.count("<br"))
    text = output.get("text", "") or "".join(data.get("text/plain", ""))
    return CODE_LINE * wrapped(str(text).rstrip("\n"), CODE_CHARS) + 20


def cell_height(cell) -> int:
    """Estimated px a cell takes on a slide (folded code counts as its one-line summary)."""
    if cell.cell_type == "markdown":
        return markdown_height(cell.source) + CELL_GAP
    tags = cell.metadata.get("tags", [])
    if "remove_input" in tags:
        height = 0
    elif "fold_input" in tags:
        height = BODY_LINE + 16
    else:
        height = CODE_LINE * wrapped(cell.source, CODE_CHARS) + 24
    return height + sum(output_height(o) for o in cell.get("outputs", [])) + CELL_GAP


def split_markdown(cells) -> list:
    """Markdown cells cut before each `## `/`### ` heading and `**Exercise` paragraph, so that a
    heading inside a longer cell (Summary and Exercises often share one) still starts a slide;
    a piece still taller than a slide is cut again between paragraphs."""
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
            for text in paragraphs_that_fit("\n".join(lines).strip("\n")):
                piece = nbformat.v4.new_markdown_cell(text)
                piece.metadata = copy.deepcopy(cell.metadata)
                out.append(piece)
    return out


def paragraphs_that_fit(text: str) -> list[str]:
    """``text`` as one piece, or cut between paragraphs (never inside display math or a table)
    into pieces of at most HEIGHT_BUDGET px each."""
    if markdown_height(text) <= HEIGHT_BUDGET:
        return [text]
    blocks, current, in_math = [], [], False  # (separator before it, text)
    sep = "\n\n"
    for line in text.split("\n"):
        if not in_math and current and (not line.strip() or LIST_ITEM.match(line)):
            blocks.append((sep, "\n".join(current)))
            current, sep = [], "\n\n" if not line.strip() else "\n"  # a list item: same list
            if not line.strip():
                continue
        current.append(line)
        in_math = (in_math + line.count("$$")) % 2 == 1
    if current:
        blocks.append((sep, "\n".join(current)))
    blocks = [
        (sep if k == 0 else "\n\n", part)
        for sep, block in blocks
        for k, part in enumerate(table_parts(block))
    ]
    blocks = [
        (sep if k == 0 else "\n\n", part)
        for sep, block in blocks
        for k, part in enumerate(sentence_parts(block))
    ]
    pieces: list[str] = []
    for sep, block in blocks:
        if pieces and markdown_height(pieces[-1] + sep + block) <= HEIGHT_BUDGET:
            pieces[-1] += sep + block
        else:
            pieces.append(block)
    return pieces


def sentence_parts(block: str) -> list[str]:
    """One paragraph too tall for a slide, cut between sentences (never inside $math$)."""
    if markdown_height(block) <= HEIGHT_BUDGET or block.lstrip().startswith(("|", "$$")):
        return [block]
    text = " ".join(line.strip() for line in block.split("\n"))
    sentences, start, in_math = [], 0, False
    for k, ch in enumerate(text):
        if ch == "$":
            in_math = not in_math
        elif not in_math and ch == " " and text[k - 1] in ".:;" and text[k + 1 : k + 2].isupper():
            sentences.append(text[start:k])
            start = k + 1
    sentences.append(text[start:])
    parts: list[str] = []
    for sentence in sentences:
        if parts and markdown_height(parts[-1] + " " + sentence) <= HEIGHT_BUDGET:
            parts[-1] += " " + sentence
        else:
            parts.append(sentence)
    return parts


def table_parts(block: str) -> list[str]:
    """A markdown table too tall for a slide, cut between rows; each part repeats the header."""
    lines = block.split("\n")
    rows = [k for k, line in enumerate(lines) if line.strip().startswith("|")]
    if (
        markdown_height(block) <= HEIGHT_BUDGET
        or len(rows) < 4
        or not re.fullmatch(r"\|?\s*:?-{3,}.*", lines[rows[1]].strip())
    ):
        return [block]
    before, header, body = lines[: rows[0]], lines[rows[0] : rows[0] + 2], lines[rows[0] + 2 :]
    parts, current = [], before + header
    for line in body:
        if (
            len(current) > len(header)
            and markdown_height("\n".join(current + [line])) > HEIGHT_BUDGET
        ):
            parts.append("\n".join(current))
            current = list(header)
        current.append(line)
    parts.append("\n".join(current))
    return parts


def fold_long_output(output, nbformat):
    """A text output longer than LONG_OUTPUT lines: its first lines, then the rest in a
    <details> element that opens on a click (and scrolls inside itself)."""
    import html

    text = (
        output.get("text")
        if output.get("output_type") == "stream"
        else "".join(output.get("data", {}).get("text/plain", ""))
        if set(output.get("data", {})) == {"text/plain"}
        else None
    )
    if text is None or wrapped(text.rstrip("\n"), CODE_CHARS) <= LONG_OUTPUT:
        return output
    lines = text.rstrip("\n").split("\n")
    head, shown = [], 0
    for line in lines:
        shown += wrapped(line, CODE_CHARS)
        if shown > LONG_OUTPUT - 2:
            break
        head.append(line)
    rest = lines[len(head) :]
    body = (
        f'<div class="lorakit-fold"><pre>{html.escape(chr(10).join(head))}</pre>'
        f"<details><summary>{len(rest)} more lines</summary>"
        f"<pre>{html.escape(chr(10).join(rest))}</pre></details></div>"
    )
    return nbformat.v4.new_output("display_data", data={"text/html": body, "text/plain": text})


def is_progress_bar(output) -> bool:
    """tqdm.notebook's bar: an HBox of a label, a FloatProgress and a label."""
    text = "".join(output.get("data", {}).get("text/plain", ""))
    return "FloatProgress" in text or "IntProgress" in text


def state_cells(cell, notebook_name: str, nbformat) -> list:
    """The cells that replace a widget's output on the slides: one per drawn state (a caption,
    its readout and printed text, its figures), or one line when no state was drawn."""
    states, current = [], None
    kept = []
    for output in cell.get("outputs", []):
        data = output.get("data", {})
        if STATE_MIME in data and data[STATE_MIME].get("end"):
            current = None  # the outputs after the widget's
        elif STATE_MIME in data:
            current = {"record": data[STATE_MIME], "outputs": []}
            states.append(current)
        elif WIDGET_MIME in data and not is_progress_bar(output):
            states.append(None)  # a widget whose states were not drawn
        elif WIDGET_MIME in data:
            continue  # a progress bar has nothing to show on a slide
        elif current is not None:
            current["outputs"].append(output)
        else:
            kept.append(output)
    if not states:
        if len(kept) != len(cell.get("outputs", [])):  # progress bars were dropped
            cell = copy.deepcopy(cell)
            cell.outputs = kept
        return [cell]
    cell = copy.deepcopy(cell)
    cell.outputs = kept
    out = [cell]
    drawn = [s for s in states if s]
    if not drawn:
        out.append(
            nbformat.v4.new_markdown_cell(
                f"*A slider goes here: live in JupyterLab ({notebook_name}).*"
            )
        )
    for k, state in enumerate(drawn, 1):
        record = state["record"]
        lines = [f"**{record['label']}** (slider position {k} of {len(drawn)}; live in JupyterLab)"]
        lines += [f"\n{r}" for r in record.get("readouts") or []]
        shown = [nbformat.v4.new_output("display_data", data={"text/markdown": "\n".join(lines)})]
        if record.get("stdout"):
            shown.append(
                nbformat.v4.new_output("stream", name="stdout", text=record["stdout"] + "\n")
            )
        piece = nbformat.v4.new_code_cell("# " + record["label"])
        piece.metadata["tags"] = ["remove_input"]
        piece.metadata["lorakit_state"] = True
        piece.outputs = shown + state["outputs"]
        out.append(piece)
    return out


def pieces(cell, nbformat) -> list:
    """A code cell as cells that each fit on a slide: long code folded, long text outputs cut,
    and the outputs moved to cells of their own when the whole would not fit."""
    if cell.cell_type != "code":
        return [cell]
    cell = copy.deepcopy(cell)
    cell.source = NBVAL_MARK.sub("", cell.source)  # test-harness markers mean nothing on a slide
    tags = cell.metadata.setdefault("tags", [])
    if "remove_input" not in tags and wrapped(cell.source, CODE_CHARS) > LONG_CODE:
        tags.append("fold_input")
    cell.outputs = [fold_long_output(o, nbformat) for o in cell.get("outputs", [])]
    if cell_height(cell) <= HEIGHT_BUDGET or not cell.outputs:
        return [cell]
    first = copy.deepcopy(cell)
    first.outputs = []
    out = [first] if "remove_input" not in tags else []
    groups: list[list] = []
    for output in cell.outputs:  # consecutive outputs stay together while they fit
        if groups and sum(map(output_height, groups[-1] + [output])) + CELL_GAP <= HEIGHT_BUDGET:
            groups[-1].append(output)
        else:
            groups.append([output])
    for group in groups:
        piece = copy.deepcopy(cell)
        piece.metadata["tags"] = [t for t in tags if t not in ("fold_input", "remove_input")] + [
            "remove_input"
        ]
        piece.outputs = group
        out.append(piece)
    return out


def mark_slides(nb, fast: bool = False, name: str = ""):
    """A copy of `nb` with `slideshow` metadata (and `remove_input`/`fold_input` tags) set as
    the module docstring says; the source notebook is not touched."""
    import nbformat

    nb = copy.deepcopy(nb)
    if "widgets" in nb.metadata:
        del nb.metadata["widgets"]
    cells = []
    for cell in split_markdown(nb.cells):
        if cell.cell_type == "markdown":
            cell.source = COLAB_BADGE.sub("", cell.source)
        for c in state_cells(cell, name or "the notebook", nbformat):
            cells.extend(pieces(c, nbformat))
    if fast:
        first = next(
            (c for c in cells if c.cell_type == "markdown" and c.source.lstrip().startswith("# ")),
            None,
        )
        if first is not None:
            first.source = first.source.rstrip() + "\n\n" + FAST_NOTE
    seen = set()
    for k, cell in enumerate(cells):  # pieces of one cell share its id: nbformat wants them unique
        if cell.get("id") in seen:
            cell.id = f"{cell.id[:40]}-{k}"
        seen.add(cell.get("id"))
    nb.cells = cells
    used = 0
    first_markdown = True
    for cell in nb.cells:
        cell.metadata.setdefault("tags", [])
        text = cell.source.lstrip()
        height = cell_height(cell)
        if (
            is_colab_install(cell)
            or is_exercise_answer(cell)
            or not (cell.source.strip() or cell.get("outputs"))
        ):
            kind = "skip"
        elif cell.cell_type == "markdown" and (first_markdown or text.startswith("## ")):
            kind, first_markdown = "slide", False
        elif cell.cell_type == "markdown" and (
            text.startswith("### ") or text.startswith("**Exercise")
        ):
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
        visible[0] = "slide"  # nbconvert makes the first visible cell a slide
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
                raise SystemExit(
                    f"make_slides: {spec} is needed in {tarball} and `npm` is not installed "
                    "to fetch it (install Node.js, or copy that file there)"
                )
            run = subprocess.run(
                [
                    npm,
                    "pack",
                    spec,
                    "--prefer-offline",
                    "--silent",
                    "--pack-destination",
                    str(NPM_CACHE),
                ],
                capture_output=True,
                text=True,
            )
            if run.returncode != 0 or not tarball.exists():
                raise SystemExit(
                    f"make_slides: `npm pack {spec}` failed ({run.returncode}): "
                    f"{run.stderr.strip()[-500:]}"
                )
        with tarfile.open(tarball) as tar:
            members = [
                m
                for m in tar.getmembers()
                if m.isfile() and m.name.removeprefix("package/").startswith(keep)
            ]
            for m in members:
                m.name = m.name.removeprefix("package/")
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(target / name, members=members, **safe)
    return target


# ---------------------------------------------------------------- execute and convert


def scrub_paths(text: str) -> str:
    """The deck without this machine's paths (tracebacks, warnings, cache folders print them)."""
    import site
    import sysconfig

    places = [(str(REPO), "lorakit")]
    for lib in {sysconfig.get_paths()["purelib"], *site.getsitepackages()}:
        places.append((lib, "site-packages"))
    places.append((sys.prefix, "venv"))
    places.append((str(Path.home()), "~"))
    for place, name in sorted(places, key=lambda p: -len(p[0])):
        if len(place) > 1:
            text = text.replace(place, name)
    return text


def to_slides(nb) -> str:
    from nbconvert import SlidesExporter
    from traitlets.config import Config

    config = Config()
    config.TagRemovePreprocessor.remove_input_tags = {"remove_input"}
    config.TagRemovePreprocessor.enabled = True
    exporter = SlidesExporter(
        config=config,
        extra_template_basedirs=[str(TEMPLATE_DIR)],
        template_name="lorakit_reveal",
        reveal_url_prefix=f"{ASSETS_DIR}/reveal.js",
        reveal_theme="white",
        reveal_width=str(SLIDE_W),
        reveal_height=str(SLIDE_H),
        mathjax_url=f"{ASSETS_DIR}/mathjax/es5/tex-chtml.js",
    )
    body, _ = exporter.from_notebook_node(nb)
    return body


class HiddenCellTimeout(Exception):
    """A hidden cell (drawing a slider's states) ran past its limit."""


def draw_widget_states(nb, client, limit: int = 300) -> str | None:
    """With the kernel still alive: replace each live widget's output by its drawn states.

    scripts/widget_states.py runs in the kernel and moves each widget's first slider through
    its minimum, start and maximum; its outputs (a state record, then what the widget drew)
    take the place of the widget-view output. Drawing is a bonus, not a condition: a widget
    whose states cannot be drawn within ``limit`` seconds (or fail) keeps the notebook's static
    figure before it and gets a "live in JupyterLab" line; a note says so. Returns None."""
    import signal

    import nbformat

    widgets = [
        (i, o["data"][WIDGET_MIME]["model_id"])
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if WIDGET_MIME in o.get("data", {})
    ]
    if not widgets:
        return None

    def alarm(signum, frame):
        raise HiddenCellTimeout(f"no answer from the kernel within {limit} s")

    def run_hidden(source: str) -> list:
        cell = nbformat.v4.new_code_cell(source)
        nb.cells.append(cell)
        previous = signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, limit)  # nbclient's own timeout did not always fire
        try:
            client.execute_cell(cell, len(nb.cells) - 1)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            nb.cells.pop()
        return cell.outputs

    index = None
    try:
        run_hidden(WIDGET_STATES.read_text(encoding="utf-8"))
        for index, model_id in widgets:
            states = [
                o
                for o in run_hidden(f"show_states({model_id!r})")
                if o.get("output_type") != "error"
            ]
            errors = [
                o["data"][STATE_MIME]["error"]
                for o in states
                if STATE_MIME in o.get("data", {}) and o["data"][STATE_MIME].get("error")
            ]
            if errors:
                raise RuntimeError(errors[0])
            cell = nb.cells[index]
            at = next(k for k, o in enumerate(cell.outputs) if WIDGET_MIME in o.get("data", {}))
            if any(
                o["data"][STATE_MIME].get("label") is None
                for o in states
                if STATE_MIME in o.get("data", {})
            ):
                states = []  # nothing to move (a progress bar): dropped
            else:
                states.append(
                    nbformat.v4.new_output("display_data", data={STATE_MIME: {"end": True}})
                )
            cell.outputs[at : at + 1] = states
    except Exception as e:  # noqa: BLE001 - the deck is still built, with the static figure and a line
        print(
            f"note: the widget in cell {index} was not drawn at its positions "
            f"({type(e).__name__}: {e}); the deck shows the figure before it and 'live in JupyterLab'",
            flush=True,
        )
    return None


def executed_copy(path: Path, fast: bool, keep: Path = EXECUTED) -> Path:
    """Where the executed notebook (with its widget states) is kept for `--reuse`."""
    return keep / ("fast" if fast else "learner") / path.name


def build(
    path: Path, out_dir: Path, timeout: int, mode: str, fast: bool = False, keep: Path = EXECUTED
):
    """Execute one notebook (``mode`` "run"; "reuse": take the copy the last run kept; "none": as
    committed), mark its slides and write the deck."""
    import nbformat

    error = None
    if mode == "reuse":
        kept = executed_copy(path, fast, keep)
        if not kept.exists():
            raise FileNotFoundError(
                f"no executed copy of {path.name} in {kept.parent}: run without --reuse first"
            )
        nb = nbformat.read(kept, as_version=4)
    else:
        nb = nbformat.read(path, as_version=4)
        if mode == "run":
            error = execute(nb, path, timeout, after=lambda client: draw_widget_states(nb, client))
            if not error:
                kept = executed_copy(path, fast, keep)
                kept.parent.mkdir(parents=True, exist_ok=True)
                nbformat.write(nb, kept)
    marked = mark_slides(nb, fast=fast, name=path.name)
    target = out_dir / f"{path.stem}.slides.html"
    target.write_text(scrub_paths(to_slides(marked)), encoding="utf-8")
    slides, subslides = expected_slides(marked)
    return (
        target,
        (target.name, path.stem, f"({subslides} slides)"),
        error,
        f"{slides} sections, {subslides} slides, ",
    )


def main(argv: list[str] | None = None) -> int:
    def options(parser):
        how = parser.add_mutually_exclusive_group()
        how.add_argument(
            "--no-execute",
            action="store_true",
            help="convert the notebooks as they are (committed without outputs: no figures)",
        )
        how.add_argument(
            "--reuse",
            action="store_true",
            help="convert again the copies the last run executed (kept in .cache/slides/), "
            "without running them",
        )
        parser.add_argument(
            "--keep",
            type=Path,
            default=EXECUTED,
            help=f"where executed copies are kept for --reuse (default {EXECUTED})",
        )

    args = arguments(__doc__.splitlines()[0], DEFAULT_OUT, argv, extra=options)
    set_environment(args.fast)
    args.out.mkdir(parents=True, exist_ok=True)
    fetch_assets(args.out)
    mode = "none" if args.no_execute else "reuse" if args.reuse else "run"
    rows, failed = run_all(
        args.paths, lambda path: build(path, args.out, args.timeout, mode, args.fast, args.keep)
    )
    write_index(
        args.out,
        "lorakit slides",
        "lorakit: slides",
        "Arrow keys move between slides (down: the section's next slide); <kbd>S</kbd> opens the "
        "speaker view. Sliders are shown at a few positions; they are live in JupyterLab.",
        rows,
    )
    return finish(failed)


if __name__ == "__main__":
    sys.exit(main())
