"""The prepared GPU script (bench/gpu_finale.py) and bench_qlora_gpu, run on the CPU (issue 26).

No GPU is lent to CI: the script's dry run goes through every step of notebook 09's GPU section
(the four methods, the §7 merge, save, reload and checks, the report file) on a tiny Llama, in
float32 and with the compute dtype forced to bfloat16 (CPU autocast), so the bf16 branch runs.
"""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason="transformers is not installed")

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_gpu_script_dry_run_goes_through_notebook_09s_gpu_section(tmp_path, dtype):
    finale = _load("gpu_finale")
    res = finale.run(finale.parse(["--dry-run", "--dtype", dtype, "--out", str(tmp_path)]))
    assert res["compute_dtype"] == f"torch.{dtype}"
    assert set(res["methods"]) == {"lorakit-qlora", "bnb-peft-qlora", "lora", "full"}
    for method, r in res["methods"].items():
        assert r["status"] == "ok" and len(r["losses"]) == 2, method
        assert r["saved_bytes_per_token"] > 0 and r["peak_bytes"] > 0
    w = {m: r["weights"] for m, r in res["methods"].items()}
    assert w["lorakit-qlora"] == w["bnb-peft-qlora"] == f"4-bit + {dtype} (LoRA float32)", (
        "like for like"
    )
    assert w["full"] == ("float32" if dtype == "float32" else "float32, autocast bfloat16")
    first = [res["methods"][m]["losses"][0] for m in ("lorakit-qlora", "bnb-peft-qlora")]
    assert first[0] == pytest.approx(first[1], abs=0.05), (
        "the two QLoRA stacks start from the same loss"
    )
    merge = res["merge"]
    assert merge["checkpoint_dtypes"] == ["F32"] and merge["loaded_dtypes"] == ["torch.float32"]
    assert merge["problems"] == [] and merge["exact_expected"] == (dtype == "float32")
    report = Path(res["written"]).read_text()
    assert (
        Path(res["written"]).name == "gpu-dryrun-cpu.txt"
        and "§7 merge" in report
        and "lorakit-qlora" in report
    )
    assert res["tokens"]["median_padded_batch"] >= res["tokens"]["median_example"]


def test_token_counts_measure_padding():
    finale = _load("gpu_finale")
    examples = [(torch.ones(n, dtype=torch.long), None) for n in (10, 10, 30, 30)]
    counts = finale.token_counts(examples, batch_size=4)
    assert counts["median_padded_batch"] == 120 and counts["padding_share"] == pytest.approx(
        1 - 80 / 120
    )


def test_bench_accepts_small_real_shapes_on_a_simulated_t4(monkeypatch):
    bench = _load("bench_qlora_gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation
    )
    device, dtype, shape, name = bench.settings(bench.parse(["--model", "SmolLM2-360M"]))
    assert shape["hidden_size"] == 960 and shape["tie_word_embeddings"] and dtype == torch.float32
    cfg = bench.build_llama(
        dict(shape, num_hidden_layers=1), torch.device("meta"), torch.float32, 0
    ).config
    assert (
        cfg.tie_word_embeddings
        and cfg.num_key_value_heads == 5
        and cfg.max_position_embeddings == 8192
    )


def test_bench_reports_out_of_memory_per_setup_and_goes_on(monkeypatch):
    bench = _load("bench_qlora_gpu")
    real = bench.run_one

    def tight(name, *args):
        if name == "bf16_lora":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB")
        return real(name, *args)

    monkeypatch.setattr(bench, "run_one", tight)
    results = bench.main(["--smoke", "--only", "lorakit_qlora", "bf16_lora"])
    assert results["runs"]["bf16_lora"]["skipped"] == "out of memory on this device"
    assert "1.50 GiB" in results["runs"]["bf16_lora"]["error"]
    assert results["runs"]["lorakit_qlora"]["peak_bytes"] > 0
    assert "qlora_peak_vs_bf16_lora" not in results["ratios"]

    def bug(name, *args):
        raise KeyError("a real bug")

    monkeypatch.setattr(bench, "run_one", bug)
    with pytest.raises(KeyError):
        bench.main(["--smoke", "--only", "lorakit_qlora"])
