"""`make slides` (scripts/make_slides.py): slide metadata added at conversion time, and decks that
render offline in a real browser.

The pure rules (which cell starts a slide, what is folded or skipped) are checked on a small
notebook built here. The browser test converts that notebook, executed (so it has a real
matplotlib figure and math), and notebook 00 as committed (no outputs), then opens both decks
from disk in headless Chromium (tests/browser_helpers.py) and checks that reveal.js starts, the
deck has the slides the metadata asks for, every image loaded, MathJax typeset the math, and the
page requested nothing from the network.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest

from browser_helpers import CHROMIUM, REPO, Chromium

sys.path.insert(0, str(REPO / "scripts"))
from make_slides import ASSETS, LONG_CODE, NPM_CACHE, expected_slides, mark_slides  # noqa: E402

NOTEBOOK_00 = REPO / "notebooks" / "00_start_here.ipynb"
BADGE = ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
         "(https://colab.research.google.com/github/lorakit/lorakit/blob/main/notebooks/99_x.ipynb)")


def small_notebook() -> nbformat.NotebookNode:
    """Title, Colab cell, two sections (one with a figure and math), a long code cell, a widget
    output, Summary + Exercises sharing one cell, and an exercise answer cell."""
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    long_code = "\n".join(f"x{i} = {i}" for i in range(LONG_CODE + 5)) + "\nprint('long code ran')"
    widget_cell = code("print('a slider would be here')")
    nb = nbformat.v4.new_notebook(cells=[
        md(f"# 99 · A deck\n\n{BADGE}\n\nOne sentence with math: $W_0 \\in \\mathbb{{R}}^{{m \\times n}}$."),
        code('import sys\nif "google.colab" in sys.modules:\n    pass  # pip install'),
        md("## 1. A figure\n\nThe update is $\\Delta W = AB$."),
        code("import matplotlib.pyplot as plt\nplt.figure(figsize=(4, 3))\nplt.plot([0, 1], [1, 0])\n"
             "plt.title('a line')\nplt.show()"),
        md("## 2. Long code\n\nFolded away on the slide."),
        code(long_code),
        widget_cell,
        md("## Summary\n\n- one claim\n\n## Exercises\n\n**Exercise 99.1 — a question.** Answer: an int."),
        code("check_ex_99_1 = print\nanswer = None  # your answer here\ncheck_ex_99_1(answer)"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def kinds(nb) -> list[tuple[str, str]]:
    return [(c.metadata["slideshow"]["slide_type"], c.source.splitlines()[0] if c.source else "")
            for c in nb.cells]


def test_mark_slides_splits_sections_and_hides_what_a_deck_should_not_show():
    nb = small_notebook()
    nb.cells[6].outputs = [nbformat.v4.new_output(
        "display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "x"},
                              "text/plain": "interactive(children=(IntSlider(...)))"})]
    marked = mark_slides(nb)
    got = kinds(marked)
    assert [k for k, _ in got] == ["slide", "skip", "slide", "-", "slide", "-", "-",
                                   "slide", "slide", "subslide", "skip"], got
    assert got[7][1] == "## Summary" and got[8][1] == "## Exercises", "Summary and Exercises must each start a slide"
    assert got[9][1].startswith("**Exercise 99.1"), "an exercise's question gets a sub-slide"
    assert "colab-badge" not in marked.cells[0].source, "the Colab badge (a web image) must be dropped"
    long_cell = next(c for c in marked.cells if c.source.startswith("x0 = 0"))
    assert "remove_input" in long_cell.metadata["tags"], f"code over {LONG_CODE} lines must be folded"
    assert marked.cells[6].outputs == [], "widget outputs cannot work in a deck and must be dropped"
    assert expected_slides(marked) == (5, 6)
    # the source notebook is untouched
    assert "slideshow" not in nb.cells[0].metadata and len(nb.cells) == 9
    assert "colab-badge" in nb.cells[0].source and nb.cells[6].outputs


def test_a_tall_section_is_cut_into_subslides():
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    figure = nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})
    cells = [md("# T"), md("## 1. Three figures")] + [code(f"plot({i})") for i in range(3)]
    for c in cells[2:]:
        c.outputs = [figure]
    got = [k for k, _ in kinds(mark_slides(nbformat.v4.new_notebook(cells=cells)))]
    assert got == ["slide", "slide", "-", "subslide", "subslide"], got


def test_slides_of_every_notebook_start_with_its_title():
    for path in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        marked = mark_slides(nbformat.read(path, as_version=4))
        first = next(c for c in marked.cells if c.metadata["slideshow"]["slide_type"] != "skip")
        assert first.source.startswith("# "), f"{path.name}: the deck must open on the title cell"
        slides, _ = expected_slides(marked)
        sections = sum(line.startswith("## ") for c in marked.cells if c.cell_type == "markdown"
                       for line in c.source.splitlines())
        assert slides == sections + 1, f"{path.name}: {slides} slides for {sections} `## ` sections + title"


def open_deck(browser, deck: Path) -> dict:
    """Open a deck from disk; return what it shows and every non-local URL it requested."""
    page = browser.contexts[0].new_page()
    page.set_viewport_size({"width": 1280, "height": 800})
    remote, errors = [], []
    page.on("request", lambda r: remote.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(deck.as_uri(), timeout=60_000)
        page.wait_for_function("() => window.Reveal && Reveal.isReady()", timeout=60_000)
        page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=60_000)
        page.evaluate("() => MathJax.startup.promise")
        facts = page.evaluate("""() => ({
            slides: document.querySelectorAll('.reveal .slides > section').length,
            total: Reveal.getTotalSlides(),
            imgs: [...document.querySelectorAll('.reveal img')].map(i => ({src: i.src.slice(0, 40),
                     ok: i.complete && i.naturalWidth > 0})),
            math: document.querySelectorAll('mjx-container').length,
            raw_math: [...document.querySelectorAll('.jp-MarkdownCell')].filter(
                e => /\\$[^$]+\\$/.test(e.innerText)).length,
            text: document.body.innerText})""")
        # move through every slide: reveal.js must not fail on any of them
        for _ in range(facts["total"]):
            page.evaluate("() => Reveal.next()")
        facts["last"] = page.evaluate("() => Reveal.isLastSlide()")
    finally:
        page.close()
    facts.update(remote=remote, errors=errors)
    return facts


@pytest.mark.timeout(300)
def test_decks_render_offline_in_a_real_browser():
    if not CHROMIUM.exists() and sys.platform != "linux":
        pytest.skip(f"{CHROMIUM} exists only on Debian-like Linux; this is {sys.platform}")
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run scripts/install_browser.sh (make test does)"
    cached = all((NPM_CACHE / (spec.replace("@", "-") + ".tgz")).exists() for spec, _ in ASSETS.values())
    if not cached and shutil.which("npm") is None:
        pytest.skip("reveal.js and MathJax come from the npm registry, and `npm` is not installed")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="lorakit-slides-", ignore_cleanup_errors=True) as tmp:
        tmp = Path(tmp)
        src = tmp / "nb" / "99_deck.ipynb"
        src.parent.mkdir()
        nbformat.write(small_notebook(), src)
        out = tmp / "slides"
        env = dict(os.environ, MPLBACKEND="Agg")   # the script must override this, as `make test` sets it
        script = str(REPO / "scripts" / "make_slides.py")
        for args in ([src], ["--no-execute", NOTEBOOK_00]):
            run = subprocess.run([sys.executable, script, "--out", str(out), *map(str, args)],
                                 env=env, capture_output=True, text=True, timeout=240)
            assert run.returncode == 0, f"make_slides.py {args} failed:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
        assert not nbformat.read(src, as_version=4).cells[3].outputs, "make_slides.py wrote into the source notebook"

        chromium = Chromium(tmp)
        try:
            endpoint = chromium.start()
            with sync_playwright() as pw:
                browser = pw.chromium.connect_over_cdp(endpoint, timeout=60_000)
                try:
                    small = open_deck(browser, out / "99_deck.slides.html")
                    deck00 = open_deck(browser, out / "00_start_here.slides.html")
                finally:
                    browser.close()
        finally:
            chromium.stop()

    want_small = expected_slides(mark_slides(small_notebook()))
    assert (small["slides"], small["total"]) == want_small, f"small deck: {small['slides']}, {small['total']} slides"
    assert len(small["imgs"]) == 1 and all(i["ok"] for i in small["imgs"]), f"figure missing: {small['imgs']}"
    assert small["math"] >= 2 and small["raw_math"] == 0, f"MathJax did not typeset: {small['math']} formulas"
    assert "long code ran" in small["text"] and "x0 = 0" not in small["text"], "long code: output shown, input folded"
    assert "check_ex_99_1" not in small["text"] and "pip install" not in small["text"]
    assert small["last"], "Reveal.next() did not reach the last slide"

    want_00 = expected_slides(mark_slides(nbformat.read(NOTEBOOK_00, as_version=4)))
    assert (deck00["slides"], deck00["total"]) == want_00, f"00 deck: {deck00['slides']}, {deck00['total']} slides, expected {want_00}"
    assert all(i["ok"] for i in deck00["imgs"]), f"an image of deck 00 did not load: {deck00['imgs']}"
    assert deck00["math"] > 0 and deck00["raw_math"] == 0, "deck 00 shows untypeset $...$ math"
    for deck in (small, deck00):
        assert not deck["remote"], f"a deck requested the network: {deck['remote'][:5]}"
        assert not deck["errors"], f"JavaScript errors in a deck: {deck['errors'][:5]}"
