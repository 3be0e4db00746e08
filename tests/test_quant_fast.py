"""lorakit.fast gives quant.py's readable path bit for bit: every 16-bit bucket of the code
lookup, and quantize + dequantize over types, dtypes, odd sizes, partial blocks and double quant."""

import itertools

import pytest
import torch

from lorakit import fast, quant

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SHAPES = [(1,), (7,), (3, 5), (2, 63), (129,), (130, 33), (17, 64, 3), (64, 64)]


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits of a float tensor (so -0.0 and 0.0 differ), to compare "to the bit"."""
    return t.contiguous().view({4: torch.int32, 2: torch.int16}[t.element_size()])


def both_paths(fn):
    """``fn()`` with the fast path on, then with the switch off (the readable path)."""
    fast.ENABLED = True
    try:
        on = fn()
        fast.ENABLED = False
        return on, fn()
    finally:
        fast.ENABLED = True


def float32_from_bits(pattern: torch.Tensor) -> torch.Tensor:
    """int64 bit patterns (0 … 2³²−1) as float32."""
    return (
        torch.where(pattern >= 2**31, pattern - 2**32, pattern).to(torch.int32).view(torch.float32)
    )


@pytest.mark.parametrize("quant_type", ["nf4", "fp4", "int4"])
def test_bucket_lookup_equals_bucketize_on_every_bucket(quant_type):
    """All 65,536 buckets of the top-16-bit lookup: both edges of each, the midpoints and their
    float32 neighbours, and random values: the same code as the readable rule."""
    table = quant.TABLES[quant_type]
    mids, _ = quant._midpoints(table)
    top = torch.arange(65536, dtype=torch.int64) << 16
    edges = torch.cat([float32_from_bits(top), float32_from_bits(top | 0xFFFF)])
    edges = edges[torch.isfinite(edges)]
    near = torch.cat(
        [mids, torch.nextafter(mids, torch.tensor(2.0)), torch.nextafter(mids, torch.tensor(-2.0))]
    )
    values = torch.cat(
        [edges, near, torch.rand(100_000) * 2.2 - 1.1, torch.tensor([0.0, -0.0, 1.0, -1.0])]
    )
    assert torch.equal(
        fast.nearest_codes(values.contiguous(), table), quant.nearest_codes(values, table)
    )


@pytest.mark.parametrize("quant_type, dtype", itertools.product(["nf4", "fp4", "int4"], DTYPES))
def test_quantize_and_dequantize_bit_equal_with_the_switch_on_and_off(quant_type, dtype):
    gen = torch.Generator().manual_seed(0)
    for shape, blocksize, double_quant in itertools.product(SHAPES, [1, 2, 64, 256], [False, True]):
        x = (torch.randn(shape, generator=gen) * 3).to(dtype)
        x.view(-1)[: x.numel() // 3] = 0.0  # a few all-zero blocks, and -0.0 against 0.0 matters
        on, off = both_paths(lambda: quant.quantize_4bit(x, quant_type, blocksize, double_quant))
        case = (shape, blocksize, double_quant)
        assert torch.equal(on.packed, off.packed), case
        assert torch.equal(quant.dequantize_absmax(on), quant.dequantize_absmax(off)), case
        for out_dtype in (None, torch.float32, torch.bfloat16):
            a, b = both_paths(lambda: quant.dequantize_4bit(on, out_dtype))
            assert a.shape == b.shape == x.shape and a.dtype == b.dtype, case
            assert torch.equal(bits(a), bits(b)), (case, out_dtype)


def test_many_chunks_equal_the_readable_path(monkeypatch):
    """The CPU path works chunk by chunk: chunk edges inside the tensor, a partial last block."""
    monkeypatch.setattr(fast, "CHUNK", 256)
    x = torch.randn(5 * 256 + 70, generator=torch.Generator().manual_seed(1))
    for quant_type, blocksize in itertools.product(["nf4", "fp4"], [1, 64, 512]):
        q, q_readable = both_paths(
            lambda: quant.quantize_4bit(x, quant_type, blocksize, double_quant=True)
        )
        assert torch.equal(q.packed, q_readable.packed), (quant_type, blocksize)
        a, b = both_paths(lambda: quant.dequantize_4bit(q))
        assert torch.equal(bits(a), bits(b)), (quant_type, blocksize)


def test_the_pair_table_holds_both_codes_of_each_byte():
    pairs = fast._pair_table(fast._key(quant.NF4), "cpu").view(torch.float32).view(256, 2)  # 256×2
    byte = torch.arange(256)
    assert torch.equal(pairs[:, 0], quant.NF4[byte >> 4]) and torch.equal(
        pairs[:, 1], quant.NF4[byte & 15]
    )


def test_a_failing_compile_falls_back_to_eager_once_and_other_errors_surface(monkeypatch):
    q = quant.quantize_4bit(torch.randn(32, 64, generator=torch.Generator().manual_seed(0)))
    eager = quant.dequantize_4bit(q)

    def broken_compile(*args):
        raise torch._dynamo.exc.TorchDynamoException(
            "the compiler failed"
        )  # what Dynamo/Inductor raise

    monkeypatch.setattr(fast, "COMPILED", broken_compile)
    with pytest.warns(UserWarning, match="using the eager version"):
        assert torch.equal(quant.dequantize_4bit(q), eager)
    assert fast.COMPILED is None, "switched back to eager for good"

    def out_of_memory(*args):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(fast, "COMPILED", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        quant.dequantize_4bit(q)
    fast.compile_dequantize(False)
    assert fast.COMPILED is None
