import pytest
import torch

from lorakit import data


def test_encode_decode_round_trip_bytes():
    text = "def f(x):\n    return 'λ' * x\n"
    tokens = data.encode(text)
    assert tokens.dtype == torch.uint8
    assert len(tokens) == len(text.encode("utf-8"))  # one token per byte, not per character
    assert data.decode(tokens) == text


def test_decode_survives_a_cut_character():
    tokens = data.encode("λ")[:1]
    assert data.decode(tokens) == "\ufffd"


@pytest.mark.parametrize("name", data.CORPORA)
def test_corpora_load_and_are_deterministic(name):
    a = data.load_corpus(name, max_bytes=50_000)
    b = data.load_corpus(name, max_bytes=50_000)
    assert a == b and len(a) == 50_000


def test_code_corpus_excludes_tests():
    paths = data._stdlib_files(want_tests=False)
    assert paths and not any("/test/" in p or "/tests/" in p for p in paths)
    assert any(p.endswith("/json/decoder.py") for p in paths)


def test_docs_corpus_is_the_language_reference():
    text = data.load_corpus("docs").decode("utf-8")
    assert 300_000 < len(text) < 1_000_000
    assert "assignment" in text


def test_split_is_deterministic_and_disjoint_chunks():
    x = torch.arange(100_000) % 251
    x = x.to(torch.uint8)
    train, val = data.train_val_split(x, val_fraction=0.1, chunk=1000)
    assert len(train) + len(val) == len(x)
    assert abs(len(val) / len(x) - 0.1) < 0.01
    train2, val2 = data.train_val_split(x, val_fraction=0.1, chunk=1000)
    assert torch.equal(train, train2) and torch.equal(val, val2)


def test_batches_are_shifted_and_reproducible():
    d = torch.arange(1000).to(torch.uint8)
    x1, y1 = data.get_batch(d, 4, 16, torch.Generator().manual_seed(1))
    x2, y2 = data.get_batch(d, 4, 16, torch.Generator().manual_seed(1))
    assert x1.shape == (4, 16) and x1.dtype == torch.long
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(x1[:, 1:], y1[:, :-1])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: data.load_corpus("wikipedia"), "unknown corpus 'wikipedia'"),
        (
            lambda: data.load_corpus("code", max_bytes=0),
            r"max_bytes \(or None\) must be an integer >= 1",
        ),
        (
            lambda: data.get_batch(torch.zeros(100, dtype=torch.uint8), 0, 8, torch.Generator()),
            "batch_size must be an integer >= 1",
        ),
        (
            lambda: data.get_batch(torch.zeros(100, dtype=torch.uint8), 2, 0, torch.Generator()),
            "context must be an integer >= 1",
        ),
        (
            lambda: data.get_batch(torch.zeros(10, dtype=torch.uint8), 2, 64, torch.Generator()),
            "fewer than context",
        ),
        (
            lambda: data.train_val_split(torch.zeros(10, dtype=torch.uint8), 1.5),
            "val_fraction must be between",
        ),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_missing_pydoc_data_says_how_to_get_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("pydoc_data"):
            raise ImportError("No module named 'pydoc_data'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(FileNotFoundError, match="pydoc_data.topics.*python3-doc"):
        data.load_corpus("docs")
