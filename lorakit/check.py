"""Environment check: what a learner pastes into a bug report (notebook 00, ``make check``).

Run ``make check``, or ``.venv/bin/python -m lorakit.check`` (Windows: ``.venv\\Scripts\\python -m
lorakit.check``). It prints one line at a time, so it answers even on the most broken install:

- which Python runs it, and whether that is the course's virtual environment (``.venv``);
- whether ``.venv`` is stale (installed from another lock file or by another Python: the stamp
  ``.venv/.installed`` that ``make`` writes records both);
- each package ``[OK]``/``[FAIL]`` with its version; torch is only ever imported *here*, so a
  missing torch is a ``[FAIL]`` line and not a traceback;
- the device the course will use and the thread setting (when torch imports);
- and last, one command that repairs what failed (``make reinstall``, ``make clean lab``, ...).

This file uses the standard library only (and runs on an old Python, to say that it is too old).
Packages are imported through ``lorakit.quiet.quiet``, so their known-harmless start-up messages
(bitsandbytes and torchao looking for GPU kernels a CPU machine does not have) do not paint a
healthy check red; the report says in one line which packages printed something, and
``lorakit.quiet.HIDDEN`` keeps the text.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import platform
import sys
from pathlib import Path

from .quiet import HIDDEN, quiet

# (import name, what it is for); the first group is required, the second is the reference set
REQUIRED = [
    ("torch", "tensors and autograd"),
    ("numpy", "arrays"),
    ("matplotlib", "figures"),
    ("tqdm", "progress bars"),
    ("safetensors", "weight files that cannot run code"),
    ("ipywidgets", "sliders"),
]
REFERENCE = [
    ("bitsandbytes", "reference NF4/FP4 quantization"),
    ("peft", "reference LoRA"),
    ("transformers", "Hugging Face models"),
    ("torchao", "a second NF4 dialect"),
    ("gguf", "llama.cpp's file format and Q8_0/Q4_0 (notebook 12)"),
]
#: the Pythons the course is tested on (README, "Platforms")
SUPPORTED = ((3, 10), (3, 12))
#: the checkout this copy of lorakit sits in (a pip or Colab install has no Makefile beside it)
ROOT = Path(__file__).resolve().parents[1]
LOCK = "requirements.lock"
GOOD_PYTHON = "python3.12"


# ---------------------------------------------------------------- the stamp `make` writes
def file_digest(path: Path) -> str:
    """sha256 of a file: the stamp records the lock file's, so an edited lock makes .venv stale."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stamp_text(source: Path, torch_build: str = "default") -> str:
    """What ``.venv/.installed`` holds after a finished install (``make`` writes it)."""
    return (
        f"python={platform.python_version()}\n"
        f"base={Path(sys.base_prefix).resolve()}\n"
        f"source={source.name}\n"
        f"sha256={file_digest(source)}\n"
        f"torch={torch_build}\n"
    )


def read_stamp(path: Path) -> dict[str, str]:
    """The stamp as a dict ({} when it is missing or unreadable)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in lines if "=" in line)


# ---------------------------------------------------------------- where am I running?
def venv_python(venv: Path) -> Path:
    """The interpreter of a venv, on POSIX (bin/python) or Windows (Scripts\\python.exe)."""
    windows = venv / "Scripts" / "python.exe"
    return windows if windows.exists() else venv / "bin" / "python"


def is_checkout(root: Path = ROOT) -> bool:
    """True when lorakit runs from a clone (a Makefile beside it), not from a pip/Colab install."""
    return (root / "Makefile").is_file() and (root / "pyproject.toml").is_file()


def python_findings(root: Path = ROOT, version=None) -> tuple[list[str], str | None, bool | str]:
    """Lines about the Python and the venv, the repair command (None when nothing is wrong), and
    how much it matters: True (it alone stops the course: a Python too old), False (a stale or
    unfinished .venv: repair it), or "aside" (not running .venv's Python: fine when every package
    is ``[OK]``, e.g. in conda, so the repair is shown only when one fails).

    Checked in the order a repair has to happen: the right interpreter, a new enough one, an
    install that finished and matches the lock file."""
    version = tuple(version or sys.version_info[:3])
    shown = ".".join(map(str, version))
    venv = root / ".venv"
    lines = [f"python     {shown} at {sys.executable}"]
    too_old, too_new = version[:2] < SUPPORTED[0], version[:2] > SUPPORTED[1]
    span = f"{SUPPORTED[0][0]}.{SUPPORTED[0][1]}-{SUPPORTED[1][0]}.{SUPPORTED[1][1]}"
    in_venv = Path(sys.prefix).resolve() == venv.resolve()
    if too_old:
        lines.append(f"  [FAIL] python {shown} is too old: the course needs Python {span}")
        if not is_checkout(root):
            return lines, f"a new venv made by Python {span} (e.g. `{GOOD_PYTHON} -m venv`)", True
        return (
            lines,
            f"`make {'clean lab' if in_venv else 'lab'} PYTHON={GOOD_PYTHON}` (or any Python {span})",
            True,
        )
    if not is_checkout(root):  # pip or Colab: there is no .venv to judge
        return lines, None, False
    if not in_venv:
        if not venv.exists():
            lines.append(
                f"  [WARN] venv   no {venv} yet: this Python is not the course's "
                "(fine if every package below is [OK], e.g. in conda)"
            )
            return (
                lines,
                (
                    "`make lab` (it creates .venv and installs everything; "
                    f"add PYTHON={GOOD_PYTHON} if `python3` is older than 3.10)"
                ),
                "aside",
            )
        interpreter = venv_python(venv)
        if not interpreter.exists():  # e.g. the Python that made it was upgraded away
            lines.append(f"  [WARN] venv   {venv} is broken: {interpreter} is missing")
            return lines, "`make clean lab` (deletes .venv and builds it again)", "aside"
        lines.append(f"  [WARN] venv   this is not the course's Python; that is {interpreter}")
        return (
            lines,
            (
                "`make check` (runs this check with the course's Python), and start JupyterLab "
                "with `make lab`, never a system `jupyter`"
            ),
            "aside",
        )
    stamp = read_stamp(venv / ".installed")
    lock = root / stamp.get("source", LOCK)
    if not stamp.get("python"):
        lines.append(
            "  [WARN] venv   the install into .venv never finished (no record in .venv/.installed)"
        )
        return lines, "`make reinstall`", False
    if stamp.get("python") != platform.python_version():
        lines.append(
            f"  [WARN] venv   .venv was installed by Python {stamp.get('python')}, "
            f"it now runs {platform.python_version()}"
        )
        return lines, "`make clean lab`", False
    if lock.is_file() and stamp.get("sha256") != file_digest(lock):
        lines.append(
            f"  [WARN] venv   stale: {lock.name} changed since .venv was installed from it"
        )
        return lines, "`make reinstall`", False
    note = f" (untested: the course is tested on {span})" if too_new else ""
    build = {"cpu": "torch's CPU index (TORCH=cpu)"}.get(stamp.get("torch"), "the package index")
    lines.append(
        f"  [OK] venv     {venv}, installed from {stamp.get('source')}, torch from {build}{note}"
    )
    return lines, None, False


# ---------------------------------------------------------------- packages
def package_status(name: str) -> tuple[bool, str]:
    """(importable, version or the import error) for one package."""
    error = None
    with quiet() as buffer:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            error = "not installed" if e.name == name else f"ModuleNotFoundError: {e}"[:120]
        except Exception as e:  # a broken install can raise more than ImportError
            error = f"{type(e).__name__}: {e}".splitlines()[0][:120]
    if buffer.getvalue().strip():
        HIDDEN[name] = buffer.getvalue()
    if error is not None:
        return False, error
    return True, str(getattr(module, "__version__", "unknown version"))


def hidden_noise_line(names) -> str | None:
    """One line naming the packages whose import printed something (hidden), or None."""
    noisy = [(n, len(HIDDEN[n].strip().splitlines())) for n in names if HIDDEN.get(n, "").strip()]
    if not noisy:
        return None
    which = ", ".join(f"{n} ({k} line{'s' * (k != 1)})" for n, k in noisy)
    return (
        f"hidden     import messages from {which}: known-harmless notices about optional "
        "kernels; the text is in lorakit.quiet.HIDDEN"
    )


def package_fix(missing: list[str], root: Path = ROOT) -> str:
    """The command that installs missing packages, for a checkout or for a pip/Colab install."""
    if is_checkout(root):
        return "`make reinstall` (installs requirements.lock into .venv again)"
    return f"`{Path(sys.executable).name} -m pip install {' '.join(missing)}`"


def thread_line() -> str:
    """How torch's threads wait (README, "Fast on a busy laptop"; make exports the setting)."""
    import torch

    policy = os.environ.get("OMP_WAIT_POLICY", "unset (spins: slow when another program is busy)")
    return f"threads    torch {torch.get_num_threads()}, OMP_WAIT_POLICY={policy}"


# ---------------------------------------------------------------- the report
def iter_report(root: Path = ROOT):
    """The check, one line at a time; the last item is (None, ok): whether all required import."""
    fixes = []
    yield from ("lorakit environment check", f"platform   {platform.platform()}")
    py_lines, py_fix, fatal = python_findings(root)
    yield from py_lines
    if py_fix:
        fixes.append(py_fix)
    fatal, aside = fatal is True, fatal == "aside"
    all_required, missing = True, []
    for title, group, required in (("required", REQUIRED, True), ("reference", REFERENCE, False)):
        yield f"{title} packages:"
        for name, why in group:
            ok, version = package_status(name)
            if not ok and required:
                all_required = False
                missing.append(name)
            yield f"  [{'OK' if ok else 'FAIL'}] {name:<13} {version:<24} {why}"
    noise = hidden_noise_line([name for name, _ in REQUIRED + REFERENCE])
    if noise:
        yield noise
    from . import __file__ as package_file
    from . import __version__

    yield f"lorakit    {__version__} at {package_file}"
    if "torch" not in missing:
        try:
            from .train import fast_mode, pick_device

            yield f"device     {pick_device()}"
            yield thread_line()
            yield f"test mode  {'on (LORAKIT_FAST)' if fast_mode() else 'off'}"
        except Exception as e:  # a half-broken install: say so and go on to the advice
            yield f"device     unknown ({type(e).__name__}: {str(e).splitlines()[0][:100]})"
    if missing and not py_fix:
        fixes.append(package_fix(missing, root))
    ok = all_required and not fatal
    if fixes and not (aside and not missing):
        yield f"FIX: run {fixes[0]}"
    yield None, ok


def report(root: Path = ROOT) -> tuple[str, bool]:
    """The check as text, and whether everything needed is in place."""
    lines = list(iter_report(root))
    return "\n".join(lines[:-1]), lines[-1][1]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [
        "--write-stamp"
    ]:  # make: `python -m lorakit.check --write-stamp STAMP SOURCE [TORCH]`
        stamp, source, *build = argv[1:]
        Path(stamp).write_text(stamp_text(Path(source), *build))
        return 0
    ok = False
    for line in iter_report():
        if isinstance(line, tuple):
            ok = line[1]
        else:
            print(line, flush=True)  # line by line: a crash later still leaves what came before
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
