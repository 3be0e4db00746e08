"""Check that a wheelhouse holds every wheel an offline install needs, before pip runs.

    python scripts/check_wheelhouse.py WHEELHOUSE -r requirements.txt --project .

Why: `pip install --no-index --find-links WHEELHOUSE ...` on a participant's laptop fails deep
inside the resolver ("No matching distribution found for X") after minutes of work, and says
nothing about *why* (a wheel never collected, or collected for another platform or Python).
This walks the same graph first: every requirement in the files, the project's build backend
(pyproject.toml [build-system] requires, needed by `pip install -e .`), then every dependency
each chosen wheel declares (its METADATA Requires-Dist, with environment markers evaluated for
*this* interpreter). A requirement counts as covered only by a wheel whose version satisfies it
and whose tags this Python accepts. Exit 0 when all are covered; otherwise exit 1 with one line
per missing wheel, naming it, who needs it, and what the folder has under that name.

Runs with the standard library plus `packaging`, taken from pip's vendored copy when the
interpreter has no `packaging` of its own (a fresh venv has only pip). `make lab` / `make test`
call it when WHEELHOUSE is set; `make wheelhouse` calls it on the folder it has just built.
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from email.parser import HeaderParser
from pathlib import Path

try:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.tags import sys_tags
    from packaging.utils import canonicalize_name, parse_wheel_filename
except ImportError:  # a fresh venv: only pip is there, and pip carries packaging inside it
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
    from pip._vendor.packaging.tags import sys_tags
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename

try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib


class Wheel:
    """One .whl file: its name, version, tags, and (read lazily) the requirements it declares."""

    def __init__(self, path: Path):
        self.path = path
        name, self.version, _, self.tags = parse_wheel_filename(path.name)
        self.name = canonicalize_name(name)
        self._requires: list[str] | None = None

    def requires(self) -> list[str]:
        """The wheel's Requires-Dist lines (from its *.dist-info/METADATA)."""
        if self._requires is None:
            with zipfile.ZipFile(self.path) as z:
                meta = next(
                    (
                        n
                        for n in z.namelist()
                        if n.count("/") == 1 and n.endswith(".dist-info/METADATA")
                    ),
                    None,
                )
                if meta is None:
                    raise ValueError(
                        f"{self.path.name} is not a valid wheel: it has no *.dist-info/METADATA"
                    )
                headers = HeaderParser().parsestr(z.read(meta).decode("utf-8", "replace"))
            self._requires = headers.get_all("Requires-Dist") or []
        return self._requires


def read_wheelhouse(folder: Path) -> dict[str, list[Wheel]]:
    """Every wheel in `folder`, grouped by canonical project name."""
    wheels: dict[str, list[Wheel]] = {}
    for path in sorted(folder.glob("*.whl")):
        try:
            wheel = Wheel(path)
        except Exception as e:  # a file named *.whl that is not one: say so, do not crash
            raise SystemExit(
                f"check_wheelhouse: {path} is not a wheel file name pip accepts ({e})"
            ) from None
        wheels.setdefault(wheel.name, []).append(wheel)
    return wheels


def read_requirement_lines(path: Path) -> list[str]:
    """Requirement lines of a requirements file: comments, blanks and pip options (-e ., -r x) dropped."""
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = re.split(r"\s+#|^#", raw, maxsplit=1)[0].strip()
        if line and not line.startswith("-"):
            lines.append(line)
    return lines


def project_requirements(project: Path) -> tuple[list[str], list[str]]:
    """(build requirements, runtime dependencies) from a project's pyproject.toml."""
    data = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    build = data.get("build-system", {}).get("requires", [])
    runtime = data.get("project", {}).get("dependencies", [])
    return build, runtime


def missing_wheels(roots: list[tuple[str, str]], wheels: dict[str, list[Wheel]]) -> list[str]:
    """Walk the dependency graph from `roots` ((requirement, who asked) pairs); return one message
    per project that no compatible wheel in `wheels` satisfies, naming who needs it and why not."""
    accepted = set(sys_tags())
    needed_by: dict[str, list[str]] = {}  # missing project -> "who (specifier)" entries
    why_not: dict[str, str] = {}
    unreadable: list[str] = []
    seen: set[tuple[str, str, frozenset]] = set()
    todo = list(roots)
    while todo:
        text, who = todo.pop()
        try:
            req = Requirement(text)
        except InvalidRequirement as e:
            unreadable.append(f"cannot read requirement {text!r} (from {who}): {e}")
            continue
        name = canonicalize_name(req.name)
        key = (name, str(req.specifier), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        have = wheels.get(name, [])
        fitting = [w for w in have if req.specifier.contains(w.version, prereleases=True)]
        usable = [w for w in fitting if w.tags & accepted]
        if not usable:
            if not have:
                why = "the wheelhouse has no wheel of it at all"
            elif not fitting:
                why = "the wheelhouse has only " + ", ".join(w.path.name for w in have)
            else:
                why = (
                    f"no wheel for this Python/platform ({next(iter(sys_tags()))}), only "
                    + ", ".join(w.path.name for w in fitting)
                )
            needed_by.setdefault(name, []).append(f"{who} ({req.specifier or 'any version'})")
            why_not[name] = why
            continue
        wheel = max(usable, key=lambda w: w.version)  # the one pip would pick
        for dep in wheel.requires():
            dep_req = Requirement(dep)
            extras = req.extras or {""}
            if dep_req.marker is None or any(dep_req.marker.evaluate({"extra": e}) for e in extras):
                dep_req.marker = None
                todo.append((str(dep_req), f"{wheel.name} {wheel.version}"))
    return unreadable + [
        f"missing wheel: {name}, needed by {'; '.join(sorted(set(needed_by[name])))}: "
        f"{why_not[name]}"
        for name in sorted(needed_by)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheelhouse", type=Path, help="the folder of .whl files")
    parser.add_argument(
        "-r",
        "--requirement",
        type=Path,
        action="append",
        default=[],
        help="a requirements file the install uses (repeatable)",
    )
    parser.add_argument(
        "--project",
        type=Path,
        help="a project installed from source (-e .): "
        "its build backend and dependencies must be in the wheelhouse too",
    )
    parser.add_argument("extra", nargs="*", help="more requirements, e.g. pip")
    args = parser.parse_intermixed_args(argv)

    if not args.wheelhouse.is_dir():
        print(
            f"check_wheelhouse: WHEELHOUSE={args.wheelhouse} is not a folder. Build one with "
            "`make wheelhouse` (on a machine with internet) and point WHEELHOUSE at it.",
            file=sys.stderr,
        )
        return 1
    wheels = read_wheelhouse(args.wheelhouse)
    roots = [(line, str(f)) for f in args.requirement for line in read_requirement_lines(f)]
    roots += [(line, "the command line") for line in args.extra]
    if args.project is not None:
        build, runtime = project_requirements(args.project)
        where = args.project / "pyproject.toml"
        roots += [(line, f"{where} [build-system]") for line in build]
        roots += [(line, f"{where} [project]") for line in runtime]
    problems = missing_wheels(roots, wheels)
    count = sum(len(v) for v in wheels.values())
    if problems:
        print(
            f"check_wheelhouse: {args.wheelhouse} ({count} wheels) cannot install offline on this "
            f"Python ({sys.version.split()[0]}, {next(iter(sys_tags()))}):",
            file=sys.stderr,
        )
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        print(
            "Rebuild it with `make wheelhouse` on a machine of the same platform and Python, "
            "or add the wheel(s) named above to the folder.",
            file=sys.stderr,
        )
        return 1
    print(f"check_wheelhouse: {args.wheelhouse} covers every requirement ({count} wheels).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
