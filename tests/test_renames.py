"""Renamed for one meaning per name (issue 25); the old names stay importable as plain aliases.

A plain alias, not a wrapper that warns: a notebook cell that writes to stderr fails, and a
notebook written against the old names must keep running unchanged.
"""

import warnings

import pytest

from lorakit import data_doctor, distributed, doctor, launcher, train

RENAMES = [
    (train, "train", "train_lm"),
    (train, "evaluate", "evaluate_lm"),
    (train, "save_model", "save_gpt"),
    (train, "load_model", "load_gpt"),
    (doctor, "check", "diagnose"),
    (data_doctor, "check", "diagnose"),
    (distributed, "DistributedRunError", "DistributedRunError"),
]


@pytest.mark.parametrize(
    "module, old, new", RENAMES, ids=[f"{m.__name__}.{o}" for m, o, _ in RENAMES]
)
def test_old_name_is_the_new_object(module, old, new):
    assert getattr(module, old) is getattr(module if module is not distributed else launcher, new)


def test_old_names_do_not_warn(tmp_path):
    from lorakit.model import GPT, GPTConfig

    model = GPT(GPTConfig(context=8, n_layer=1, n_head=2, d_model=8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train.save_model(model, tmp_path / "m.safetensors")
        assert isinstance(train.load_model(tmp_path / "m.safetensors"), GPT)
