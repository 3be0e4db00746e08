"""Shipped sweep results (lorakit.shipped): used only when made with exactly the asked settings,
refused when damaged, never written unless asked, and every shipped file carries a full card."""

import json
import re
from pathlib import Path

import pytest

from lorakit import shipped

ROOT = Path(__file__).parents[1]
SETTINGS = {"steps": 80, "ranks": [1, 4, 8], "lr": 0.003}
RESULTS = {"val_bpb": {"1": 2.51, "8": 2.47}, "runs": [2.5, 2.49]}


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(shipped, "RESULTS", tmp_path)
    monkeypatch.delenv("LORAKIT_RECOMPUTE", raising=False)
    monkeypatch.delenv("LORAKIT_FAST", raising=False)
    monkeypatch.setenv("LORAKIT_SHIP_RESULTS", "1")
    shipped.record("03_demo", SETTINGS, RESULTS, seconds=12.3)
    monkeypatch.delenv("LORAKIT_SHIP_RESULTS")
    return tmp_path


def test_same_settings_load_the_shipped_results(results_dir, capsys):
    assert shipped.load("03_demo", dict(SETTINGS)) == RESULTS
    out = capsys.readouterr().out
    assert "shipped results" in out and "make results NB=03" in out


def test_tuples_and_lists_are_the_same_setting(results_dir):
    assert shipped.load("03_demo", {**SETTINGS, "ranks": (1, 4, 8)}) == RESULTS


@pytest.mark.parametrize(
    "changed", [{"steps": 30}, {"ranks": [1, 8]}, {"lr": 0.001}, {"seed": 1}], ids=str
)
def test_other_settings_recompute_and_say_which(results_dir, capsys, changed):
    asked = {**SETTINGS, **changed}
    assert shipped.load("03_demo", asked) is None
    assert list(changed)[0] in capsys.readouterr().out


def test_a_missing_setting_counts_as_changed(results_dir, capsys):
    assert shipped.load("03_demo", {"steps": 80, "ranks": [1, 4, 8]}) is None
    assert "lr" in capsys.readouterr().out


def test_another_pythons_results_recompute(results_dir, monkeypatch, capsys):
    """The course text is the running Python's stdlib: results made on another one do not apply."""
    monkeypatch.setattr(shipped, "corpus_id", lambda: "another-stdlib")
    assert shipped.load("03_demo", SETTINGS) is None
    assert "standard library" in capsys.readouterr().out


def test_the_card_names_the_corpora(results_dir):
    card, _ = shipped.read("03_demo")
    assert card["settings"]["corpora"] == shipped.corpus_id()
    assert card["settings"]["steps"] == SETTINGS["steps"]


def test_recompute_switch_wins(results_dir, monkeypatch, capsys):
    monkeypatch.setenv("LORAKIT_RECOMPUTE", "1")
    assert shipped.load("03_demo", SETTINGS) is None
    assert "LORAKIT_RECOMPUTE=1" in capsys.readouterr().out


def test_damaged_results_are_refused(results_dir, capsys):
    path = results_dir / "03_demo.json"
    doc = json.loads(path.read_text())
    doc["results"]["runs"][0] = 2.0  # a better number than was measured
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="damaged"):
        shipped.read("03_demo")
    assert shipped.load("03_demo", SETTINGS) is None
    assert "damaged" in capsys.readouterr().out


def test_missing_file_names_what_ships(results_dir, capsys):
    with pytest.raises(FileNotFoundError, match="03_demo"):
        shipped.read("04_nothing")
    assert shipped.load("04_nothing", SETTINGS) is None


def test_record_writes_nothing_unless_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(shipped, "RESULTS", tmp_path)
    monkeypatch.delenv("LORAKIT_SHIP_RESULTS", raising=False)
    assert shipped.record("03_demo", SETTINGS, RESULTS, seconds=1.0) is None
    assert list(tmp_path.iterdir()) == []


def test_test_mode_never_ships(tmp_path, monkeypatch):
    monkeypatch.setattr(shipped, "RESULTS", tmp_path)
    monkeypatch.setenv("LORAKIT_SHIP_RESULTS", "1")
    monkeypatch.setenv("LORAKIT_FAST", "1")
    assert shipped.record("03_demo", SETTINGS, RESULTS, seconds=1.0) is None
    assert list(tmp_path.iterdir()) == []


def test_record_refuses_a_name_without_its_notebook(tmp_path, monkeypatch):
    monkeypatch.setattr(shipped, "RESULTS", tmp_path)
    monkeypatch.setenv("LORAKIT_SHIP_RESULTS", "1")
    monkeypatch.delenv("LORAKIT_FAST", raising=False)
    with pytest.raises(ValueError, match="notebook's number"):
        shipped.record("rank_sweep", SETTINGS, RESULTS, seconds=1.0)
    assert list(tmp_path.iterdir()) == []


def test_within_spread():
    assert shipped.within_spread(2.50, [2.49, 2.51], margin=0.0)
    assert shipped.within_spread(2.515, [2.49, 2.51], margin=0.01)
    assert not shipped.within_spread(2.53, [2.49, 2.51], margin=0.01)
    assert not shipped.within_spread(2.47, [2.49, 2.51], margin=0.01)
    with pytest.raises(ValueError, match="at least one"):
        shipped.within_spread(2.5, [], margin=0.01)
    with pytest.raises(ValueError, match="margin"):
        shipped.within_spread(2.5, [2.5], margin=-1)


# ------------------------------------------------------------------- every file that ships
FILES = sorted((ROOT / "lorakit" / "results").glob("*.json"))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_every_shipped_file_has_a_full_card_and_a_notebook_that_loads_it(path):
    card, results = shipped.read(path.stem)  # raises if damaged
    for field in ("settings", "sha256", "seconds", "date", "machine", "versions", "command"):
        assert card.get(field), f"{path.name}: card lacks {field}"
    assert card["name"] == path.stem and path.stem.startswith(card["notebook"])
    assert card["command"] == f"make results NB={card['notebook']}"
    (notebook,) = (ROOT / "notebooks").glob(f"{card['notebook']}_*.py")
    assert re.search(
        rf"shipped\.load\(\s*[\"']{re.escape(path.stem)}[\"']", notebook.read_text()
    ), f"{notebook.name} never loads {path.stem}"
    assert path.stat().st_size < 200_000, "shipped results are small files"
