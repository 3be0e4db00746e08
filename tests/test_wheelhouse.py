"""The offline install (`make wheelhouse`, `make lab WHEELHOUSE=path`): what can be checked cheaply.

- the pip calls the Makefile composes with WHEELHOUSE set use that folder and no index at all,
  and check the folder first (`make -n`, nothing is run);
- scripts/check_wheelhouse.py, on small wheel files made here, walks requirements and the
  dependencies each wheel declares, and names every missing wheel, a wrong version and a wheel for
  another platform;
- `make` with a wheelhouse that lacks a wheel stops before pip runs, naming that wheel.

The real thing (a fresh clone, a fresh venv, no index, no network) was run by hand; the README's
"For instructors" section gives its size and time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECK = REPO / "scripts" / "check_wheelhouse.py"
MAKE = shutil.which("make")
needs_make = pytest.mark.skipif(MAKE is None, reason="`make` is not installed")


def fake_wheel(
    folder: Path, name: str, version: str, requires: list[str] = (), tag: str = "py3-none-any"
) -> Path:
    """A minimal valid wheel file: just its METADATA (what check_wheelhouse reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-{tag}.whl"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    meta += [f"Requires-Dist: {r}" for r in requires]
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}-{version}.dist-info/METADATA", "\n".join(meta) + "\n")
    return path


def check(wheelhouse: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CHECK), str(wheelhouse), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def make_env() -> dict[str, str]:
    """The environment without what a calling `make` passes down (`make test WHEELHOUSE=x` puts
    WHEELHOUSE=x into MAKEFLAGS, and every make below would inherit it)."""
    drop = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "WHEELHOUSE", "WHEELHOUSE_DIR"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def make_dry_run(*args: str) -> str:
    run = subprocess.run(
        [MAKE, "-n", "-B", "-C", str(REPO), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=make_env(),
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


@needs_make
def test_make_installs_from_the_wheelhouse_with_no_index(tmp_path):
    out = make_dry_run(".venv/.installed", f"WHEELHOUSE={tmp_path}/wh")
    installs = [l for l in out.splitlines() if "pip install" in l]
    assert len(installs) == 2, out
    for line in installs:
        assert f'--no-index --find-links "{tmp_path}/wh"' in line, line
    lines = out.splitlines()
    checked = next(i for i, l in enumerate(lines) if "scripts/check_wheelhouse.py" in l)
    assert checked < lines.index(installs[0]), "the wheelhouse must be checked before pip runs"
    assert "-r requirements.lock --project ." in lines[checked]
    # a relative WHEELHOUSE stays relative, quoted (pip runs in the repository root); a path with
    # spaces ("NO NAME", a USB stick) is run for real in tests/test_install.py
    rel = make_dry_run(".venv/.installed", "WHEELHOUSE=wh")
    assert '--find-links "wh"' in rel


@needs_make
def test_make_without_wheelhouse_uses_the_index_as_before():
    out = make_dry_run(".venv/.installed")
    assert "--no-index" not in out and "check_wheelhouse" not in out
    assert "pip install --quiet -r requirements.lock -e ." in " ".join(out.split())


@needs_make
def test_make_wheelhouse_collects_requirements_lorakit_and_the_build_backend():
    out = " ".join(make_dry_run("wheelhouse").split())
    assert (
        'pip wheel --quiet --prefer-binary --wheel-dir "wheelhouse" -r requirements.lock . pip setuptools'
        in out
    )
    assert 'scripts/check_wheelhouse.py "wheelhouse" -r requirements.lock --project . pip' in out
    custom = " ".join(make_dry_run("wheelhouse", "WHEELHOUSE_DIR=/media/usb/wh").split())
    assert '--wheel-dir "/media/usb/wh"' in custom


def test_check_passes_when_every_wheel_is_there(tmp_path):
    wh = tmp_path / "wh"
    fake_wheel(
        wh, "alpha", "1.2", ["gamma>=2", 'delta; python_version < "3"', 'epsilon; extra == "docs"']
    )
    fake_wheel(wh, "beta", "0.3")
    fake_wheel(wh, "gamma", "2.0")
    (tmp_path / "req.txt").write_text("# comment\nalpha>=1.0  # why\nbeta\n-e .\n")
    run = check(wh, "-r", str(tmp_path / "req.txt"))
    assert run.returncode == 0, run.stderr
    assert "covers every requirement (3 wheels)" in run.stdout


def test_check_names_a_missing_wheel_and_who_needs_it(tmp_path):
    wh = tmp_path / "wh"
    fake_wheel(wh, "alpha", "1.2", ["gamma>=2"])
    fake_wheel(wh, "beta", "0.3")
    (tmp_path / "req.txt").write_text("alpha>=1.0\nbeta\n")
    run = check(wh, "-r", str(tmp_path / "req.txt"))
    assert run.returncode == 1
    assert (
        "missing wheel: gamma, needed by alpha 1.2 (>=2): the wheelhouse has no wheel of it at all"
        in run.stderr
    )
    assert "make wheelhouse" in run.stderr


def test_check_names_a_wrong_version_and_a_wrong_platform(tmp_path):
    wh = tmp_path / "wh"
    fake_wheel(wh, "alpha", "0.9")
    fake_wheel(wh, "beta", "1.0", tag="cp27-cp27m-win32")
    (tmp_path / "req.txt").write_text("alpha>=1.0\nbeta\n")
    run = check(wh, "-r", str(tmp_path / "req.txt"))
    assert run.returncode == 1
    assert (
        "missing wheel: alpha" in run.stderr and "has only alpha-0.9-py3-none-any.whl" in run.stderr
    )
    assert "missing wheel: beta" in run.stderr and "no wheel for this Python/platform" in run.stderr
    assert "beta-1.0-cp27-cp27m-win32.whl" in run.stderr


def test_check_reads_the_projects_build_backend(tmp_path):
    wh = tmp_path / "wh"
    fake_wheel(wh, "numpy", "2.0")
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64"]\n[project]\nname = "x"\ndependencies = ["numpy>=1.24"]\n'
    )
    run = check(wh, "--project", str(tmp_path / "proj"))
    assert run.returncode == 1
    assert "missing wheel: setuptools" in run.stderr and "[build-system]" in run.stderr
    assert "numpy" not in run.stderr


def test_check_says_when_the_folder_does_not_exist(tmp_path):
    run = check(tmp_path / "nope", "pip")
    assert (
        run.returncode == 1 and "is not a folder" in run.stderr and "make wheelhouse" in run.stderr
    )


@needs_make
def test_make_stops_before_pip_on_a_missing_wheel(tmp_path):
    """The real Makefile, in a copy of the project with a small requirements file, and a
    wheelhouse that lacks safetensors: make fails naming it, and pip never runs."""
    proj = tmp_path / "proj"
    (proj / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "Makefile", proj)
    shutil.copy(CHECK, proj / "scripts")
    (proj / "requirements.txt").write_text("numpy>=1.24\nsafetensors>=0.4\n")
    (proj / "requirements.lock").write_text("numpy==2.0\nsafetensors==0.4.5\n")
    (proj / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64"]\n[project]\nname = "x"\ndependencies = ["numpy>=1.24"]\n'
    )
    # an existing "venv": this interpreter, so make creates none (that would cost seconds)
    (proj / ".venv" / "bin").mkdir(parents=True)
    os.symlink(sys.executable, proj / ".venv" / "bin" / "python")
    wh = tmp_path / "wh"
    for name, version in (("numpy", "2.0"), ("setuptools", "80.0"), ("pip", "26.0")):
        fake_wheel(wh, name, version)
    run = subprocess.run(
        [MAKE, "-C", str(proj), ".venv/.installed", f"WHEELHOUSE={wh}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=make_env(),
    )
    assert run.returncode != 0, run.stdout
    assert "missing wheel: safetensors, needed by requirements.lock (==0.4.5)" in run.stderr, (
        run.stderr
    )
    assert "--no-index" not in run.stdout, "pip ran although the wheelhouse was incomplete"
    assert not (proj / ".venv" / ".installed").exists()
