"""Your own data → ids and labels through the model's chat template (lorakit.sft, notebook 09 §8)."""

import json

import pytest
import torch

from lorakit import sft
from lorakit.data import decode

pytest.importorskip("transformers", reason="transformers is not installed")

from lorakit import hf  # noqa: E402

MARKER = "<|im_start|>assistant\n"
EOS = "<|im_end|>"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    folder = hf.build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
    return hf.load_tokenizer(folder, local_only=True)


@pytest.fixture(scope="module")
def pairs():
    return sft.docstring_pairs("train", 60)[:40]


def _decoded(tok, ids):
    return tok.decode(ids.tolist(), skip_special_tokens=False)


@pytest.mark.parametrize("max_len", [40, 56, 64, 96, 128, 160, 192, 256, 384])
def test_every_example_keeps_the_marker_once_the_whole_response_and_eos(tok, pairs, max_len):
    shortened = dropped = 0
    for pair in pairs:
        full = sft.chat_example(pair, tok, 10**6)
        answer = sft.response_ids(pair.summary, tok)
        record = sft.pair_record(pair)
        example = sft.record_example(record, tok, max_len)
        if example is None:  # only when the template and the answer alone are too long
            empty = sft.prompt_ids({"prompt": "", "response": pair.summary}, tok)
            assert len(empty) + len(answer) > max_len
            dropped += 1
            continue
        ids, labels = example
        text = _decoded(tok, ids)
        assert len(ids) <= max_len
        assert text.count(MARKER) == 1, f"{pair.name} at {max_len}: the assistant marker once"
        assert text.endswith(MARKER + pair.summary + EOS), (
            f"{pair.name} at {max_len}: whole answer + EOS"
        )
        assert ids[-1] == tok.eos_token_id
        n = len(answer)
        assert torch.equal(labels[-n:], ids[-n:]) and (labels[:-n] == sft.IGNORE).all()
        # the prompt is the template around the head of the content: what generation sees, shortened
        user = text[: text.index(EOS)].split("<|im_start|>user\n", 1)[1]
        assert record["prompt"].startswith(user)
        shortened += len(ids) < len(full[0]) and len(user) < len(record["prompt"])
        assert torch.equal(sft.chat_example(pair, tok, max_len)[0], ids), (
            "chat_example: one implementation"
        )
    if max_len <= 96:
        assert shortened > len(pairs) // 2, "the small budgets really do shorten prompts"
    if max_len >= 96:
        assert dropped == 0


def test_the_byte_template_keeps_its_marker_response_and_eos(pairs):
    for max_len in (48, 80, 128):
        for pair in pairs:
            example = sft.record_example(
                {"prompt": pair.code, "response": pair.summary}, None, max_len
            )
            if example is None:
                continue
            ids, labels = example
            text = decode(ids)
            assert len(ids) <= max_len and text.count("### Summary\n") == 1
            assert text.endswith("### Summary\n" + pair.summary + sft.EOS)
            assert decode(labels[labels != sft.IGNORE]) == pair.summary + sft.EOS


def test_a_record_that_cannot_fit_is_dropped_counted_and_warned(tok):
    records = [
        {"prompt": "a b c " * 50, "response": "Short."},
        {"prompt": "x", "response": "word " * 100},
    ]
    with pytest.warns(UserWarning, match="1 of 2 records cannot fit max_len=64"):
        examples, dropped = sft.encode_records(records, tok, 64)
    assert dropped == 1 and len(examples) == 1 and len(examples[0][0]) <= 64


def test_chat_messages_keep_the_system_turn_and_shorten_the_last_user_message(tok):
    record = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question " * 40},
            {"role": "assistant", "content": "Second answer."},
        ]
    }
    full = sft.record_example(record, tok, 10**6)
    ids, labels = sft.record_example(record, tok, 80)
    assert len(ids) <= 80 < len(full[0])
    text = _decoded(tok, ids)
    assert "You are terse." in text and "first answer" in text, (
        "earlier turns are context, kept whole"
    )
    assert text.endswith(MARKER + "Second answer." + EOS) and text.count("second question") < 40
    assert tok.decode(labels[labels != sft.IGNORE].tolist()) == "Second answer." + EOS, (
        "only the last answer"
    )


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"prompt": "p"}, "needs 'prompt' and 'response'"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "at least two"),
        (
            {"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "?"}]},
            "last message must be",
        ),
        (
            {
                "messages": [
                    {"role": "system", "content": "s"},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "no 'user'",
        ),
    ],
)
def test_bad_records_are_refused_with_their_place(tmp_path, bad, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=f"line 2.*{match}|{match}"):
        sft.read_jsonl(path)
    with pytest.raises(ValueError, match=f"record 0.*{match}"):
        sft.encode_records([bad], None, 64)


def test_jsonl_round_trip_split_and_the_shipped_example(tmp_path):
    records = sft.read_jsonl(sft.EXAMPLE_JSONL)
    assert len(records) >= 100
    assert all(
        r["prompt"].startswith(sft.INSTRUCTION) and r["response"].endswith(".") for r in records
    )
    path = sft.write_jsonl(records[:5], tmp_path / "copy.jsonl")
    assert sft.read_jsonl(path) == records[:5]
    (tmp_path / "broken.jsonl").write_text('{"prompt": "p", "response": "r"}\n{oops\n')
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        sft.read_jsonl(tmp_path / "broken.jsonl")
    train, val = sft.split_records(records, 0.2, seed=0)
    assert len(val) == round(0.2 * len(records)) and len(train) + len(val) == len(records)
    assert sft.split_records(records, 0.2, seed=0) == (train, val), "seeded"
    assert not {json.dumps(r) for r in train} & {json.dumps(r) for r in val}
    with pytest.raises(ValueError, match="val_share must be between 0 and 1"):
        sft.split_records(records, 1.0)


def test_batched_answers_pad_left_and_equal_one_at_a_time(tok, tmp_path):
    folder = hf.build_tiny_llama(tmp_path / "m")
    model = hf.load_model(folder, local_only=True)
    records = [sft.pair_record(p) for p in sft.docstring_pairs("val", 60)[:4]]
    records[0] = {"prompt": "short", "response": "x"}  # different lengths: the batch needs padding
    batched = sft.answer_records(model, tok, records, max_new_tokens=6, batch_size=4)
    alone = [sft.answer_records(model, tok, [r], max_new_tokens=6)[0] for r in records]
    assert batched == alone
    assert sft.stop_rate([("a", True), ("b", False)]) == 0.5
