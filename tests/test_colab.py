"""Colab: one place names the repository and version; every badge and install cell agrees (issue 20, item 5)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
spec = importlib.util.spec_from_file_location("colab", ROOT / "scripts" / "colab.py")
colab = importlib.util.module_from_spec(spec)
spec.loader.exec_module(colab)
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


def test_every_badge_and_install_cell_agrees_with_pyproject():
    stale = colab.pending()
    assert not stale, f"run python scripts/colab.py: {[str(p.relative_to(ROOT)) for p in stale]}"


def test_the_repository_is_named_in_one_place():
    s = colab.settings()
    assert re.fullmatch(r"[\w.-]+/[\w.-]+", s["repository"]) and s["ref"] not in (
        "main",
        "master",
        "HEAD",
    )
    for py in NOTEBOOKS:
        for path in (py, py.with_suffix(".ipynb")):
            text = path.read_text()
            found = set(
                re.findall(r"github(?:\.com)?/([\w.-]+/[\w.-]+)(?:/blob/|@)([\w.-]+)", text)
            )
            assert found == {(s["repository"], s["ref"])}, (path.name, found)


def test_a_fork_changes_every_notebook_from_one_place(tmp_path):
    fork = {"repository": "someone/lorakit-fork", "ref": "0123abc", "version": "9.9.9"}
    for py in NOTEBOOKS:
        for path, rewrite in (
            (py, colab.rewrite_py),
            (py.with_suffix(".ipynb"), colab.rewrite_ipynb),
        ):
            new = rewrite(path.read_text(), py.stem, fork)
            assert "lorakit/lorakit" not in new, path.name
            assert (
                f"colab.research.google.com/github/someone/lorakit-fork/blob/0123abc/notebooks/{py.stem}.ipynb"
                in new
            )
            assert "git+https://github.com/someone/lorakit-fork@0123abc" in new
            assert rewrite(new, py.stem, fork) == new, "rewriting twice changes nothing"


def install_cell(path: Path) -> str:
    nb = json.loads(path.read_text())
    return "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])


@pytest.mark.parametrize("returncode", [0, 1])
def test_install_cell_on_colab_pins_the_version_and_a_failure_says_what_to_do(
    monkeypatch, returncode
):
    """The cell run as Colab runs it (google.colab imported), with pip replaced by a stand-in."""
    calls = []

    def fake_run(args, **kwargs):
        calls.append(args)
        return subprocess.CompletedProcess(args, returncode)

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", fake_run)
    s = colab.settings()
    cell = install_cell(ROOT / "notebooks" / "09_qlora_on_a_real_llm.ipynb")
    if returncode:
        with pytest.raises(SystemExit) as failed:
            exec(cell, {})
        message = str(failed.value)
        assert "make wheel" in message and f"lorakit-{s['version']}-py3-none-any.whl" in message
        assert "run this cell again" in message
    else:
        exec(cell, {})
    assert (
        calls[0][-1] == f"lorakit[reference] @ git+https://github.com/{s['repository']}@{s['ref']}"
    )


def test_install_cell_does_nothing_off_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip ran outside Colab"))
    for py in NOTEBOOKS:
        exec(install_cell(py.with_suffix(".ipynb")), {})
