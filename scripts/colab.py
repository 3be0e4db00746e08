"""Point every notebook's Colab badge and install cell at one repository and one version.

    python scripts/colab.py            # rewrite badges and install cells from pyproject.toml
    python scripts/colab.py --check    # exit 1, naming each notebook that disagrees

The one place that names them is pyproject.toml's ``[tool.lorakit.colab]`` (``repository`` as
owner/name on GitHub, ``ref`` a tag or a commit). A fork edits those two lines and runs this
script; tests/test_colab.py checks that every notebook agrees. Both twins of a notebook (.py and
.ipynb) are rewritten, and only their first cells: the title cell's badge line and the first code
cell (the one starting "# Colab only").

The install cell pins the version (a moving ``main`` would give a workshop whatever was pushed
that morning), and when pip fails it says what to do instead of ending in a bare
``CalledProcessError``: build the wheel with ``make wheel``, upload it to Colab, run the cell again
(it installs an uploaded ``lorakit-*.whl`` before trying GitHub).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
BADGE = re.compile(
    r"\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]"
    r"\(https://colab\.research\.google\.com/github/[^)]*\)"
)
MARK = "# Colab only"


def settings(root: Path = ROOT) -> dict[str, str]:
    """repository, ref (from [tool.lorakit.colab]) and version (from [project]) in pyproject.toml."""
    text = (root / "pyproject.toml").read_text()
    colab = re.search(r"^\[tool\.lorakit\.colab\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    if colab is None:
        raise SystemExit(
            "pyproject.toml has no [tool.lorakit.colab] table (repository = ..., ref = ...)"
        )
    found = dict(re.findall(r'^(\w+)\s*=\s*"([^"]*)"', colab.group(1), re.M))
    found["version"] = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", found.get("repository", "")) or not found.get("ref"):
        raise SystemExit(
            f'[tool.lorakit.colab] needs repository = "owner/name" and ref = "tag or commit", '
            f"got {found}"
        )
    return found


def badge(name: str, s: dict) -> str:
    return (
        "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"(https://colab.research.google.com/github/{s['repository']}/blob/{s['ref']}/notebooks/{name}.ipynb)"
    )


def install_cell(extras: str, s: dict) -> str:
    """The first code cell of every notebook (without a trailing newline)."""
    what = "lorakit and its reference libraries" if extras else "lorakit"
    wheel = f"lorakit-{s['version']}-py3-none-any.whl"
    return f"""{MARK}: install {what} (does nothing anywhere else).
# Written by scripts/colab.py from pyproject.toml [tool.lorakit.colab]: a fork edits that, not this.
import sys

if "google.colab" in sys.modules:
    import glob
    import subprocess

    uploaded = sorted(glob.glob("/content/lorakit-*.whl"))  # a wheel uploaded by hand wins
    source = "file://" + uploaded[-1] if uploaded else "git+https://github.com/{s["repository"]}@{s["ref"]}"
    if subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"lorakit{extras} @ {{source}}"]).returncode:
        raise SystemExit(f"Installing lorakit from {{source}} failed (pip says why above). Instead: on your "
                         "computer, in the course folder, run `make wheel`; upload dist/{wheel} "
                         "with Colab's Files panel (left), then run this cell again.")"""


def _extras(cell: str) -> str:
    return "[reference]" if "lorakit[reference]" in cell else ""


def rewrite_py(text: str, name: str, s: dict) -> str:
    """The .py twin with its badge and Colab cell rewritten."""
    text = BADGE.sub(lambda _: badge(name, s), text, count=1)
    start = text.index(f"# %%\n{MARK}") + len("# %%\n")
    end = text.index("\n# %%", start)
    body = text[start:end].rstrip("\n")
    return text[:start] + install_cell(_extras(body), s) + "\n" + text[end:]


def rewrite_ipynb(text: str, name: str, s: dict) -> str:
    """The .ipynb twin with the same two cells rewritten (stored the way jupytext writes it)."""
    nb = json.loads(text)
    title = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
    title["source"] = [BADGE.sub(lambda _: badge(name, s), line) for line in title["source"]]
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
    if not "".join(cell["source"]).startswith(MARK):
        raise ValueError(f"{name}.ipynb: the first code cell is not the Colab install cell")
    cell["source"] = install_cell(_extras("".join(cell["source"])), s).splitlines(keepends=True)
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def pending(root: Path = ROOT) -> dict[Path, str]:
    """Every notebook file whose badge or install cell differs from pyproject.toml: {path: new text}."""
    s = settings(root)
    out = {}
    for py in sorted((root / "notebooks").glob("[0-9][0-9]_*.py")):
        for path, rewrite in ((py, rewrite_py), (py.with_suffix(".ipynb"), rewrite_ipynb)):
            old = path.read_text()
            new = rewrite(old, py.stem, s)
            if new != old:
                out[path] = new
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    s = settings()
    changes = pending()
    if "--check" in argv:
        for path in changes:
            print(
                f"{path.relative_to(ROOT)}: badge or install cell differs from pyproject.toml "
                "[tool.lorakit.colab]; run python scripts/colab.py"
            )
        return 1 if changes else 0
    for path, text in changes.items():
        path.write_text(text)
        print(f"rewrote {path.relative_to(ROOT)}")
    print(f"every notebook installs lorakit from github.com/{s['repository']} at {s['ref']}")
    known = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", s["ref"]], cwd=ROOT, capture_output=True
    )
    if known.returncode:
        print(
            f"note: {s['ref']} is not a tag or commit in this clone yet: create it (git tag {s['ref']}) "
            "and push it before a workshop, or the install cell fails and says what to do"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
