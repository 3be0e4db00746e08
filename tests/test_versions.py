"""The floors of the reference libraries: one table (lorakit.versions), the same in requirements.txt
and pyproject.toml, and a version comparison that refuses an API the installed library lacks."""

import re
from pathlib import Path

import pytest

from lorakit import versions

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "installed, floor, ok",
    [
        ("4.56", "4.56", True),
        ("4.56.0", "4.56", True),
        ("4.56.2", "4.56", True),
        ("5.25.0", "4.56", True),
        ("4.55.4", "4.56", False),
        ("4.45.0", "4.56", False),
        ("4.9", "4.56", False),  # 9 < 56: numbers, not text
        ("4.56.0.dev0", "4.56", False),
        ("4.56.0rc1", "4.56", False),
        ("4.57.0.dev0", "4.56", True),
        ("4.56.0+cu121", "4.56", True),
        ("4.56.0.post1", "4.56", True),
        ("0.21.2", "0.13", True),
        ("0.9.0", "0.13", False),
        ("0.47.0", "0.47", True),
        ("0.46.1", "0.47", False),
        ("1.2.3.4", "1.2.3", True),
    ],
)
def test_version_comparison(installed, floor, ok):
    assert versions.at_least(installed, floor) is ok


def test_a_bad_version_string_is_refused():
    with pytest.raises(ValueError, match="not a version number"):
        versions.version_key("latest")


def test_require_names_the_call_that_needs_the_floor():
    with pytest.raises(ImportError, match=r"transformers 4\.45\.0 is too old.*>=4\.56.*dtype="):
        versions.require("transformers", "4.45.0")
    versions.require("transformers", "4.56.0")  # new enough: no error
    with pytest.raises(ValueError, match="package must be one of"):
        versions.require("numpy", "1.0")


def _floors(text: str) -> dict:
    return {
        m.group(1).lower(): m.group(2)
        for m in re.finditer(r"([A-Za-z][A-Za-z0-9_\-]*)>=([0-9][0-9.]*)", text)
    }


def test_requirements_and_pyproject_state_the_same_floors():
    req = _floors((ROOT / "requirements.txt").read_text())
    extra = _floors(
        re.search(r"reference\s*=\s*\[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.S).group(
            1
        )
    )
    for package, (floor, _) in versions.FLOORS.items():
        assert req[package] == floor, (
            f"requirements.txt: {package}>={req[package]}, lorakit needs >={floor}"
        )
        assert extra[package] == floor, (
            f"pyproject.toml [reference]: {package}>={extra[package]}, needs >={floor}"
        )


def test_the_installed_libraries_meet_the_floors():
    for package in versions.FLOORS:
        installed = versions.installed_version(package)
        if installed is not None:
            versions.require(package, installed)


def test_dtype_keyword_is_what_the_transformers_floor_is_for():
    """from_pretrained(dtype=...) is used by lorakit.hf: the installed transformers must accept it."""
    transformers = pytest.importorskip("transformers")
    import inspect

    assert versions.at_least(transformers.__version__, versions.FLOORS["transformers"][0])
    source = inspect.getsource(__import__("lorakit.hf", fromlist=["hf"]))
    assert "from_pretrained(" in source and "dtype=dtype" in source
