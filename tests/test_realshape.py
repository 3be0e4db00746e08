"""The real-shape smoke test (issue 26): SmolLM2-360M-Instruct's exact config, random weights.

hidden 960, 32 layers, 15/5 heads, intermediate 2560, vocabulary 49,152 (a byte-level BPE of that
size trained offline on the stdlib's source and docs), tied embeddings: through notebook 09's
functions (``bench/gpu_finale.py``'s CPU path) for 2 steps per method, then the §7 merge, the
one-dtype save and the reload — in float32 and in bfloat16 compute (CPU autocast).

Minutes on 2 cores and ≈ 8 GB of RAM (full fine-tuning in float32 with AdamW is 16 bytes per
parameter), so it is not in ``make test``: ``make test-realshape`` runs it (CI runs both). Set
``LORAKIT_REALSHAPE=1`` to run it with pytest directly.
"""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("LORAKIT_REALSHAPE") != "1",
    reason="the real-shape smoke test takes minutes: make test-realshape",
)
pytest.importorskip("transformers", reason="transformers is not installed")

ROOT = Path(__file__).resolve().parents[1]


def _finale():
    spec = importlib.util.spec_from_file_location("gpu_finale", ROOT / "bench" / "gpu_finale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_finale"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_smollm2_360m_shapes_through_notebook_09s_functions(dtype, tmp_path):
    finale = _finale()
    res = finale.run(
        finale.parse(
            [
                "--device",
                "cpu",
                "--shape",
                "SmolLM2-360M",
                "--dtype",
                dtype,
                "--steps",
                "2",
                "--batch",
                "2",
                "--max-len",
                "128",
                "--val",
                "4",
                "--out",
                str(tmp_path),
            ]
        )
    )
    assert 361e6 < res["parameters"] < 363e6, "SmolLM2-360M has ≈ 362 M parameters"
    runs = res["methods"]
    for method, r in runs.items():
        assert r["status"] == "ok" and len(r["losses"]) == 2 and all(l == l for l in r["losses"]), (
            method
        )
    first = {m: r["losses"][0] for m, r in runs.items()}
    # random weights: the first loss is ≈ ln(49152) = 10.8 nats for every method
    assert all(9.5 < v < 12.5 for v in first.values()), first
    assert first["lorakit-qlora"] == pytest.approx(first["bnb-peft-qlora"], abs=0.2), (
        "same NF4 base, same batch"
    )
    assert runs["lorakit-qlora"]["weights"] == runs["bnb-peft-qlora"]["weights"], "like for like"
    peaks = {m: r["peak_bytes"] for m, r in runs.items()}
    assert peaks["lorakit-qlora"] < peaks["lora"] < peaks["full"]
    merge = res["merge"]
    assert merge["checkpoint_dtypes"] == ["F32"] and merge["loaded_dtypes"] == ["torch.float32"]
    assert merge["problems"] == [], merge
    print("\n" + Path(res["written"]).read_text())
