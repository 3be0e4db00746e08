"""The README's benchmark table quotes bench/results/, number for number (issue 25).

A measured number lives where the benchmark writes it; the README may quote it, and this test
keeps the quote honest: every number in a benchmark row (goals in parentheses aside) must be a
value of the result file that row comes from, rounded as the README prints it. After `make
bench` rewrites the files, a stale README row fails here until it is updated.
"""

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "bench" / "results"
# which result file each row of the README's benchmark table comes from (by its first words)
SOURCE = {
    "NF4 ": "cpu-quant.txt",
    "the same with `lorakit.fast.ENABLED = False`": "cpu-quant.txt",
    "torchao": "cpu-quant.txt",
    "LoRA training step": "cpu-lora.txt",
    "merged LoRA inference": "cpu-lora.txt",
    "unmerged LoRA inference": "cpu-lora.txt",
}
NUMBER = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")


def _rows() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Benchmarks", 1)[1].split("\n## ", 1)[0]
    return [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith("| what") and "---" not in line
    ]


def test_every_benchmark_row_names_its_source():
    rows = _rows()
    assert len(rows) >= 5, "the README's benchmark table was not found"
    unknown = [r[0] for r in rows if not any(r[0].startswith(k) for k in SOURCE)]
    assert not unknown, (
        f"add these rows' result files to SOURCE in {Path(__file__).name}: {unknown}"
    )


def test_benchmark_numbers_are_the_result_files_numbers():
    stale = []
    for what, *cells in _rows():
        source = next(v for k, v in SOURCE.items() if what.startswith(k))
        measured = [float(x) for x in NUMBER.findall((RESULTS / source).read_text())]
        # the ratio column may also divide two of the file's numbers (quantize alone ÷ bitsandbytes)
        ratios = [a / b for a in measured for b in measured if b > 0]
        for column, cell in enumerate(cells):
            cell = re.sub(r"\([^)]*\)", "", cell)  # goals, e.g. (≤ 1.05), are not measurements
            allowed = measured + (ratios if column == len(cells) - 1 else [])
            for quoted in NUMBER.findall(cell):
                half = 10 ** -len(quoted.split(".")[1]) / 2 + 1e-9  # the README rounds half up
                if not any(abs(v - float(quoted)) <= half for v in allowed):
                    stale.append(f"{what[:40]}: {quoted} is not in bench/results/{source}")
    assert not stale, "README benchmark numbers that the bench did not write:\n  " + "\n  ".join(
        stale
    )
