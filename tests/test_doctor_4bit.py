"""The adapter doctor on 4-bit bases (issue 26 item 7): W0 is the dequantized weight.

lorakit's ``Linear4bit`` has no ``weight`` (the doctor crashed), and bitsandbytes' ``Params4bit``
holds packed uint8 codes (the doctor read them as W0 and reported a false ``tiny_update``).
"""

import pytest
import torch
from tiny import tiny_llama

from lorakit import doctor
from lorakit.lora import lora_layers
from lorakit.qlora import prepare_qlora
from lorakit.quiet import quiet_import


def _originals(model):
    return {
        n: m.weight.detach().float().clone()
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and "lm_head" not in n
    }


def _expected_ratio(delta_in_out, W):
    return (
        torch.linalg.matrix_norm(delta_in_out.float()).item() / torch.linalg.matrix_norm(W).item()
    )


def test_the_doctor_reads_w0_of_lorakit_qlora_layers():
    model = tiny_llama(num_key_value_heads=2)
    originals = _originals(model)
    prepare_qlora(model, "all-linear", r=4, alpha=8)
    torch.manual_seed(0)
    for layer in lora_layers(model).values():
        layer.B.data.normal_(0, 0.05)
    report = doctor.check(model, after_training=True)
    assert len(report.layers) == len(originals) and "tiny_update" not in report.codes
    layers = lora_layers(model)
    for row in report.layers:
        name, layer = row["layer"], layers[row["layer"]]
        expected = _expected_ratio(layer.delta(), originals[name])
        assert row["update_ratio"] == pytest.approx(expected, rel=0.05), (
            name
        )  # NF4 moves ‖W0‖ by < 5 %


def test_the_doctor_reads_w0_of_bitsandbytes_4bit_layers_under_peft(tmp_path):
    peft = pytest.importorskip("peft")
    pytest.importorskip("bitsandbytes")
    transformers = quiet_import("transformers")
    model = tiny_llama(num_key_value_heads=2)
    originals = _originals(model)
    model.save_pretrained(tmp_path)
    config = transformers.BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    model = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, quantization_config=config, device_map="cpu", dtype=torch.float32
    )
    model = peft.get_peft_model(
        model, peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")
    )
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    report = doctor.check(model, after_training=True)
    assert len(report.layers) == len(originals)
    assert "tiny_update" not in report.codes, str(report)
    for row in report.layers:
        name = row["layer"]
        m = model.base_model.model.get_submodule(name)
        delta = (m.lora_B["default"].weight @ m.lora_A["default"].weight).t() * m.scaling["default"]
        assert row["update_ratio"] == pytest.approx(
            _expected_ratio(delta, originals[name]), rel=0.05
        ), name
