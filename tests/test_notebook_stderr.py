"""The repository's conftest.py fails any notebook cell that writes to stderr under nbval
(`make test`): a clean run of a notebook on a healthy machine shows no red (issue 11, item 12).

The hook reads the outputs nbval already collected, so checking every notebook costs nothing
extra; here we check the hook itself on a two-cell notebook (one kernel start, a few seconds).
"""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("root_conftest", REPO / "conftest.py")
_root_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root_conftest)
stderr_text = _root_conftest.stderr_text  # the hook's helper (tests/conftest.py is another module)


def test_stderr_text_picks_only_stderr_streams():
    outputs = [
        {"output_type": "stream", "name": "stdout", "text": "fine\n"},
        {"output_type": "stream", "name": "stderr", "text": "Failed to load ...\n"},
        {"output_type": "display_data", "data": {"text/plain": "x"}},
    ]
    assert stderr_text(outputs) == "Failed to load ...\n"
    assert stderr_text([]) == "" and stderr_text(None) == ""


def _notebook(path: Path, *sources: str) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nbformat.write(nb, path)


def test_a_cell_writing_to_stderr_fails_under_nbval(tmp_path):
    shutil.copy(REPO / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    _notebook(
        tmp_path / "two_cells.ipynb",
        "import sys\nprint('all good', file=sys.stdout)",
        "print('W1129 a harmless-looking warning', file=sys.stderr)",
    )  # one kernel start
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--nbval-lax",
            "--nbval-current-env",
            "--rootdir",
            str(tmp_path),
            "-c",
            str(tmp_path / "pytest.ini"),
            str(tmp_path / "two_cells.ipynb"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 1, out[-3000:]
    assert "1 failed, 1 passed" in out, out[-3000:]
    assert "wrote to stderr" in out and "W1129 a harmless-looking warning" in out, out[-3000:]
