"""LoftQ (lorakit.loftq) against PEFT's LoftQ initialisation, and its promise: Q + AB is closer to W.

PEFT 0.21's ``peft.utils.loftq_utils.loftq_init`` has no quantizer of its own any more (its pure
torch ``NFQuantizer`` went in PEFT 0.20): it quantizes with bitsandbytes' NF4 (blocksize 64, no
double quantization) and SVDs the residual. As shipped it does not run on a CPU: it hard-codes
``compute_device = "xpu" if is_xpu_available() else "cuda"``. The tests run PEFT's own source with
that one line set to ``"cpu"`` (bitsandbytes quantizes NF4 on the CPU, bit for bit like
``lorakit.quant``), so the comparison is exact: same codes, same factors, to the bit.
"""

import copy
import importlib.util
import inspect

import pytest
import torch
from tiny import tiny_gpt

from lorakit.loftq import init_error, loftq, prepare_qlora_loftq
from lorakit.lora import lora_layers
from lorakit.quant import dequantize_4bit, quantize_4bit
from lorakit.quiet import quiet_import

loftq_utils = quiet_import("peft.utils.loftq_utils")
needs_peft = pytest.mark.skipif(loftq_utils is None, reason="peft is not installed")
DEVICE_LINE = 'compute_device = "xpu" if is_xpu_available() else "cuda"'


def peft_loftq_on_cpu():
    """PEFT's ``loftq_init``, its source unchanged except the compute device."""
    source = inspect.getsource(loftq_utils.loftq_init)
    assert DEVICE_LINE in source, "PEFT's loftq_init changed: look again at how it picks its device"
    namespace = dict(vars(loftq_utils))
    exec(source.replace(DEVICE_LINE, 'compute_device = "cpu"'), namespace)
    return namespace["loftq_init"]


@needs_peft
@pytest.mark.parametrize("num_iter", [1, 3])
def test_equal_to_peft_loftq_init(num_iter):
    W = torch.randn(96, 128, generator=torch.Generator().manual_seed(0)) * 0.05
    Q_peft, A_peft, B_peft = peft_loftq_on_cpu()(W, num_bits=4, reduced_rank=8, num_iter=num_iter)
    q, A, B = loftq(W, r=8, num_iter=num_iter)
    assert torch.equal(dequantize_4bit(q), Q_peft), "the same 4-bit base"
    assert torch.equal(A.t(), A_peft) and torch.equal(B.t(), B_peft), "lora_A = Aᵀ, lora_B = Bᵀ"


@needs_peft
def test_equal_to_peft_through_lora_config(monkeypatch):
    """PEFT's whole path, ``LoraConfig(init_lora_weights="loftq")`` → ``get_peft_model``. Its config
    refuses to be built without scipy (a leftover: nothing on this path uses it, and lorakit does
    not install it), so only while the config is built, ``find_spec("scipy")`` answers."""
    peft = quiet_import("peft")
    monkeypatch.setattr("peft.tuners.lora.layer.loftq_init", peft_loftq_on_cpu())
    model = tiny_gpt(0, d_model=64)  # in_features a multiple of 64: see the next test
    find_spec = importlib.util.find_spec
    with monkeypatch.context() as patch:
        patch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *args: find_spec("math") if name == "scipy" else find_spec(name, *args),
        )
        config = peft.LoraConfig(
            r=4,
            lora_alpha=4,
            target_modules=["q_proj", "up_proj"],
            init_lora_weights="loftq",
            loftq_config=peft.LoftQConfig(loftq_bits=4, loftq_iter=2),
        )
    theirs = peft.get_peft_model(copy.deepcopy(model), config)
    ours = prepare_qlora_loftq(
        copy.deepcopy(model), ["q_proj", "up_proj"], r=4, alpha=4, num_iter=2, double_quant=False
    )
    layers = lora_layers(ours)
    assert len(layers) == 4
    for name, layer in layers.items():
        peft_layer = theirs.base_model.model.get_submodule(name)
        assert torch.equal(
            layer.base.dequantized_weight(torch.float32), peft_layer.base_layer.weight
        )
        assert torch.equal(layer.A.t(), peft_layer.lora_A["default"].weight)
        assert torch.equal(layer.B.t(), peft_layer.lora_B["default"].weight)


@needs_peft
def test_where_peft_on_a_cpu_differs():
    """bitsandbytes 0.50's CPU ``dequantize_4bit`` kernel places blocks per row, while its quantizer
    (and its GPU kernels, and lorakit) cut the flattened tensor: for a weight whose in_features is
    not a multiple of the blocksize (32 here) PEFT-on-a-CPU's Q is bnb's own dequantization of the
    very same codes. So the codes agree always; the values agree where in_features % 64 == 0."""
    bnb = quiet_import("bitsandbytes.functional")
    W = torch.randn(32, 32, generator=torch.Generator().manual_seed(4)) * 0.05
    Q_peft, _, _ = peft_loftq_on_cpu()(W, num_bits=4, reduced_rank=4, num_iter=1)
    packed, state = bnb.quantize_4bit(W, quant_type="nf4", blocksize=64)
    assert torch.equal(quantize_4bit(W, "nf4", 64).packed, packed.reshape(-1)), "the same codes"
    assert torch.equal(Q_peft, bnb.dequantize_4bit(packed, state)), (
        "PEFT's Q is bnb's dequantization of them"
    )


def test_loftq_is_closer_to_w_and_scaling_is_honoured():
    W = torch.randn(64, 128, generator=torch.Generator().manual_seed(1)) * 0.02
    plain = init_error(W, quantize_4bit(W, "nf4", 64))
    errors = []
    for num_iter in (1, 2, 5):
        q, A, B = loftq(W, r=8, num_iter=num_iter, scaling=2.0)
        errors.append(init_error(W, q, A, B, scaling=2.0))
    assert errors[0] < plain, "Q + AB is closer to W than the quantized W alone"
    assert errors[-1] < errors[0], "alternating helps"
    q, A, B = loftq(W, r=8, num_iter=1, scaling=2.0)
    q1, A1, B1 = loftq(W, r=8, num_iter=1, scaling=1.0)
    assert torch.allclose(2.0 * A @ B, A1 @ B1, atol=1e-6), "the factors carry 1/scaling"


def test_prepare_qlora_loftq_uses_the_same_codes():
    model = tiny_gpt(2)
    W = model.blocks[0].attn.q_proj.weight.detach().clone()
    prepared = prepare_qlora_loftq(model, "all-linear", r=4, alpha=8, num_iter=2)
    layer = prepared.blocks[0].attn.q_proj
    q, A, B = loftq(W, 4, num_iter=2, scaling=2.0, double_quant=True)
    assert torch.equal(layer.base.packed, q.packed)
    assert torch.equal(layer.A, A) and torch.equal(layer.B, B)
    assert all(n.endswith((".A", ".B")) for n, p in prepared.named_parameters() if p.requires_grad)


def test_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        loftq(torch.randn(64), r=2)
    with pytest.raises(ValueError, match="r"):
        loftq(torch.randn(8, 64), r=9)
    with pytest.raises(ValueError, match="num_iter"):
        loftq(torch.randn(8, 64), r=2, num_iter=0)
