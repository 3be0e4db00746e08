"""Import a notebook's worked solutions (notebooks/solutions/nbNN.py) for the exercise tests."""

import importlib.util
from pathlib import Path

FOLDER = Path(__file__).resolve().parents[1] / "notebooks" / "solutions"


def load_solutions(name: str):
    """The module ``notebooks/solutions/<name>.py``, e.g. ``load_solutions("nb06")``."""
    spec = importlib.util.spec_from_file_location(f"solutions_{name}", FOLDER / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
