"""The install a participant does, broken the ways it breaks (issue 20, items 2-4).

Each broken install is planted for real, cheaply: a copy of the checkout's Makefile and of
lorakit's standard-library-only check in a temporary folder, a fake venv (a pyvenv.cfg beside a
link to this machine's Python, with no packages in it), or an interpreter started with -S (no
site-packages: torch is missing). The Makefile is run for real with a stand-in `.venv/bin/python`
that records the arguments it is called with, so quoting and the pip command line are what make
and the shell really produce. No test here installs anything or imports torch in a subprocess.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from lorakit import check

ROOT = Path(__file__).parents[1]
BASE_PYTHON = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
HAS_MAKE = shutil.which("make") is not None
needs_make = pytest.mark.skipif(not HAS_MAKE, reason="make is not installed")
END = "@@end-of-call@@"


def clean_env(**extra) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "VIRTUAL_ENV", "MAKE", "MFLAGS"))
    }
    env.update(PYTHONNOUSERSITE="1", **extra)
    return env


def fake_checkout(tmp: Path) -> Path:
    """A checkout with the real Makefile, lock, pyproject and check, and no .venv."""
    root = tmp / "course"
    (root / "lorakit").mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml", "requirements.txt", "requirements.lock"):
        shutil.copy(ROOT / name, root / name)
    for name in ("__init__.py", "check.py", "quiet.py"):
        shutil.copy(ROOT / "lorakit" / name, root / "lorakit" / name)
    return root


def fake_venv(root: Path, stamp: str | None = "good") -> Path:
    """root/.venv: a real (empty) venv made of a pyvenv.cfg and a link to this machine's Python."""
    venv = root / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(
        f"home = {BASE_PYTHON.parent}\ninclude-system-site-packages = false\n"
    )
    (venv / "bin" / "python").symlink_to(BASE_PYTHON)
    if stamp == "good":
        (venv / ".installed").write_text(check.stamp_text(root / "requirements.lock"))
    elif stamp == "stale":
        (venv / ".installed").write_text(
            check.stamp_text(root / "requirements.lock").replace("sha256=", "sha256=0")
        )
    return venv


def run_check(python, root: Path, *flags) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), *flags, "-m", "lorakit.check"],
        cwd=root,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_answers(run, *expected):
    """The check answered: no traceback, nothing on stderr, exit 1, and the expected lines."""
    assert "Traceback" not in run.stdout + run.stderr and run.stderr == "", run.stderr
    assert run.returncode == 1, run.stdout
    for text in expected:
        assert text in run.stdout, f"{text!r} not in:\n{run.stdout}"


# ------------------------------------------------------------------ the environment check
def test_missing_package_in_the_course_venv_says_make_reinstall(tmp_path):
    root = fake_checkout(tmp_path)
    venv = fake_venv(root)
    run = run_check(venv / "bin" / "python", root)
    assert_answers(run, "[OK] venv", "[FAIL] torch", "not installed", "FIX: run `make reinstall`")
    lines = run.stdout.splitlines()
    assert lines.index(next(l for l in lines if "[FAIL] torch" in l)) < lines.index(lines[-1]), (
        "the fix comes last"
    )


def test_wrong_python_without_torch_says_which_python_to_use(tmp_path):
    """A system Python (here: no site-packages at all) running the check in a checkout with .venv."""
    root = fake_checkout(tmp_path)
    fake_venv(root)
    run = run_check(BASE_PYTHON, root, "-S")
    assert_answers(
        run,
        "[WARN] venv   this is not the course's Python",
        "[FAIL] torch",
        "FIX: run `make check`",
    )


def test_no_venv_yet_says_make_lab(tmp_path):
    root = fake_checkout(tmp_path)
    run = run_check(BASE_PYTHON, root, "-S")
    assert_answers(run, "no " + str(root / ".venv"), "[FAIL] torch", "FIX: run `make lab`")


def test_stale_venv_says_make_reinstall(tmp_path):
    root = fake_checkout(tmp_path)
    venv = fake_venv(root, stamp="stale")
    run = run_check(venv / "bin" / "python", root)
    assert_answers(
        run, "[WARN] venv   stale: requirements.lock changed", "FIX: run `make reinstall`"
    )


def test_unfinished_install_says_make_reinstall(tmp_path):
    root = fake_checkout(tmp_path)
    venv = fake_venv(root, stamp=None)
    run = run_check(venv / "bin" / "python", root)
    assert_answers(run, "never finished", "FIX: run `make reinstall`")


def test_broken_venv_says_make_clean_lab(tmp_path):
    """The Python that made .venv is gone (e.g. upgraded away by Homebrew): its link dangles."""
    root = fake_checkout(tmp_path)
    venv = fake_venv(root)
    (venv / "bin" / "python").unlink()
    (venv / "bin" / "python").symlink_to(tmp_path / "python3.9-upgraded-away")
    run = run_check(BASE_PYTHON, root, "-S")
    assert_answers(run, "is broken", "FIX: run `make clean lab`")


@pytest.mark.parametrize(
    "in_venv, fix",
    [(True, "`make clean lab PYTHON=python3.12`"), (False, "`make lab PYTHON=python3.12`")],
)
def test_python_too_old_is_fatal_and_names_a_new_one(tmp_path, monkeypatch, in_venv, fix):
    """macOS's stock python3 is 3.9 (no 3.9 on this machine: the version is handed in)."""
    root = fake_checkout(tmp_path)
    venv = fake_venv(root)
    if in_venv:
        monkeypatch.setattr(sys, "prefix", str(venv))
    lines, got, fatal = check.python_findings(root, version=(3, 9, 6))
    assert fatal is True and got.startswith(fix), got
    assert any("[FAIL] python 3.9.6 is too old" in line for line in lines)


def test_healthy_conda_style_python_is_not_told_to_repair(tmp_path, monkeypatch):
    """Not .venv, but every package imports (conda, or the learner's own venv): a warning, no FIX."""
    root = fake_checkout(tmp_path)
    monkeypatch.setattr(check, "REQUIRED", [("json", "stdlib")])
    monkeypatch.setattr(check, "REFERENCE", [])
    text, ok = check.report(root)
    assert ok and "[WARN] venv" in text and "FIX:" not in text, text


def test_the_check_prints_line_by_line_before_importing_torch():
    source = (ROOT / "lorakit" / "check.py").read_text()
    head = source[: source.index("def thread_line")]
    assert "import torch" not in head and "from .train" not in head, (
        "check.py must not need torch to start"
    )
    main = source[source.index("def main") :]
    assert "flush=True" in main


# ------------------------------------------------------------------ the Makefile, run for real
RECORDER = f"""#!/bin/sh
case "$2" in *version_info*) echo "$FAKE_ID"; exit 0;; esac
for a in "$@"; do printf '%s\\n' "$a" >> "$CALLS"; done
echo {END} >> "$CALLS"
"""


def recorded_make(
    root: Path, *args, fake_id="3 9 6 /old", dry=False
) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Run make in `root`, whose .venv/bin/python only records its arguments; (result, calls)."""
    python = root / ".venv" / "bin" / "python"
    if not python.exists():
        python.parent.mkdir(parents=True)
        python.write_text(RECORDER)
        python.chmod(0o755)
    calls = root / "calls.txt"
    calls.write_text("")
    run = subprocess.run(
        ["make", *(["-n"] if dry else []), *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(CALLS=str(calls), FAKE_ID=fake_id),
    )
    out, call = [], []
    for line in calls.read_text().splitlines():
        if line == END:
            out.append(call)
            call = []
        else:
            call.append(line)
    return run, out


def pip_install(calls) -> list[str]:
    """The pip call that installs the course (the one with -e .)."""
    return next(c for c in calls if c[:3] == ["-m", "pip", "install"] and "-e" in c)


@needs_make
def test_make_installs_the_lock_file_by_default(tmp_path):
    run, calls = recorded_make(fake_checkout(tmp_path), ".venv/.installed")
    assert run.returncode == 0, run.stderr
    call = pip_install(calls)
    assert call[call.index("-r") + 1] == "requirements.lock" and "--upgrade" not in call, call
    stamp = next(c for c in calls if "--write-stamp" in c)
    assert stamp[-2:] == ["requirements.lock", "default"], "the stamp records what was installed"


@needs_make
def test_make_lock0_and_torch_cpu(tmp_path):
    run, calls = recorded_make(fake_checkout(tmp_path), ".venv/.installed", "LOCK=0", "TORCH=cpu")
    assert run.returncode == 0, run.stderr
    call = pip_install(calls)
    assert call[call.index("-r") + 1] == "requirements.txt" and "--upgrade" in call
    assert call[call.index("--extra-index-url") + 1] == "https://download.pytorch.org/whl/cpu"


@needs_make
@pytest.mark.parametrize("relative", [False, True])
def test_wheelhouse_on_a_usb_stick_named_no_name(tmp_path, relative):
    root = fake_checkout(tmp_path)
    stick = root / "NO NAME" / "wheel house"
    stick.mkdir(parents=True)
    where = "NO NAME/wheel house" if relative else str(stick)
    run, calls = recorded_make(root, ".venv/.installed", f"WHEELHOUSE={where}")
    assert run.returncode == 0, run.stderr
    checker = next(c for c in calls if c[0] == "scripts/check_wheelhouse.py")
    assert checker[1] == where, checker
    for call in (c for c in calls if c[:3] == ["-m", "pip", "install"]):
        assert call[call.index("--find-links") + 1] == where and "--no-index" in call, call


@needs_make
def test_make_lab_with_another_python_rebuilds_the_venv(tmp_path):
    """`make lab PYTHON=python3.12` over a .venv made by Python 3.9 deletes it and starts again."""
    root = fake_checkout(tmp_path)
    run, _ = recorded_make(
        root, ".venv/.installed", f"PYTHON={BASE_PYTHON}", dry=True, fake_id="3 9 6 /old"
    )
    assert run.returncode == 0, run.stderr
    assert "was not made by PYTHON=" in run.stdout and 'rm -rf ".venv"' in run.stdout, run.stdout


@needs_make
def test_make_with_the_same_python_keeps_a_finished_venv(tmp_path):
    root = fake_checkout(tmp_path)
    same = subprocess.run(
        [str(BASE_PYTHON), "-c", "import sys; print(*sys.version_info[:3], sys.base_prefix)"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    recorded_make(root, "--version")  # creates the recorder
    (root / ".venv" / ".installed").write_text("done")
    run, calls = recorded_make(
        root, ".venv/.installed", f"PYTHON={BASE_PYTHON}", dry=True, fake_id=same
    )
    assert run.returncode == 0 and "rm -rf" not in run.stdout and "is up to date" in run.stdout, (
        run.stdout
    )


@needs_make
def test_a_stamp_older_than_the_lock_file_reinstalls(tmp_path):
    """ "Run make lab again" repairs: the stamp depends on the lock file; make reinstall forces it."""
    root = fake_checkout(tmp_path)
    recorded_make(root, "--version")
    stamp = root / ".venv" / ".installed"
    stamp.write_text("done")
    os.utime(stamp, (1, 1))
    run, calls = recorded_make(root, ".venv/.installed")
    assert run.returncode == 0 and any("-e" in c for c in calls), run.stdout
    run, calls = recorded_make(root, "reinstall")
    assert run.returncode == 0 and any("-e" in c for c in calls), run.stdout


@needs_make
def test_make_check_answers_without_a_venv(tmp_path):
    root = fake_checkout(tmp_path)
    run = subprocess.run(
        ["make", "check", f"PYTHON={BASE_PYTHON} -S"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert "[FAIL] torch" in run.stdout and "FIX: run `make lab`" in run.stdout, (
        run.stdout + run.stderr
    )


def test_make_exports_the_thread_setting_to_every_kernel():
    makefile = (ROOT / "Makefile").read_text()
    assert (
        "export OMP_WAIT_POLICY ?= PASSIVE" in makefile and "export KMP_BLOCKTIME ?= 0" in makefile
    )


# ------------------------------------------------------------------ the lock file
def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_the_lock_pins_exact_public_versions_that_satisfy_requirements_txt():
    pins = lock_pins()
    assert not {"lorakit", "pip", "setuptools"} & set(pins)
    assert all("+" not in v for v in pins.values()), (
        "no local labels: torch==2.13.0 matches +cpu builds too"
    )
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            name = req.name.lower().replace("_", "-")
            assert name in pins, f"{req.name} is in requirements.txt but not in requirements.lock"
            assert req.specifier.contains(pins[name]), (
                f"the lock's {name}=={pins[name]} breaks {line}"
            )


def test_the_lock_is_what_make_installed_here():
    """In a venv that make installed from the lock (CI: a fresh clone, `make test`), every
    distribution's version is the lock's, and nothing else was installed."""
    stamp = check.read_stamp(ROOT / ".venv" / ".installed")
    if (
        Path(sys.prefix).resolve() != (ROOT / ".venv").resolve()
        or stamp.get("source") != "requirements.lock"
        or stamp.get("sha256") != check.file_digest(ROOT / "requirements.lock")
    ):
        pytest.skip(
            "this Python was not installed from requirements.lock by make (e.g. make test-latest)"
        )
    pins = lock_pins()
    installed = {
        d.metadata["Name"].lower().replace("_", "-"): d.version
        for d in importlib.metadata.distributions()
    }
    wrong = {
        n: (v, installed.get(n))
        for n, v in pins.items()
        if installed.get(n) is None or Version(installed[n]).public != Version(v).public
    }
    assert not wrong, f"pinned vs installed: {wrong}"
    extra = set(installed) - set(pins) - {"lorakit", "pip", "setuptools", "wheel"}
    assert not extra, f"installed but not in requirements.lock (run make lock): {sorted(extra)}"
