"""Notebook hygiene: every notebook has its py:percent twin with the same cells, and any stored
outputs come from one clean top-to-bottom run (execution counts 1..N, no stored error)."""

import json
from pathlib import Path

import jupytext
import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_the_course_has_its_notebooks():
    names = [p.stem for p in NOTEBOOKS]
    assert names and names[0] == "00_start_here", names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_pair_agrees(path):
    twin = path.with_suffix(".py")
    assert twin.exists(), (
        f"{path.name} has no py:percent twin {twin.name} (run: jupytext --sync {path})"
    )
    a, b = _cells(jupytext.read(path)), _cells(jupytext.read(twin))
    assert a == b, f"{path.name} and {twin.name} differ: run `jupytext --sync {path}`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_come_from_one_clean_run(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    counts = [c.get("execution_count") for c in code]
    ran = [c for c in counts if c is not None]
    assert ran in ([], list(range(1, len(code) + 1))), f"{path.name}: execution counts {ran}"
    for c in code:
        if c.get("execution_count") is None:
            assert not c.get("outputs"), f"{path.name}: an unrun cell has stored outputs"
        for out in c.get("outputs", []):
            assert out.get("output_type") != "error", f"{path.name}: a stored output is an error"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_follows_the_house_layout(path):
    text = path.with_suffix(".py").read_text(encoding="utf-8")
    assert "You will" in text, f"{path.name}: missing the 'You will' bullets"
    assert "Runtime" in text, f"{path.name}: missing the runtime table"
    assert "## Summary" in text or "Summary" in text, f"{path.name}: missing the Summary"
    assert "Exercise" in text, f"{path.name}: missing exercises"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_colab_badge_and_install_cell(path):
    nb = jupytext.read(path)
    first_md = next(c for c in nb.cells if c.cell_type == "markdown")
    assert "colab-badge.svg" in first_md.source and f"notebooks/{path.name})" in first_md.source, (
        f"{path.name}: the title cell needs an 'Open in Colab' badge pointing at this notebook"
    )
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert (
        'if "google.colab" in sys.modules:' in first_code.source and "pip" in first_code.source
    ), f"{path.name}: the first code cell must install lorakit on Colab only"


KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
FILTER = "-jupytext.text_representation.jupytext_version"
FIX = (
    "give both twins the course's metadata: put the py header of 00_start_here.py on the .py, then "
    "`jupytext --to ipynb --update NN_name.py` (notebooks/jupytext.toml supplies the filter)"
)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_both_twins_carry_complete_metadata(path):
    """A notebook opens straight into the course kernel (no "Select Kernel" dialog: ipykernel's own
    kernelspec, so JupyterLab has nothing to rewrite), and opening and saving it in JupyterLab with
    jupytext leaves both tracked files byte for byte unchanged."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["metadata"].get("kernelspec") == KERNELSPEC, (
        f"{path.name}: kernelspec must be {KERNELSPEC}; {FIX}"
    )
    assert nb["metadata"].get("jupytext", {}).get("notebook_metadata_filter") == FILTER, (
        f"{path.name}: the jupytext metadata must carry notebook_metadata_filter {FILTER!r}; {FIX}"
    )
    twin = path.with_suffix(".py")
    saved_py = jupytext.writes(jupytext.read(path), fmt="py:percent")
    assert saved_py == twin.read_text(encoding="utf-8"), (
        f"{twin.name} is not what jupytext writes when {path.name} is saved (header metadata?); {FIX}"
    )
    text = path.read_text(encoding="utf-8")
    assert nbformat.writes(nbformat.reads(text, as_version=4)) + "\n" == text, (
        f"{path.name} is not in Jupyter's own formatting, so a save would rewrite it; {FIX}"
    )
