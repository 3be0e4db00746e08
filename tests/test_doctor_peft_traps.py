"""The adapter doctor on three traps of the PEFT path (notebook 04 §8–9): an adapter loaded frozen,
reentrant gradient checkpointing without input gradients, and added tokens whose embedding rows do
not train or are not saved. Each is planted the way a learner would write it, and each test checks
both the symptom and that the clean version raises nothing."""

import warnings

import pytest
import torch
from tiny import tiny_llama

from lorakit import doctor
from lorakit.quiet import quiet_import

peft = quiet_import("peft")
pytestmark = pytest.mark.skipif(peft is None, reason="PEFT is not installed")
TARGETS = ["q_proj", "v_proj"]


def _errors(report):
    return {f.code for f in report.findings if f.level == "error"}


def _peft(model, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", FutureWarning
        )  # transformers 5 renames a property PEFT reads
        return peft.get_peft_model(
            model,
            peft.LoraConfig(r=4, lora_alpha=8, target_modules=kw.pop("targets", TARGETS), **kw),
        )


def _step(model, ids, lr=1e-2):
    """One AdamW step on the trainable parameters; the loss before it."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    model.train()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss.item()


def _B_norms(model):
    return [
        p.norm().item() for n, p in model.named_parameters() if "lora_B" in n and ".layers." in n
    ]


# ---------------------------------------------------------------- loaded frozen


def test_an_adapter_loaded_without_is_trainable_is_frozen(tmp_path):
    trained = _peft(tiny_llama())
    with torch.no_grad():
        for n, p in trained.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    trained.save_pretrained(tmp_path)

    frozen = peft.PeftModel.from_pretrained(
        tiny_llama(), tmp_path
    )  # the default: is_trainable=False
    assert not any(p.requires_grad for p in frozen.parameters()), (
        "the symptom: nothing left to train"
    )
    report = doctor.check(frozen)
    assert "loaded_frozen" in _errors(report)
    assert "is_trainable=True" in next(
        f.message for f in report.findings if f.code == "loaded_frozen"
    )

    resumed = peft.PeftModel.from_pretrained(tiny_llama(), tmp_path, is_trainable=True)
    clean = doctor.check(resumed)
    assert "loaded_frozen" not in clean.codes and clean.ok, str(clean)


# ---------------------------------------------------------------- checkpointing without input grads


def _checkpointed(reentrant: bool, input_grads: bool, targets=TARGETS):
    base = tiny_llama()
    model = _peft(base, targets=targets)
    enable = (
        getattr(base, "activation_checkpointing_enable", None) or base.gradient_checkpointing_enable
    )
    enable({"use_reentrant": reentrant})
    if not input_grads:
        base.disable_input_require_grads()  # what transformers 4 left you with
    return model


def test_reentrant_checkpointing_without_input_grads_leaves_B_at_zero():
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    faulty = _checkpointed(reentrant=True, input_grads=False, targets=TARGETS + ["lm_head"])
    assert "checkpointing_no_input_grads" in _errors(doctor.check(faulty))
    assert "enable_input_require_grads" in str(doctor.check(faulty))
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", UserWarning
        )  # torch: "None of the inputs have requires_grad=True"
        _step(faulty, ids)
    assert max(_B_norms(faulty)) == 0, "the symptom: B in the checkpointed layers never moved"
    assert "B_zero" in _errors(doctor.check(faulty, after_training=True))

    # with only in-layer targets the loss has no grad_fn at all
    bare = _checkpointed(reentrant=True, input_grads=False)
    with warnings.catch_warnings(), pytest.raises(RuntimeError, match="does not require grad"):
        warnings.simplefilter("ignore", UserWarning)
        _step(bare, ids)

    for reentrant, input_grads in ((True, True), (False, False)):  # the two fixes
        fixed = _checkpointed(reentrant, input_grads, targets=TARGETS + ["lm_head"])
        assert "checkpointing_no_input_grads" not in doctor.check(fixed).codes
        _step(fixed, ids)
        assert min(_B_norms(fixed)) > 0, (
            f"B moves with reentrant={reentrant}, input grads={input_grads}"
        )


def test_no_checkpointing_no_finding():
    assert "checkpointing_no_input_grads" not in doctor.check(_peft(tiny_llama())).codes


# ---------------------------------------------------------------- added tokens


def _with_new_token(seed=0, resize_seed=1):
    """A tiny Llama with one token added to its vocabulary (256 → 257) and the embeddings resized
    (the new row is drawn at random: ``resize_seed``)."""
    model = tiny_llama(seed, tie_word_embeddings=True)
    torch.manual_seed(resize_seed)
    model.resize_token_embeddings(257)
    return model, 256


def test_added_tokens_trained_saved_and_reloaded(tmp_path):
    ids = torch.tensor([[5, 256, 7, 256, 9, 256]])
    base, new = _with_new_token()
    model = _peft(base, trainable_token_indices={"embed_tokens": [new]})
    assert doctor.check_added_tokens(model, [new]).ok
    before = doctor._token_rows(model, [new])
    for _ in range(3):
        _step(model, ids)
    assert (doctor._token_rows(model, [new]) - before).abs().max() > 1e-3, "the new row trained"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.save_pretrained(
            tmp_path, save_embedding_layers=False
        )  # only the adapter and the new rows
    reloaded = peft.PeftModel.from_pretrained(
        _with_new_token(resize_seed=2)[0], tmp_path
    )  # another random row
    report = doctor.check_added_tokens(reloaded, [new], trained=model)
    assert report.ok and "added_tokens_saved" in report.codes


def test_added_tokens_frozen_or_lost_are_caught(tmp_path):
    ids = torch.tensor([[5, 256, 7, 256, 9, 256]])
    base, new = _with_new_token()
    lora_only = _peft(base)  # LoRA on q, v: the row is frozen
    report = doctor.check_added_tokens(lora_only, [new])
    assert "added_tokens_untrained" in _errors(report)
    assert "trainable_token_indices" in str(report)

    base, new = _with_new_token()
    by_hand = _peft(base)
    by_hand.get_input_embeddings().weight.requires_grad_(
        True
    )  # unfrozen by hand, outside the config
    assert "added_tokens_not_saved" in _errors(doctor.check_added_tokens(by_hand, [new]))
    for _ in range(3):
        _step(by_hand, ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        by_hand.save_pretrained(tmp_path, save_embedding_layers=False)
    fresh, _ = _with_new_token(resize_seed=2)  # a new random row, as after any reload
    reloaded = peft.PeftModel.from_pretrained(fresh, tmp_path)
    lost = doctor.check_added_tokens(reloaded, [new], trained=by_hand)
    assert "added_tokens_lost" in _errors(lost)
    assert lost.findings[0].value > 1e-3


def test_check_added_tokens_refuses_ids_outside_the_vocabulary():
    base, new = _with_new_token()
    with pytest.raises(ValueError, match=r"0\.\.256"):
        doctor.check_added_tokens(base, [257])
    with pytest.raises(ValueError, match="non-empty"):
        doctor.check_added_tokens(base, [])
    with pytest.raises(TypeError, match="input embeddings"):
        doctor.check_added_tokens(torch.nn.Linear(2, 2), [0])
