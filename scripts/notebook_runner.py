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
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def arguments(
    description: str, default_out: Path, argv: list[str] | None, extra=None
) -> argparse.Namespace:
    """Parse `notebooks... --out --fast --timeout` (+ the script's ``extra(parser)`` options);
    ``args.paths`` holds the notebooks, checked to exist."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "notebooks",
        nargs="*",
        type=Path,
        help="notebooks to use (default: every notebooks/NN_*.ipynb)",
    )
    parser.add_argument(
        "--out", type=Path, default=default_out, help=f"output folder (default {default_out})"
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="test mode (LORAKIT_FAST=1, cache in .cache/test): smaller, quicker runs",
    )
    parser.add_argument(
        "--timeout", type=int, default=900, help="seconds allowed per cell (default 900)"
    )
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


def execute(nb, path: Path, timeout: int, after=None) -> str | None:
    """Run ``nb`` in place (cwd = the notebook's folder); why it failed (one line), or None.

    Widget state is always stored: nbclient's stand-in for an ipywidgets ``Output`` writes into
    it, and with ``store_widget_state=False`` nbclient 0.11 fails with a KeyError in
    ``output_widget.py`` on every notebook that shows a slider. A caller that does not want the
    state in its file drops ``nb.metadata.widgets`` afterwards.

    ``after(client)``, if given, runs while the kernel is still alive (after the last cell), so
    it can execute more code against the notebook's live objects (make_slides.py uses it to draw
    each slider's states); what it returns, if not None, is reported as the failure.

    A reply that never comes (nbclient sometimes waits forever while the kernel sits idle:
    jupyter/nbclient#312; seen here on the start-up ``kernel_info`` request and on cells, on a
    busy machine) is cut by an alarm, and the notebook is run once more in a fresh kernel.
    """
    error = _execute_once(nb, path, timeout, after)
    if isinstance(error, CellHang):
        print(f"       {number_of(path)}: {error}; running it again in a fresh kernel", flush=True)
        error = _execute_once(nb, path, timeout, after)
    return str(error) if error is not None else None


def _execute_once(nb, path: Path, timeout: int, after=None):
    """One try of ``execute``: None, the failure's line, or the ``CellHang`` that stopped it."""
    import signal

    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    waiting_for = ["the kernel's start-up reply"]

    def hung(signum, frame):
        raise CellHang(
            f"{waiting_for[0]} never came while the kernel sat idle (jupyter/nbclient#312)"
        )

    def alarm(seconds: float, what: str) -> None:
        waiting_for[0] = what
        signal.setitimer(signal.ITIMER_REAL, seconds)

    previous = signal.signal(signal.SIGALRM, hung)  # nbclient's own timeout does not fire then
    try:
        with client.setup_kernel():
            alarm(STARTUP_LIMIT, "the kernel's start-up reply")
            info = client.wait_for_reply(client.kc.kernel_info())
            nb.metadata["language_info"] = info["content"]["language_info"]
            for index, cell in enumerate(nb.cells):
                alarm(timeout + 120, f"the answer to cell {index}")
                client.execute_cell(cell, index)
            signal.setitimer(signal.ITIMER_REAL, 0)
            client.set_widgets_metadata()
            if after is not None:
                return after(client)
    except CellExecutionError as e:  # a cell raised: its last line names the exception
        return _last_line(e)
    except (CellTimeoutError, TimeoutError) as e:
        return f"a cell ran longer than {timeout} s ({_last_line(e)})"
    except DeadKernelError as e:
        return f"the kernel died ({_last_line(e)}); out of memory?"
    except CellHang as e:
        return e
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return None


#: seconds the kernel may take to answer ``kernel_info`` once started (it answers in well under one)
STARTUP_LIMIT = 60


class CellHang(Exception):
    """A cell whose answer never came (see ``execute``)."""


def _last_line(e: BaseException) -> str:
    """The error's last line, without the terminal colours IPython puts in tracebacks."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    return (text.splitlines() or [repr(e)])[-1]


def number_of(path: Path) -> str:
    """``NN`` of notebooks/NN_name.ipynb (the whole stem for any other name)."""
    return path.stem.split("_", 1)[0] if path.stem[:2].isdigit() else path.stem


def run_all(paths: list[Path], build) -> tuple[list, list[str]]:
    """``build(path) -> (target, row, error, note)`` for each notebook, reporting as it goes.

    A notebook that fails, in a cell or in the builder itself, is reported as
    ``FAILED NN: why`` and the others are still built. Returns the rows (for the index) and the
    names of the notebooks that failed."""
    rows, failed = [], []
    for path in paths:
        start = time.monotonic()
        try:
            target, row, error, note = build(path.resolve())
        except Exception as e:  # noqa: BLE001 - one broken notebook must not stop the other decks
            target, row, error, note = None, None, f"{type(e).__name__}: {_last_line(e)}", ""
        took = time.monotonic() - start
        if row is not None:
            rows.append(row)
        if error:
            failed.append(path.name)
            partial = f"; partial output in {target}" if target else ""
            print(
                f"FAILED {number_of(path)}: {error}  ({path.name}, after {took:.1f} s{partial})",
                flush=True,
            )
        else:
            print(
                f"ok     {number_of(path)}: {path.name} -> {target} ({note}{took:.1f} s)",
                flush=True,
            )
    return rows, failed


def write_index(
    out_dir: Path, title: str, heading: str, intro: str, items: list[tuple[str, str, str]]
) -> Path:
    """out_dir/index.html: an ordered list of (href, name, text after the link)."""
    lines = "\n".join(
        f'<li><a href="{html.escape(href)}">{html.escape(name)}</a> {html.escape(after)}</li>'
        for href, name, after in items
    )
    index = out_dir / "index.html"
    index.write_text(
        f"<!doctype html>\n<meta charset='utf-8'>\n<title>{html.escape(title)}</title>\n"
        f"<h1>{html.escape(heading)}</h1>\n<p>{intro}</p>\n<ol>\n{lines}\n</ol>\n",
        encoding="utf-8",
    )
    print(f"index: {index}")
    return index


def finish(failed: list[str]) -> int:
    """The exit code: 1 (and the names, on stderr) if any notebook failed."""
    if failed:
        print(
            f"{len(failed)} notebook(s) failed: {', '.join(failed)} (see FAILED above)",
            file=sys.stderr,
        )
        return 1
    return 0
