"""Results that ship with lorakit: the long learner-size sweeps, so a slow laptop still teaches.

A sweep (notebook 03's ranks, 04's learning rates, 08's four methods, ...) takes minutes on an idle
2-core laptop and can take half an hour on a busy one. Its learner-size results ship in
``lorakit/results/`` as small JSON files, as the base model ships in ``lorakit/weights/``. Each
holds the results and a **provenance card**: the settings, the versions, machine and threads that
made them, how long it took, the command that regenerates them, and the sha256 of the results.

The rule a notebook follows, in three lines::

    sweep = shipped.load("03_rank_sweep", SETTINGS)      # None unless made with exactly SETTINGS
    if sweep is None:
        sweep = ...compute it...; shipped.record("03_rank_sweep", SETTINGS, sweep, seconds)

so test mode (other settings), a setting you changed, a damaged file, another Python (its own
standard library is the course text: ``corpus_id``) or ``LORAKIT_RECOMPUTE=1`` all recompute,
and nothing else does. A notebook that loads shipped results re-runs one
representative point live and asserts it lands where the shipped runs did (``within_spread``):
the shipped numbers are checked on your machine, not taken on trust.

Regenerating the files: ``make results NB=03`` runs the notebook at learner size with
``LORAKIT_RECOMPUTE=1 LORAKIT_SHIP_RESULTS=1``, and ``record`` writes the new file and card.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import sysconfig
from datetime import date
from functools import cache
from pathlib import Path

import torch

from . import __version__, data
from .train import fast_mode

#: where the shipped results live (package data, like ``lorakit/weights``)
RESULTS = Path(__file__).resolve().parent / "results"

_YES = ("1", "true", "yes", "on")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _YES


def recompute_requested() -> bool:  # notebook 00 §4
    """True when ``LORAKIT_RECOMPUTE=1``: every notebook recomputes its sweeps, none loads them."""
    return _flag("LORAKIT_RECOMPUTE")


def _plain(x):
    """``x`` as JSON gives it back: tuples become lists, keys strings. Settings compare this way."""
    return json.loads(json.dumps(x, sort_keys=True))


def digest(results) -> str:  # notebook 00 §4
    """sha256 of the results' canonical JSON (sorted keys): what the card promises."""
    return hashlib.sha256(json.dumps(results, sort_keys=True).encode()).hexdigest()


@cache
def corpus_id() -> str:  # notebook 00 §4
    """A short sha256 naming this Python's course text: the docs' bytes, the stdlib files' sizes.

    The corpora are the running Python's own (notebook 00 §3), and another Python release has
    another standard library and language reference, so results made on one are not the
    results of another. ``load`` and ``record`` add it to every sweep's settings. File sizes,
    not contents, for the two large corpora: reading 12 MB would cost more than the check saves.
    """
    h = hashlib.sha256(data._docs_text())
    root = sysconfig.get_paths()["stdlib"]
    for want_tests in (False, True):
        for path in data._stdlib_files(want_tests):
            h.update(f"{os.path.relpath(path, root)}:{os.path.getsize(path)}\n".encode())
    return h.hexdigest()[:16]


def _with_corpora(settings: dict) -> dict:
    return {**_plain(settings), "corpora": corpus_id()}


def _differences(wanted: dict, made: dict) -> list[str]:
    keys = sorted(set(wanted) | set(made))
    return [k for k in keys if wanted.get(k, "<missing>") != made.get(k, "<missing>")]


def read(name: str) -> tuple[dict, object]:  # notebook 00 §4
    """(card, results) of the shipped file ``name``; raises if it is missing or damaged."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        shipped = sorted(p.stem for p in RESULTS.glob("*.json"))
        raise FileNotFoundError(f"no shipped results called {name!r}; lorakit ships {shipped}")
    doc = json.loads(path.read_text())
    card, results = doc["card"], doc["results"]
    if digest(results) != card["sha256"]:
        raise ValueError(
            f"{path.name} is damaged: its results' sha256 does not match its card "
            f"(regenerate it with: {card.get('command', 'make results')})"
        )
    return card, results


def load(name: str, settings: dict):  # notebook 00 §4
    """The shipped results ``name`` if they were made with exactly ``settings``; else None.

    Prints one line saying which, and why, so the reader knows where the figures come from.
    None means "compute them yourself": in test mode (other settings), after you change a
    setting, with ``LORAKIT_RECOMPUTE=1``, or when the file is missing or damaged.
    """
    if recompute_requested():
        print(f"{name}: LORAKIT_RECOMPUTE=1, so computing it here instead of loading it.")
        return None
    try:
        card, results = read(name)
    except (FileNotFoundError, ValueError, KeyError, json.JSONDecodeError) as e:
        print(f"{name}: computing it here ({e}).")
        return None
    changed = _differences(_with_corpora(settings), card["settings"])
    if "corpora" in changed:
        print(
            f"{name}: the shipped results were made on {card['versions'].split(',')[0]}, whose "
            f"standard library and docs differ from this Python {sys.version.split()[0]}'s, so "
            "computing it here (the course text is the running Python's own)."
        )
        return None
    if changed:
        print(
            f"{name}: the shipped results were made with other settings ({', '.join(changed)}), "
            "so computing it here."
        )
        return None
    print(
        f"{name}: shipped results, made {card['date']} in {card['seconds']:.0f} s on "
        f"{card['machine']}, {card.get('load', 'load average unknown')} ({card['versions']}). "
        f"Regenerate: {card['command']}; "
        "LORAKIT_RECOMPUTE=1 recomputes every sweep."
    )
    return results


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _load_average() -> str:
    """The load average when the card is written: shipped timings depend on it."""
    try:
        return "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    except (AttributeError, OSError):  # Windows has no load average
        return "load average unknown"


# notebook 00 §4
def make_card(name: str, settings: dict, results, seconds: float, notebook: str) -> dict:
    """The provenance card of ``results``: what made them, where, how long, and how to redo it."""
    return dict(
        name=name,
        notebook=notebook,
        settings=_with_corpora(settings),
        sha256=digest(results),
        seconds=round(float(seconds), 1),
        date=str(date.today()),
        machine=f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads",
        load=_load_average(),
        versions=(
            f"Python {sys.version.split()[0]}, torch {torch.__version__}, "
            f"lorakit {__version__} ({_commit()})"
        ),
        command=f"make results NB={notebook}",
    )


def record(name: str, settings: dict, results, seconds: float) -> Path | None:  # notebook 00 §4
    """Ship ``results`` (write them and their card to ``lorakit/results/``) if asked; else nothing.

    Asked means ``LORAKIT_SHIP_RESULTS=1``, which ``make results`` sets: a learner's own
    recomputation never overwrites what shipped, and test mode never ships. ``name`` starts with
    the notebook's number.
    """
    if not _flag("LORAKIT_SHIP_RESULTS"):
        return None
    if fast_mode():  # test sizes never ship
        print(f"{name}: not shipped: test mode (LORAKIT_FAST=1) results are not learner size.")
        return None
    notebook = name[:2]
    if not notebook.isdigit():
        raise ValueError(f"a shipped result's name starts with its notebook's number, got {name!r}")
    doc = {
        "card": make_card(name, settings, results, seconds, notebook),
        "results": _plain(results),
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"{name}: shipped to {path}")
    return path


def within_spread(live: float, runs: list[float], margin: float) -> bool:  # notebook 00 §4
    """True when ``live`` lies in [min(runs) − margin, max(runs) + margin].

    ``runs`` are the shipped runs of the same point (seeds); ``margin`` covers what differs on
    another machine (thread count, CPU, library versions) and is stated where it is chosen.
    """
    if not runs:
        raise ValueError("within_spread needs at least one shipped run to compare with")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    return min(runs) - margin <= live <= max(runs) + margin
