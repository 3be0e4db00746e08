"""Rebuild lorakit/sft_data/docstrings.jsonl: the own-data example of notebook 09 §8.

240 records of the stdlib task (function → one-line docstring summary) in the plain
``{"prompt", "response"}`` format, taken evenly from the training split's pairs, code cut to
400 characters. Run: ``python scripts/make_sft_example.py`` (the file differs slightly between
Python versions; the shipped one was built once and is data, not a test fixture).
"""

import os
import sys

os.environ.pop("LORAKIT_FAST", None)  # the full stdlib, not test mode's fifth

from lorakit import sft  # noqa: E402

N, MAX_CODE_CHARS = 240, 400


def main() -> None:
    pairs = sft.docstring_pairs("train", 60)
    step = len(pairs) / N
    records = [sft.pair_record(pairs[int(i * step)], MAX_CODE_CHARS) for i in range(N)]
    path = sft.write_jsonl(records, sft.EXAMPLE_JSONL)
    print(
        f"{len(records)} records from {len(pairs)} pairs ({sys.version.split()[0]}) -> {path}, "
        f"{path.stat().st_size / 1024:.0f} KB"
    )


if __name__ == "__main__":
    main()
