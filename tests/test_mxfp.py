"""MXFP4 and NVFP4 by hand (lorakit.mxfp): the OCP spec's facts written as tests, round trips,
scales and bits per parameter from stored bytes, and byte-for-byte equality with torchao's
prototypes (``torchao.prototype.mx_formats``) where torchao imports on this machine."""

import pytest
import torch

from lorakit import mxfp
from lorakit.quiet import quiet_import

torchao_mx = quiet_import("torchao.prototype.mx_formats.mx_tensor")
torchao_nv = quiet_import("torchao.prototype.mx_formats.nvfp4_tensor")


def test_e2m1_table_is_the_spec_one():
    # OCP MX v1.0, FP4 E2M1: exponent bias 1, max normal 6.0 (0 11 1), min normal 1.0, min subnormal 0.5
    for code in range(16):
        sign, exponent, mantissa = code >> 3, (code >> 1) & 3, code & 1
        value = (mantissa / 2) if exponent == 0 else 2.0 ** (exponent - 1) * (1 + mantissa / 2)
        assert mxfp.E2M1[code].item() == (-value if sign else value)
    assert (
        mxfp.E2M1.max().item() == 6.0 and mxfp.E2M1[2].item() == 1.0 and mxfp.E2M1[1].item() == 0.5
    )


def test_rounding_ties_to_even_and_saturation():
    x = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 0.2500001, 7.0, -9.0, -0.1, 0.0])
    codes = mxfp.e2m1_codes(x).tolist()
    # ties go to the even code (mantissa bit 0): 0.25→0, 0.75→1.0, 1.25→1.0, 1.75→2, 2.5→2, 3.5→4, 5→4
    assert codes[:7] == [0, 2, 2, 4, 4, 6, 6]
    assert codes[7] == 1 and codes[8] == 7 and codes[9] == 15, (
        "off a tie: nearest; beyond 6: saturated"
    )
    assert codes[10] == 8 and codes[11] == 0, "the sign bit is kept for a value that rounds to zero"


def test_mx_spec_worked_example():
    # a block whose absmax is 5: floor(log2 5) = 2, scale 2^(2-2) = 1 → E8M0 byte 127; 5 is a tie → 4
    x = torch.zeros(32)
    x[:3] = torch.tensor([5.0, -0.5, 1.6])
    q = mxfp.quantize_mxfp4(x)
    assert q.scales.tolist() == [127]
    assert mxfp.dequantize_mx(q)[:3].tolist() == [4.0, -0.5, 1.5]
    # absmax 7 → still scale 1 (floor), so 7 saturates to 6: the spec's rule clips the top of (6, 8)
    x[0] = 7.0
    assert mxfp.dequantize_mx(mxfp.quantize_mxfp4(x))[0].item() == 6.0
    # a power of two per block: every scale is exactly 2^(byte - 127)
    y = torch.randn(4, 64, generator=torch.Generator().manual_seed(0)) * 1e-3
    q = mxfp.quantize_mxfp4(y)
    scales = mxfp.block_scales(q)
    assert torch.equal(scales, torch.exp2(torch.log2(scales).round()))
    assert torch.all(y.abs().view(-1, 32).amax(1) / scales < 8) and torch.all(
        y.abs().view(-1, 32).amax(1) / scales >= 4
    )


@pytest.mark.parametrize("fmt", ["mxfp4", "nvfp4"])
def test_round_trip_and_bits(fmt):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(48, 128, generator=g)
    q = mxfp.quantize_mxfp4(x) if fmt == "mxfp4" else mxfp.quantize_nvfp4(x)
    x_hat = mxfp.dequantize_mx(q)
    assert x_hat.shape == x.shape and x_hat.dtype == x.dtype
    # decoding is exact on the grid: quantizing the decoded tensor again gives the same bytes
    q2 = mxfp.quantize_mxfp4(x_hat) if fmt == "mxfp4" else mxfp.quantize_nvfp4(x_hat)
    assert torch.equal(q2.packed, q.packed) and torch.equal(q2.scales, q.scales)
    # error bound: half the widest E2M1 gap (1, between 4 and 6) times the block scale, plus clipping
    rel = ((x - x_hat).abs().max() / x.abs().max()).item()
    assert rel < 0.25
    n = x.numel()
    expected = 4 + 8 / 32 if fmt == "mxfp4" else 4 + 8 / 16 + 32 / n
    assert q.nbytes == {"mxfp4": n // 2 + n // 32, "nvfp4": n // 2 + n // 16 + 4}[fmt]
    assert mxfp.bits_per_parameter(q) == pytest.approx(expected, abs=1e-12)


def test_nvfp4_scales():
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(2)) * 3
    q = mxfp.quantize_nvfp4(x)
    assert q.tensor_scale.item() == pytest.approx(x.abs().max().item() / (448 * 6), rel=1e-6)
    e4m3 = q.scales.view(torch.float8_e4m3fn).float()
    assert e4m3.max().item() == 448.0, "the block holding the tensor's absmax uses E4M3's top value"
    assert torch.allclose(mxfp.block_scales(q), e4m3 * q.tensor_scale)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="multiple of 32"):
        mxfp.quantize_mxfp4(torch.randn(4, 48))
    with pytest.raises(ValueError, match="finite"):
        mxfp.quantize_nvfp4(torch.tensor([float("nan")] * 16))
    with pytest.raises(ValueError, match="all-zero"):
        mxfp.quantize_nvfp4(torch.zeros(16))
    with pytest.raises(TypeError):
        mxfp.quantize_mxfp4(torch.ones(32, dtype=torch.int32))
    with pytest.raises(ValueError, match="fmt must be"):
        mxfp.roundtrip(torch.randn(32), "nf4")


@pytest.mark.skipif(
    torchao_mx is None or torchao_nv is None, reason="torchao's MX prototypes do not import"
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 300.0])
def test_equal_to_torchao(dtype, scale):
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(32, 96, generator=g) * scale).to(dtype)
    x[0, :32] = 0  # an all-zero block
    scale_mx, data_mx = torchao_mx.to_mx(x, torch.float4_e2m1fn_x2, 32)
    q = mxfp.quantize_mxfp4(x)
    assert torch.equal(scale_mx.view(torch.uint8).reshape(-1), q.scales)
    assert torch.equal(data_mx.view(torch.uint8).reshape(-1), q.packed)
    ours = mxfp.dequantize_mx(q, torch.float32)
    assert torch.equal(
        torchao_mx.to_dtype(data_mx, scale_mx, torch.float4_e2m1fn_x2, 32, torch.float32), ours
    )

    tensor_scale = torchao_nv.per_tensor_amax_to_scale(x.float().abs().max())
    scale_nv, data_nv = torchao_nv.nvfp4_quantize(x, 16, tensor_scale)
    q = mxfp.quantize_nvfp4(x)
    assert torch.equal(tensor_scale.reshape(1), q.tensor_scale)
    assert torch.equal(scale_nv.view(torch.uint8).reshape(-1), q.scales)
    assert torch.equal(data_nv.view(torch.uint8).reshape(-1), q.packed)
    theirs = torchao_nv.NVFP4Tensor(
        data_nv, scale_nv, 16, torch.float32, per_tensor_scale=tensor_scale
    )
    assert torch.equal(theirs.dequantize(torch.float32), mxfp.dequantize_mx(q, torch.float32))


def test_model_copy_keeps_the_head():
    from lorakit.model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, d_model=32, n_head=2, context=16))
    quantized = mxfp.quantize_model_linears(model, "mxfp4")
    assert torch.equal(quantized.lm_head.weight, model.lm_head.weight)
    up = dict(quantized.named_modules())["blocks.0.mlp.up_proj"].weight
    assert not torch.equal(up, dict(model.named_modules())["blocks.0.mlp.up_proj"].weight)
    assert torch.equal(mxfp.roundtrip(up, "mxfp4"), up), "already on the MXFP4 grid"
