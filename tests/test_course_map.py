"""Notebook 00's course map and the README's table name the same modules for every notebook."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def builds(text: str, prefix: str) -> dict:
    pattern = re.compile(rf"^{re.escape(prefix)}\| `(\d\d_[a-z0-9_]+)` \|.*\| (.+) \|$")
    return {m.group(1): m.group(2) for m in map(pattern.match, text.splitlines()) if m}


def test_course_map_builds_column_matches_the_readme():
    readme = builds((ROOT / "README.md").read_text(), "")
    course_map = builds((ROOT / "notebooks" / "00_start_here.py").read_text(), "# ")
    assert len(course_map) >= 11
    for notebook, modules in course_map.items():
        assert readme.get(notebook) == modules, notebook
