import subprocess
import sys

from lorakit import check


def test_report_lists_every_package_with_status_and_version():
    text, ok = check.report()
    assert ok, text
    for name, _ in check.REQUIRED + check.REFERENCE:
        assert f"[OK] {name}" in text or f"[FAIL] {name}" in text, name
    assert sys.executable in text, "the kernel's Python path must be shown"
    assert "device" in text


def test_a_missing_package_is_reported_as_fail(monkeypatch):
    monkeypatch.setattr(check, "REQUIRED", check.REQUIRED + [("no_such_package_xyz", "test")])
    text, ok = check.report()
    assert not ok
    assert "[FAIL] no_such_package_xyz" in text and "not installed" in text


def test_command_line_entry_point():
    run = subprocess.run(
        [sys.executable, "-m", "lorakit.check"], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "[OK] torch" in run.stdout


def test_issue_template_asks_for_the_check():
    from pathlib import Path

    template = Path(__file__).parents[1] / ".github" / "ISSUE_TEMPLATE" / "bug_report.md"
    assert "lorakit.check" in template.read_text() and "make check" in template.read_text()


def test_import_noise_is_hidden_and_reported_in_one_line(monkeypatch, tmp_path, capfd):
    """A package that prints on import (as bitsandbytes/torchao do on machines without their GPU
    kernels) leaves the check's stderr clean; the report names it in one line."""
    (tmp_path / "noisy_pkg_xyz.py").write_text(
        "import sys, os, warnings\n"
        "print('Failed to load some optional kernel', file=sys.stderr)\n"
        "os.write(2, b'W1129 a C-level warning\\n')\n"
        "warnings.warn('a deprecation on import')\n"
        "__version__ = '1.0'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(check, "REFERENCE", check.REFERENCE + [("noisy_pkg_xyz", "test")])
    text, ok = check.report()
    assert ok and "[OK] noisy_pkg_xyz" in text
    hidden = [ln for ln in text.splitlines() if "noisy_pkg_xyz (2 lines)" in ln]
    assert len(hidden) == 1 and hidden[0].startswith("hidden"), text
    assert capfd.readouterr().err == "", "the check itself must write nothing to stderr"
