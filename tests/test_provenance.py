"""One provenance convention, and no measured number in the package's docstrings (issue 25).

Provenance: every public function and class in ``lorakit/`` names the notebook section that
derives it, as a comment ``# notebook NN §N`` on its ``def``/``class`` line (or its decorator
line, the line just above, or inside a signature that ruff format wrapped). The section must exist: notebook NN has a
markdown heading ``## N. ...``. Course plumbing (environment check, quiet imports, argument
checks, version checks, process launching) derives nothing and is listed in PLUMBING.

Numbers: a measured figure (a time, a speed ratio, bits per byte from one run, a rate) goes
stale in a docstring; it lives where it is measured (``bench/results/``, a notebook's output),
and a docstring points there. The patterns below catch the kinds that were found written in.
"""

import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "lorakit"
# modules that teach nothing: the course's plumbing (DESIGN.md: "stays apart from the concept modules")
PLUMBING = {"__init__", "check", "launcher", "quiet", "validate", "versions"}
REF = re.compile(r"#.*?\bnotebook (\d\d) §(\d+)((?:(?:,| and) (?:(?:notebook )?\d\d )?§\d+)*)")
EXTRA = re.compile(r"(?:(\d\d) )?§(\d+)")


def _sections() -> dict[str, set[int]]:
    found = {}
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        heads = set()
        for cell in cells:
            if cell["cell_type"] == "markdown":
                heads |= {
                    int(n) for n in re.findall(r"^#{2,3} (\d+)\. ", "".join(cell["source"]), re.M)
                }
        found[nb.name[:2]] = heads
    return found


def _definitions(source: str):
    """(node, refs) for each public top-level def/class: refs = [(notebook, section), ...]."""
    lines = source.splitlines()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            first = min([d.lineno for d in node.decorator_list] + [node.lineno])
            # from the line above the first decorator to the end of the signature: ruff format
            # moves a def line's trailing comment into a wrapped parameter list
            refs = []
            for line in lines[max(first - 2, 0) : node.body[0].lineno - 1]:
                m = REF.search(line)
                if m:
                    nb = m.group(1)
                    refs.append((nb, int(m.group(2))))
                    for other_nb, sec in EXTRA.findall(m.group(3) or ""):
                        nb = other_nb or nb
                        refs.append((nb, int(sec)))
            yield node, refs


def test_every_public_definition_names_an_existing_notebook_section():
    sections = _sections()
    missing, wrong = [], []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem in PLUMBING:
            continue
        for node, refs in _definitions(path.read_text()):
            where = f"lorakit/{path.name}:{node.lineno} {node.name}"
            if not refs:
                missing.append(where)
            for nb, sec in refs:
                if sec not in sections.get(nb, set()):
                    wrong.append(
                        f"{where}: notebook {nb} has no section {sec} (its sections: "
                        f"{sorted(sections.get(nb, set())) or 'no such notebook'})"
                    )
    assert not missing, (
        "public definitions without provenance; add `  # notebook NN §N` (the notebook and the "
        "section that derives it) at the end of the def/class line, e.g. "
        "`def inject_lora(model, ...):  # notebook 02 §2`; for course plumbing that derives "
        "nothing, add the module to PLUMBING in tests/test_provenance.py:\n  "
        + "\n  ".join(missing)
    )
    assert not wrong, "provenance names a section that does not exist:\n  " + "\n  ".join(wrong)


def test_the_provenance_reader_finds_each_place_and_only_those():
    source = """
def plain(x):  # notebook 02 §4
    return x


@decorated  # notebook 01 §5 and 03 §4
def decorated_one(x):
    return x


def wrapped(
    x,  # notebook 10 §3
    y,
):
    \"\"\"A docstring that mentions notebook 09 §2 is not the place.\"\"\"
    return x


def bare(x):
    \"\"\"Notebook 06 §5, step 3: docstrings do not count.\"\"\"
    return x  # notebook 07 §2 in the body does not count either
"""
    found = {node.name: refs for node, refs in _definitions(source)}
    assert found == {
        "plain": [("02", 4)],
        "decorated_one": [("01", 5), ("03", 4)],
        "wrapped": [("10", 3)],
        "bare": [],
    }, found


# a time, a speed ratio against something, bits per byte to 3 decimals, a throughput
MEASURED = re.compile(
    r"\d+(?:\.\d+)?\s?(?:ms|µs|s|min)\b(?! *(?:×|x)\b)(?! ?\w*/)"  # 0.054 s, 15 s, 3 min
    r"|\d+(?:\.\d+)?(?:–\d+(?:\.\d+)?)?\s?×\s+(?:faster|slower|the time)"  # 4–5× faster, 0.2× the time
    r"|\d\.\d{3}\s?bits(?:/| per )byte"  # 2.478 bits/byte
    r"|\d+(?:\.\d+)?\s?(?:steps/s|it/s|GB/s|tokens/s)"  # 3.3 steps/s
)


def _docstrings():
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in [tree, *ast.walk(tree)]:
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node, clean=False)
                if doc:
                    yield f"{path.relative_to(ROOT)}:{getattr(node, 'name', '<module>')}", doc


def test_no_measured_number_in_package_docstrings():
    found = [
        f"{where}: {m.group(0)!r}" for where, doc in _docstrings() for m in MEASURED.finditer(doc)
    ]
    assert not found, (
        "measured figures written into docstrings go stale; say where they are measured instead "
        "(bench/results/<file>, or the notebook section that prints them):\n  " + "\n  ".join(found)
    )


def test_the_number_pattern_catches_what_it_is_for():
    for stale in [
        "≈ 4–5× faster than",
        "quantize ≈ 0.2–0.3× the time of",
        "took 0.054 s",
        "(2.478 bits/byte",
        "runs 3.3 steps/s",
        "≈ 15 s on 2 cores",
    ]:
        assert MEASURED.search(stale), stale
    for fine in [
        "a 4096×4096 weight",
        "4.127 bits/param",
        "373.2× fewer",
        "r = 64, batch 1×512",
        "2 × 4 bytes",
    ]:
        assert not MEASURED.search(fine), fine
