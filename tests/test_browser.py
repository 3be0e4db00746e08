"""The course's interactive parts, proven the way a learner uses them: in JupyterLab, in a browser.

`test_rank_slider_in_real_browser` starts JupyterLab (token auth on, 127.0.0.1, free port) on a
temporary copy of the notebooks, drives headless Debian Chromium with Playwright to open
notebooks/03_rank_and_alpha.ipynb, runs all cells from the Run menu, drags the "rank r" slider and
asserts that the error readout and the figure both change. It fails loudly, with the page text,
if a widget does not render. Screenshot: .cache/screenshots/03_rank_slider.png.

`test_render_html_embeds_figures` checks scripts/render_html.py (`make html`): the static copy
has its figures inside the HTML, so a reader needs nothing but a browser.

Server and browser are stopped by PID in `finally` blocks (see tests/browser_helpers.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from browser_helpers import CHROMIUM, REPO, Chromium, JupyterLab, http_get

NOTEBOOK = REPO / "notebooks" / "03_rank_and_alpha.ipynb"
SCREENSHOT = REPO / ".cache" / "screenshots" / "03_rank_slider.png"
SLIDER_LABEL = re.compile(r"^\s*rank\s*\$?r\$?\s*$", re.I)  # the IntSlider's description
# The readout states the error as "... error ... = <number>" (lorakit.widgets.rank_readout).
ERROR_VALUE = re.compile(r"error[^=\n]*=\s*([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)", re.I)
RUN_ALL_TIMEOUT = 300  # seconds; generous: 03's budget is 60 s in test mode
WIDGET_TIMEOUT = 60  # seconds for widgets to render / react


def server_env() -> dict[str, str]:
    """The learner's environment in test mode. MPLBACKEND must NOT be Agg (as `make test` sets it
    for nbval): the kernel then uses the inline backend, so figures reach the page as <img>."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env.update(LORAKIT_FAST="1", LORAKIT_CACHE=str(REPO / ".cache" / "test"), PYTHONHASHSEED="0")
    return env


def code_cells_to_run(notebook: Path) -> int:
    """How many code cells get an execution count from Run All (JupyterLab skips empty ones)."""
    nb = json.loads(notebook.read_text())
    return sum(1 for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip())


def page_text(page, limit: int = 4000) -> str:
    """What the page shows that explains a failure: open dialogs and every cell output's text
    (the whole page's text when there are none), the last `limit` characters."""
    try:
        text = page.evaluate("""() => {
            const parts = [...document.querySelectorAll('.jp-Dialog, .jp-OutputArea-output')]
                .map(e => e.innerText.trim()).filter(t => t);
            return parts.length ? parts.join('\\n---\\n') : document.body.innerText; }""")
    except Exception as e:  # the page may be gone; say so instead of hiding the real failure
        return f"(page text unavailable: {e})"
    return text if len(text) <= limit else "...\n" + text[-limit:]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.5):
    """Poll `predicate()` until it returns a truthy value; raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def open_notebook(page, server: JupyterLab, rel_path: str) -> None:
    page.goto(f"{server.base}/lab/tree/{rel_path}?token={server.token}", timeout=90_000)
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=90_000)

    # Every notebook carries ipykernel's kernelspec (tests/test_notebooks.py), so it must open
    # straight into a running kernel: a "Select Kernel" (or any other) dialog is a failure.
    def kernel_ready():
        dialog = page.locator(".jp-Dialog")
        if dialog.count():
            raise AssertionError(
                f"opening {rel_path} showed a dialog: {dialog.first.inner_text()[:300]!r}"
            )
        states = server.kernel_states()
        return bool(states) and all(s == "idle" for s in states)

    wait_until(kernel_ready, 90, "the notebook's kernel to start and be idle")


def run_all_cells(page, server: JupyterLab, expected: int) -> None:
    """Run menu -> Run All Cells; wait until every non-empty code cell has an execution count."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(
        ".lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel",
        has_text=re.compile(r"^Run All Cells$"),
    ).click()
    prompts_js = """() => [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')]
                         .map(e => e.textContent.trim())"""
    errors_js = """() => [...document.querySelectorAll(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
        .map(e => e.innerText).filter(t => /Error|Traceback/.test(t)).join('\\n---\\n')"""
    start = last_change = time.monotonic()
    last = None
    while True:
        prompts = page.evaluate(prompts_js)
        done = sum(bool(re.fullmatch(r"\[\d+\]:", p)) for p in prompts)
        busy = sum(p == "[*]:" for p in prompts)
        if (done, busy) != last:
            last, last_change = (done, busy), time.monotonic()
        states = server.kernel_states()
        if done >= expected and busy == 0 and states and all(s == "idle" for s in states):
            return
        stalled = busy == 0 and time.monotonic() - last_change > 15
        if stalled or time.monotonic() - start > RUN_ALL_TIMEOUT:
            why = (
                "execution stopped (a cell raised?)"
                if stalled
                else f"not done after {RUN_ALL_TIMEOUT} s"
            )
            raise AssertionError(
                f"Run All Cells: {why}; {done}/{expected} code cells ran, {busy} busy.\n"
                f"error outputs:\n{page.evaluate(errors_js)[-3000:]}"
            )
        time.sleep(0.5)


def assert_widgets_rendered(page):
    """Every widget view rendered: no 'Loading widget...' left, no 'Error displaying widget'."""

    def settled():
        text = page.evaluate("() => document.body.innerText")
        return ("Loading widget" not in text) and page.locator(".widget-slider").count() > 0

    try:
        wait_until(
            settled,
            WIDGET_TIMEOUT,
            "widgets to render (.widget-slider present, no 'Loading widget...')",
        )
    except TimeoutError as e:
        raise AssertionError(f"widgets did not render: {e}") from None
    text = page.evaluate("() => document.body.innerText")
    for bad in ("Error displaying widget", "model not found", "Failed to load model class"):
        assert bad not in text, f"a widget failed to render: page shows {bad!r}"


def find_slider(page):
    sliders = page.locator(".widget-slider")
    labels = [
        sliders.nth(i).locator(".widget-label").first.inner_text() for i in range(sliders.count())
    ]
    matches = [i for i, label in enumerate(labels) if SLIDER_LABEL.match(label)]
    assert matches, f"no slider labelled 'rank r' rendered; slider labels on the page: {labels}"
    return sliders.nth(matches[0])


def snapshot(cell) -> dict:
    """What the learner sees in the slider cell's output: readout lines that mention the error,
    and the figure images (their data: URLs), plus the slider's own value readout."""
    seen = cell.evaluate("""c => { const out = c.querySelector('.jp-Cell-outputWrapper') || c;
        return {text: out.innerText, imgs: [...out.querySelectorAll('img')].map(i => i.src)}; }""")
    lines = [ln.strip() for ln in seen["text"].splitlines()]
    error_lines = [ln for ln in lines if "error" in ln.lower()]
    values = [float(m) for ln in error_lines for m in ERROR_VALUE.findall(ln)]
    return {
        "error_lines": error_lines,
        "error_values": values,
        "imgs": seen["imgs"],
        "text": seen["text"],
    }


def drag_slider(page, slider) -> None:
    """Drag the slider's handle with the mouse, like a person would: to 80% of its track, or to
    20% if the handle already sits in the right half."""
    handle = slider.locator(".noUi-handle").first
    track = slider.locator(".noUi-target").first
    handle.scroll_into_view_if_needed()
    h, t = handle.bounding_box(), track.bounding_box()
    assert h and t, "slider handle/track has no size on screen"
    y = h["y"] + h["height"] / 2
    fraction = 0.2 if (h["x"] + h["width"] / 2 - t["x"]) > t["width"] / 2 else 0.8
    page.mouse.move(h["x"] + h["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(t["x"] + fraction * t["width"], y, steps=12)
    page.mouse.up()


def check_slider_in_browser(notebook: Path, screenshot: Path, workdir: Path) -> dict:
    """The whole browser check on `notebook`; returns measured facts for the report."""
    from playwright.sync_api import sync_playwright

    t0 = time.monotonic()
    root = workdir / "served"
    # A temporary copy: JupyterLab autosaves outputs, which must never reach the committed
    # notebooks. The paired NN_name.py scripts stay behind, so jupytext cannot substitute them:
    # the browser runs the .ipynb itself, as a learner opening it does (and as nbval does).
    shutil.copytree(
        notebook.parent,
        root / "notebooks",
        ignore=shutil.ignore_patterns(
            "_build", ".ipynb_checkpoints", "__pycache__", "*.safetensors", "[0-9][0-9]_*.py"
        ),
    )
    server, browser_proc = JupyterLab(root, workdir, server_env()), Chromium(workdir)
    facts: dict = {}
    page, console = None, []
    try:
        server.start()
        # Token auth is on: without the token the API refuses and the UI redirects to login.
        status, _, _ = http_get(f"{server.base}/api/contents")
        assert status == 403, f"/api/contents without token answered {status}, expected 403"
        status, headers, _ = http_get(f"{server.base}/lab")
        assert status in (302, 303) and "login" in headers.get("Location", ""), (
            f"/lab without token answered {status} -> {headers.get('Location')}, expected a redirect to login"
        )

        endpoint = browser_proc.start()
        with sync_playwright() as pw:
            browser = pw.chromium.connect_over_cdp(endpoint, timeout=60_000)
            try:
                page = browser.contexts[0].new_page()
                page.set_viewport_size({"width": 1400, "height": 1000})
                page.on(
                    "console",
                    lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None,
                )
                open_notebook(page, server, f"notebooks/{notebook.name}")
                run_all_cells(page, server, code_cells_to_run(notebook))
                facts["run_all_s"] = round(time.monotonic() - t0, 1)
                server.record_children()
                assert_widgets_rendered(page)

                slider = find_slider(page)
                cell = slider.locator(
                    "xpath=ancestor::div[contains(concat(' ', @class, ' '), ' jp-CodeCell ')][1]"
                )
                value_before = slider.locator(".widget-readout").inner_text()
                before = snapshot(cell)
                assert before["error_values"], (
                    "the 'rank r' slider's cell shows no error readout (no line "
                    "'... error ... = <number>'); its output text:\n"
                    f"{before['text'][:2000]}"
                )
                assert before["imgs"], (
                    "the 'rank r' slider's cell shows no figure (<img>) before moving it"
                )

                drag_slider(page, slider)
                try:
                    wait_until(
                        lambda: slider.locator(".widget-readout").inner_text() != value_before,
                        5,
                        "the slider value to change after dragging",
                    )
                except TimeoutError:  # fall back to the keyboard (noUiSlider handles arrow keys)
                    slider.locator(".noUi-handle").first.focus()
                    for _ in range(3):
                        page.keyboard.press("ArrowLeft" if value_before != "1" else "ArrowRight")
                value_after = slider.locator(".widget-readout").inner_text()
                assert value_after != value_before, (
                    f"the rank slider did not move (still {value_before})"
                )

                def changed():
                    now = snapshot(cell)
                    return (
                        now
                        if (
                            now["error_values"]
                            and now["error_values"] != before["error_values"]
                            and now["imgs"]
                            and now["imgs"] != before["imgs"]
                        )
                        else None
                    )

                try:
                    after = wait_until(
                        changed, WIDGET_TIMEOUT, "the error readout and the figure to change"
                    )
                except TimeoutError as e:
                    now = snapshot(cell)
                    raise AssertionError(
                        f"{e}: rank {value_before} -> {value_after}; error lines before {before['error_lines']} "
                        f"after {now['error_lines']}; figure changed: {now['imgs'] != before['imgs']} "
                        f"({len(now['imgs'])} img)"
                    ) from None
                facts.update(
                    rank=(value_before, value_after),
                    error_before=before["error_values"],
                    error_after=after["error_values"],
                )
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                slider.evaluate("""e => { e.scrollIntoView({block: 'start'});   // slider, readout, figure
                    const s = e.closest('.jp-WindowedPanel-outer'); if (s) s.scrollBy(0, -40); }""")
                time.sleep(0.5)
                page.screenshot(path=str(screenshot))
                screenshot.with_name(screenshot.stem + "_FAILED.png").unlink(missing_ok=True)
                facts["screenshot"] = str(screenshot)
            except Exception as e:
                if page is not None:
                    try:
                        page.screenshot(
                            path=str(screenshot.with_name(screenshot.stem + "_FAILED.png"))
                        )
                    except Exception:
                        pass
                raise AssertionError(
                    f"{type(e).__name__}: {e}\n--- page text ---\n"
                    f"{page_text(page) if page is not None else '(no page)'}\n"
                    f"--- browser console errors ---\n"
                    + "\n".join(console[-20:])
                    + f"\n--- jupyter log ---\n{server.log_tail()[-2000:]}"
                ) from e
            finally:
                browser.close()
    finally:
        try:
            browser_proc.stop()
        finally:
            server.stop()
    facts["total_s"] = round(time.monotonic() - t0, 1)
    return facts


@pytest.mark.timeout(480)
def test_rank_slider_in_real_browser():
    if not NOTEBOOK.exists():
        pytest.skip(
            f"{NOTEBOOK.relative_to(REPO)} does not exist yet: nothing to drive in the browser"
        )
    if not CHROMIUM.exists() and sys.platform != "linux":
        pytest.skip(f"{CHROMIUM} exists only on Debian-like Linux; this is {sys.platform}")
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: run scripts/install_browser.sh (make test does)"
    )
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.fail(
            "the Python package 'playwright' is missing: it is in requirements.txt (make test installs it)"
        )
    # Our own temp folder, not pytest's tmp_path: concurrent pytest runs prune old tmp_path trees.
    with tempfile.TemporaryDirectory(
        prefix="lorakit-browser-", ignore_cleanup_errors=True
    ) as workdir:
        facts = check_slider_in_browser(NOTEBOOK, SCREENSHOT, Path(workdir))
    print(f"browser test: {facts}")
    assert SCREENSHOT.stat().st_size > 10_000, "the screenshot is suspiciously small"


@pytest.mark.timeout(300)
def test_render_html_embeds_figures(tmp_path):
    """scripts/render_html.py executes a notebook and writes HTML with the figure inside it."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A figure"),
        nbformat.v4.new_code_cell(
            "import matplotlib.pyplot as plt\n"
            "plt.plot([0, 1], [1, 0]); plt.title('a line'); plt.show()\n"
            "print('answer', 6 * 7)"
        ),
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    src = tmp_path / "nb" / "01_figure.ipynb"
    src.parent.mkdir()
    nbformat.write(nb, src)
    out = tmp_path / "html"
    env = dict(
        os.environ, MPLBACKEND="Agg"
    )  # the script must override this, as `make test` sets it
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "render_html.py"),
            "--fast",
            "--out",
            str(out),
            str(src),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert run.returncode == 0, (
        f"render_html.py failed:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
    )
    html = (out / "01_figure.html").read_text()
    assert '<img src="data:image/png;base64,' in html or "data:image/png;base64," in html, (
        "the rendered HTML has no embedded PNG figure"
    )
    assert "answer 42" in html, "the rendered HTML lacks the executed cell's printed output"
    assert (out / "index.html").exists(), "render_html.py wrote no index.html"
    assert not json.loads(src.read_text())["cells"][1]["outputs"], (
        "render_html.py wrote outputs into the source notebook (commit-ready notebooks have none)"
    )
