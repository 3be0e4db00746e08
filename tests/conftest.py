"""Shared fixtures: a tiny GPT config that trains in seconds, and a private cache folder."""

import pytest
import torch

from lorakit.model import GPTConfig


@pytest.fixture
def tiny_cfg() -> GPTConfig:
    return GPTConfig(context=32, n_layer=1, n_head=2, d_model=32)


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """A cache folder of the test's own, so cache tests never touch the course cache."""
    monkeypatch.setenv("LORAKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
