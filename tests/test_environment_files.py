"""requirements.txt (used by make), environment.yml (conda) and pyproject.toml must agree."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]
# conda-forge spells a few names differently from PyPI
CONDA_NAME = {"torch": "pytorch"}


def _pip_requirements() -> dict[str, str]:
    reqs = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, spec = re.match(r"([A-Za-z0-9_.\-]+)(.*)", line).groups()
            reqs[name.lower()] = spec.replace(" ", "")
    return reqs


def _conda_environment():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += dep["pip"]
        else:
            name, spec = re.match(r"([A-Za-z0-9_.\-]+)(.*)", dep).groups()
            conda[name.lower()] = spec.replace(" ", "")
    return env, conda, pip


def test_environment_is_named_and_conda_forge_only():
    env, _, _ = _conda_environment()
    assert env["name"] == "lorakit"
    assert env["channels"] == ["conda-forge"]


def test_every_requirement_is_in_the_conda_environment():
    _, conda, pip = _conda_environment()
    pip_names = {
        re.match(r"[A-Za-z0-9_.\-]+", p).group(0).lower(): p for p in pip if not p.startswith("-")
    }
    missing = []
    for name, spec in _pip_requirements().items():
        conda_name = CONDA_NAME.get(name, name)
        if conda_name in conda:
            lower = re.search(r">=([\d.]+)", spec)
            assert lower is None or f">={lower.group(1)}" in conda[conda_name], (
                name,
                spec,
                conda[conda_name],
            )
        elif name not in pip_names:
            missing.append(name)
    assert not missing, f"in requirements.txt but not in environment.yml: {missing}"
    assert "-e ." in pip, "environment.yml must install lorakit itself"


def test_conda_environment_has_nothing_extra():
    _, conda, pip = _conda_environment()
    reqs = {CONDA_NAME.get(n, n) for n in _pip_requirements()}
    extra = set(conda) - reqs - {"python", "pip"}
    assert not extra, f"in environment.yml but not in requirements.txt: {sorted(extra)}"


def test_torch_cap_lives_in_requirements_not_in_package_metadata():
    assert _pip_requirements()["torch"] == ">=2.4,<2.14"
    text = (ROOT / "pyproject.toml").read_text()
    deps = re.search(r"dependencies = \[(.*?)\]", text, re.S).group(1)
    assert '"torch>=2.4"' in deps and "<2.14" not in deps


def test_ci_runs_only_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme and "make lab" in readme
    commands = [
        l
        for l in ci.splitlines()
        if l.strip() and not l.startswith("#") and not l.startswith(("set ", "cd "))
    ]
    # `make lint` first (seconds), then the README's test command; after it only make targets the
    # README documents (make test-realshape: notebook 09 at SmolLM2-360M's shapes, too slow for make test)
    assert commands[:2] == ["make lint", "make test"], commands
    assert "`make lint`" in readme, "the README must say what CI runs before the tests"
    for extra in commands[2:]:
        assert extra.startswith("make ") and f"`{extra}`" in readme, (
            extra,
            "not a make target the README names",
        )
