"""Determinism: the functions the notebooks assert on give identical numbers when run twice
with the same seed (so a notebook run twice gives the same asserted numbers)."""

import copy

import torch

from lorakit import lowrank
from lorakit.data import load_splits
from lorakit.model import GPT, GPTConfig
from lorakit.qlora import prepare_qlora
from lorakit.train import evaluate, set_seed, short_lora_run, train

CFG = GPTConfig(context=32, n_layer=1, n_head=2, d_model=32)


def _data():
    return load_splits("docs", max_bytes=120_000)


def _base():
    set_seed(0)
    return GPT(CFG)


def test_short_lora_run_is_deterministic():
    base, (tr, va) = _base(), _data()
    kw = dict(r=4, alpha=8, steps=6, batch_size=4, eval_batches=2, seed=3)
    a = short_lora_run(base, tr, va, **kw)
    b = short_lora_run(base, tr, va, **kw)
    assert a["val_bpb"] == b["val_bpb"] and a["train_bpb"] == b["train_bpb"]
    assert all(torch.equal(a["A"][k], b["A"][k]) for k in a["A"])


def _qlora_run():
    tr, va = _data()
    model = prepare_qlora(_base(), "all-linear", r=4, alpha=8)
    hist = train(model, tr, steps=5, batch_size=4, seed=1, progress=False)
    return hist.train_bpb, evaluate(model, va, batch_size=4, n_batches=2)


def test_qlora_training_is_deterministic():
    assert _qlora_run() == _qlora_run()


def test_full_fine_tuning_delta_spectrum_is_deterministic():
    def spectrum():
        base = _base()
        tuned = copy.deepcopy(base)
        train(tuned, _data()[0], steps=4, batch_size=4, seed=2, progress=False)
        dW = lowrank.delta_weights(base, tuned)
        return {k: lowrank.singular_values(v) for k, v in dW.items()}

    s1, s2 = spectrum(), spectrum()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
