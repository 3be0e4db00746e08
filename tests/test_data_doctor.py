"""The data doctor (lorakit.data_doctor, notebook 09 §9): each planted fault is found, and
nothing is found on the clean version of the same data."""

import copy

import pytest
import torch

from lorakit import data_doctor, sft

pytest.importorskip("transformers", reason="transformers is not installed")

from lorakit import hf  # noqa: E402

MAX_LEN = 96


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    folder = hf.build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
    return hf.load_tokenizer(folder, local_only=True)


@pytest.fixture(scope="module")
def records():
    return [sft.pair_record(p) for p in sft.docstring_pairs("train", 60)[:16]]


@pytest.fixture(scope="module")
def clean(tok, records):
    examples, dropped = sft.encode_records(records, tok, MAX_LEN)
    assert dropped == 0
    return examples


def _problems(report):
    return {f.code for f in report.problems}


def test_clean_data_has_no_problems_as_a_list_and_as_a_batch(tok, records, clean):
    assert _problems(data_doctor.check(clean, tok, records=records, max_len=MAX_LEN)) == set()
    batch = sft.collate(clean, tok.pad_token_id)
    report = data_doctor.check(batch, tok, records=records, max_len=MAX_LEN)
    assert _problems(report) == set() and report.ok
    labelled = sum(int((lab != sft.IGNORE).sum()) for _, lab in clean) / sum(
        len(ids) for ids, _ in clean
    )
    assert report.labelled_share == pytest.approx(labelled)
    assert "labelled_share" in report.codes and "no data problems found" in str(report)


def test_pad_equal_to_eos_with_a_pad_masking_collator(tok, clean):
    tok_eos = copy.deepcopy(tok)
    tok_eos.pad_token = (
        tok_eos.eos_token
    )  # what many tutorials do, and load_tokenizer when there is none
    batch = sft.collate(clean, tok_eos.pad_token_id)
    assert _problems(data_doctor.check(batch, tok_eos)) == set(), (
        "pad == EOS alone is fine if masked by position"
    )
    batch["labels"][batch["input_ids"] == tok_eos.pad_token_id] = (
        sft.IGNORE
    )  # the collator that masks by id
    report = data_doctor.check(batch, tok_eos)
    assert _problems(report) == {"pad_eos_masked"}
    assert "pad token that is not EOS" in str(report)


def test_an_unlabelled_eos_with_a_distinct_pad(tok, clean):
    masked = [(ids, torch.where(ids == tok.eos_token_id, sft.IGNORE, lab)) for ids, lab in clean]
    assert _problems(data_doctor.check(masked, tok)) == {"eos_unlabelled"}


def test_responses_without_eos(tok, records):
    examples, _ = sft.encode_records(records, tok, MAX_LEN, eos=False)
    report = data_doctor.check(examples, tok, records=records, max_len=MAX_LEN)
    assert _problems(report) == {"no_eos"} and "append the EOS" in str(report)


def test_a_hand_made_template_and_a_cut_marker_are_a_mismatch(tok, records, clean):
    hand = []
    for r in records:
        prompt = tok(f"Question: {r['prompt']}\nAnswer: ", add_special_tokens=False)["input_ids"][
            : MAX_LEN - 40
        ]
        answer = sft.response_ids(r["response"], tok)
        hand.append(sft._example(prompt, answer, True))
    assert _problems(data_doctor.check(hand, tok, records=records)) == {"template_mismatch"}
    # the old chat_example: the prompt's *end* cut to make room, so the marker goes
    old = []
    for r in records:
        prompt = sft.prompt_ids(r, tok)
        answer = sft.response_ids(r["response"], tok)
        old.append(sft._example(prompt[: 48 - len(answer)], answer, True))
    assert "template_mismatch" in _problems(data_doctor.check(old, tok))


def test_answers_cut_by_max_len(tok, records):
    full, _ = sft.encode_records(records, tok, 10**6)
    cut_at = 60
    naive = [
        (ids[:cut_at], lab[:cut_at]) for ids, lab in full
    ]  # the tail cut: answer and EOS go first
    assert any(len(ids) > cut_at for ids, _ in full), "the fault is really planted"
    assert "response_truncated" in _problems(data_doctor.check(naive, tok, max_len=cut_at))
    assert "response_truncated" in _problems(data_doctor.check(naive, tok, records=records))
    fixed, _ = sft.encode_records(records, tok, cut_at)
    assert _problems(data_doctor.check(fixed, tok, records=records, max_len=cut_at)) == set()


def test_a_mask_that_covers_the_prompt(tok, records):
    examples, _ = sft.encode_records(records, tok, MAX_LEN, mask=False)
    assert _problems(data_doctor.check(examples, tok)) == {"mask_covers_prompt"}


def test_a_mask_that_misses_the_answer(tok, clean):
    late = []
    for ids, lab in clean:  # a response-only mask that starts two tokens late
        lab = lab.clone()
        first = int((lab != sft.IGNORE).nonzero()[0])
        lab[first : first + 2] = sft.IGNORE
        late.append((ids, lab))
    assert _problems(data_doctor.check(late, tok)) == {"mask_misses_response"}
    nothing = [(ids, torch.full_like(lab, sft.IGNORE)) for ids, lab in clean]
    assert "no_labels" in _problems(data_doctor.check(nothing, tok))


def test_right_padding_for_batched_generation(tok, records):
    prompts = [tok.decode(sft.prompt_ids(r, tok)) for r in records[:4]] + ["hi"]
    right = copy.deepcopy(tok)
    right.padding_side = "right"
    batch = right(prompts, padding=True, add_special_tokens=False, return_tensors="pt")
    report = data_doctor.check(dict(batch), right)
    assert _problems(report) == {
        "right_padding_generation"
    } and "generation batch of 5 prompts" in str(report)
    left = copy.deepcopy(tok)
    left.padding_side = "left"
    batch = left(prompts, padding=True, add_special_tokens=False, return_tensors="pt")
    assert _problems(data_doctor.check(dict(batch), left)) == set()


def test_the_course_gpt_bytes(records):
    pairs = sft.docstring_pairs("train", 60)[:16]
    assert _problems(data_doctor.check(sft.byte_examples(pairs, 128), None)) == set()
    assert _problems(data_doctor.check(sft.byte_examples(pairs, 128, eos=False), None)) == {
        "no_eos"
    }
    assert _problems(data_doctor.check(sft.byte_examples(pairs, 128, mask=False), None)) == {
        "mask_covers_prompt"
    }


def test_bad_inputs(tok, clean, records):
    with pytest.raises(
        ValueError, match="records must match the examples one to one: 3 records, 16 examples"
    ):
        data_doctor.check(clean, tok, records=records[:3])


def test_a_tokenizer_without_eos_is_refused_before_anything(tok):
    no_eos = copy.deepcopy(tok)
    no_eos.eos_token = None
    with pytest.raises(ValueError, match="no eos_token"):
        sft.record_example({"prompt": "p", "response": "r"}, no_eos, 64)
    with pytest.raises(ValueError, match="no eos_token_id"):
        data_doctor.check([(torch.tensor([1, 2]), torch.tensor([1, 2]))], no_eos)
