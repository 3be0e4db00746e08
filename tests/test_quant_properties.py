"""Property-based tests of lorakit.quant (hypothesis, 200+ random cases each)."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lorakit import quant as Q

SETTINGS = settings(max_examples=200, deadline=None)

# finite float32 values over many magnitudes; no subnormals (bitsandbytes clamps an absmax
# below 1e-38 for the scaling, which is outside what the error bound describes)
values = st.floats(-1e6, 1e6, width=32, allow_nan=False, allow_subnormal=False)
tensors = st.integers(1, 700).flatmap(lambda n: arrays(np.float32, n, elements=values))
blocksizes = st.sampled_from([1, 2, 4, 16, 32, 64, 128, 256])


def _per_element_absmax(q: Q.Quantized4bit) -> torch.Tensor:
    return Q.dequantize_absmax(q).repeat_interleave(q.blocksize)[: q.numel]


@SETTINGS
@given(st.integers(1, 600).flatmap(lambda n: arrays(np.uint8, 2 * n, elements=st.integers(0, 15))))
def test_pack_unpack_round_trip(codes):
    codes = torch.from_numpy(codes)
    packed = Q.pack_nibbles(codes)
    assert packed.numel() == codes.numel() // 2
    assert torch.equal(Q.unpack_nibbles(packed), codes)
    assert torch.equal(Q.unpack_nibbles(packed, codes.numel() - 1), codes[:-1])


@SETTINGS
@given(tensors, blocksizes, st.sampled_from(["nf4", "fp4", "int4"]))
def test_error_within_half_the_widest_gap(x, blocksize, quant_type):
    x = torch.from_numpy(x)
    q = Q.quantize_4bit(x, quant_type, blocksize)
    x_hat = Q.dequantize_4bit(q)
    absmax = _per_element_absmax(q)
    bound = Q.max_half_gap(Q.TABLES[quant_type]) * absmax * (1 + 1e-5)
    assert torch.all((x_hat - x).abs() <= bound)
    assert torch.equal(Q.code_usage(q).sum(), torch.tensor(x.numel()))


@SETTINGS
@given(tensors, st.sampled_from([torch.bfloat16, torch.float16]))
def test_error_bound_in_half_precision(x, dtype):
    x = torch.from_numpy(x).clamp(-6e4, 6e4).to(dtype)  # float16 tops out at 65504
    q = Q.quantize_4bit(x)
    x_hat = Q.dequantize_4bit(q).float()
    eps = torch.finfo(dtype).eps  # the final cast to the input dtype adds one rounding
    bound = Q.max_half_gap(Q.NF4) * _per_element_absmax(q) * (1 + 1e-5) + x_hat.abs() * eps
    assert torch.all((x_hat - x.float()).abs() <= bound)


@SETTINGS
@given(
    st.integers(1, 3000).flatmap(
        lambda n: arrays(np.float32, n, elements=st.floats(0, 1e3, width=32, allow_subnormal=False))
    )
)
def test_double_quantized_absmax_within_its_bound(absmax):
    """Feed absmax-like values (non-negative) straight through the constants' quantizer."""
    absmax = torch.from_numpy(absmax)
    q = Q.Quantized4bit(
        packed=torch.zeros(1, dtype=torch.uint8),
        shape=torch.Size([absmax.numel()]),
        dtype=torch.float32,
        blocksize=1,
        quant_type="nf4",
    )
    q.offset = absmax.mean()
    q.absmax_codes, q.absmax2 = Q.quantize_blockwise_8bit(absmax - q.offset, q.blocksize2)
    recovered = Q.dequantize_absmax(q)
    scale = q.absmax2.repeat_interleave(256)[: absmax.numel()]
    # + a few of float32's smallest normal: values that tiny lose their precision as subnormals
    bound = Q.max_half_gap(Q.dynamic_map()) * scale * (1 + 1e-5) + 1e-6 * absmax.abs().max() + 1e-37
    assert torch.all((recovered - absmax).abs() <= bound)


@SETTINGS
@given(tensors, blocksizes)
def test_double_quant_keeps_the_4bit_codes(x, blocksize):
    x = torch.from_numpy(x)
    plain, dq = (
        Q.quantize_4bit(x, blocksize=blocksize),
        Q.quantize_4bit(x, blocksize=blocksize, double_quant=True),
    )
    assert torch.equal(plain.packed, dq.packed)
    assert dq.absmax_codes.numel() == plain.absmax.numel()
    assert torch.isfinite(Q.dequantize_4bit(dq)).all()
