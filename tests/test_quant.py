"""lorakit.quant: code books, bit-exactness with bitsandbytes, double quantization, bad input."""

import math
import warnings

import pytest
import torch

from lorakit import quant as Q

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# sizes that are a multiple of 64, that are not, odd counts, 1-D and 3-D
SHAPES = [(64,), (7,), (1,), (3, 5), (130, 33), (256, 256), (17, 64, 3), (2, 63), (129,)]


@pytest.fixture(scope="module")
def bnb():
    warnings.filterwarnings("ignore")
    return pytest.importorskip("bitsandbytes.functional")


def _bnb_quantize(F, x, quant_type="nf4", blocksize=64, double_quant=False):
    return F.quantize_4bit(
        x, blocksize=blocksize, quant_type=quant_type, compress_statistics=double_quant
    )


# ------------------------------------------------------------------------------- code books


def test_nf4_from_quantiles_is_the_table_bit_for_bit():
    derived = Q.nf4_from_quantiles()
    assert (derived - Q.NF4).abs().max() <= 1e-6
    assert torch.equal(derived, Q.NF4)
    assert Q.NF4[7] == 0 and Q.NF4[0] == -1 and Q.NF4[15] == 1
    assert (Q.NF4 > 0).sum() == 8 and (Q.NF4 < 0).sum() == 7


def test_tables_equal_bitsandbytes(bnb):
    assert torch.equal(Q.NF4, bnb.get_4bit_type("nf4", device="cpu"))
    assert torch.equal(Q.FP4, bnb.get_4bit_type("fp4", device="cpu"))
    assert torch.equal(Q.dynamic_map(signed=True), bnb.create_dynamic_map(signed=True))
    assert torch.equal(Q.dynamic_map(signed=False), bnb.create_dynamic_map(signed=False))


def test_dynamic_map_shape():
    m = Q.dynamic_map()
    assert m.numel() == 256 and m.unique().numel() == 256 and torch.all(m[1:] > m[:-1])
    assert m.max() == 1.0 and (m == 0).sum() == 1
    assert Q.max_half_gap(m) == pytest.approx(0.9 / 64 / 2, rel=1e-5)


def test_half_gaps():
    assert Q.max_half_gap(Q.NF4) == pytest.approx(
        (1 - 0.6961928009986877) / 2
    )  # between -1 and code 1
    assert Q.max_half_gap(Q.FP4) == pytest.approx(1 / 6, rel=1e-6)
    assert Q.max_half_gap(Q.INT4) == pytest.approx(1 / 14, rel=1e-6)


def test_ties_go_to_the_lower_code():
    mids, _ = Q._midpoints(Q.NF4)
    assert torch.equal(Q.nearest_codes(mids, Q.NF4), torch.arange(15, dtype=torch.uint8))


# ------------------------------------------------------------------------------- bit-exact


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_bit_exact_with_bitsandbytes(bnb, quant_type, dtype):
    gen = torch.Generator().manual_seed(1)
    for shape in SHAPES:
        x = (torch.randn(shape, generator=gen) * 3).to(dtype)
        x.view(-1)[: min(70, x.numel() - 1)] *= (
            torch.rand(1, generator=gen).item() < 0.5
        )  # some zero blocks
        packed, state = _bnb_quantize(bnb, x, quant_type)
        q = Q.quantize_4bit(x, quant_type)
        assert torch.equal(q.packed, packed.reshape(-1)), (quant_type, dtype, shape)
        assert torch.equal(q.absmax, state.absmax), (quant_type, dtype, shape)
        ours, theirs = Q.dequantize_4bit(q), bnb.dequantize_4bit(packed, state)
        assert ours.shape == x.shape and ours.dtype == dtype
        assert torch.equal(ours.reshape(-1), theirs.reshape(-1)), (quant_type, dtype, shape)


@pytest.mark.parametrize("blocksize", [32, 128, 256, 4096])
def test_bit_exact_other_blocksizes(bnb, blocksize):
    x = torch.randn(300, 70)
    packed, state = _bnb_quantize(bnb, x, blocksize=blocksize)
    q = Q.quantize_4bit(x, blocksize=blocksize)
    assert torch.equal(q.packed, packed.reshape(-1)) and torch.equal(q.absmax, state.absmax)


def test_odd_count_padding_uses_the_code_of_zero():
    for quant_type in ("nf4", "fp4"):
        q = Q.quantize_4bit(torch.ones(5), quant_type)
        zero_code = int(Q.nearest_codes(torch.zeros(1), Q.TABLES[quant_type]))
        assert int(q.packed[-1] & 0xF) == zero_code
    assert int(Q.quantize_4bit(torch.ones(5)).packed[-1] & 0xF) == 7  # NF4's zero


def test_reference_errors_on_randn():
    """bitsandbytes' published numbers for randn(1024, 1024), blocksize 64."""
    x = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(0))
    nf4 = Q.error_metrics(x, Q.dequantize_4bit(Q.quantize_4bit(x, "nf4")))
    fp4 = Q.error_metrics(x, Q.dequantize_4bit(Q.quantize_4bit(x, "fp4")))
    int4 = Q.error_metrics(x, Q.dequantize_4bit(Q.quantize_4bit(x, "int4")))
    assert nf4["mae"] == pytest.approx(0.0728, abs=0.001)
    assert nf4["mean_rel"] == pytest.approx(0.203, abs=0.005)
    assert fp4["mae"] == pytest.approx(0.0965, abs=0.001)
    assert nf4["mae"] < int4["mae"] < fp4["mae"]


# ------------------------------------------------------------------------------- double quant


def test_double_quant_against_bitsandbytes(bnb):
    x = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(2))
    packed, state = _bnb_quantize(bnb, x, double_quant=True)
    q = Q.quantize_4bit(x, double_quant=True)
    assert q.absmax is None and q.double_quant
    assert torch.equal(q.packed, packed.reshape(-1))
    assert torch.equal(q.packed, Q.quantize_4bit(x).packed)  # 4-bit codes do not change
    assert torch.equal(q.offset, state.offset)
    assert (
        torch.equal(q.absmax2, state.state2.absmax)
        and state.state2.blocksize == q.blocksize2 == 256
    )
    differ = q.absmax_codes != state.absmax
    assert differ.float().mean() < 0.005  # bnb's CPU lookup table: ≈ 0.2 % differ
    exact = Q.quantize_4bit(x).absmax
    ours = Q.dequantize_absmax(q)
    theirs = bnb.dequantize_blockwise(state.absmax, state.state2) + state.offset
    bound = Q.max_half_gap(Q.dynamic_map()) * q.absmax2.repeat_interleave(256)[: exact.numel()]
    assert torch.all((ours - exact).abs() <= bound * (1 + 1e-5) + 1e-7)
    assert torch.all((theirs - exact).abs() <= bound * 1.01 + 1e-7)  # same bound, within 1 %
    # with bnb's own 8-bit codes our dequantization equals bnb's to the bit
    q.absmax_codes = state.absmax.clone()
    assert torch.equal(Q.dequantize_absmax(q), theirs)
    assert torch.equal(Q.dequantize_4bit(q), bnb.dequantize_4bit(packed, state))


def test_bits_per_parameter_from_stored_bytes():
    x = torch.randn(512, 512)
    plain, dq = Q.quantize_4bit(x), Q.quantize_4bit(x, double_quant=True)
    assert Q.bits_per_parameter(plain) == 4.5
    assert plain.nbytes == 512 * 512 // 2 + 512 * 512 // 64 * 4
    assert Q.bits_per_parameter(dq) == pytest.approx(4.127, abs=5e-4)
    assert Q.constants_bits(64) == 0.5
    assert Q.constants_bits(64, double_quant=True) == pytest.approx(0.126953, abs=1e-6)
    assert Q.blocksize_tradeoff(x, 64)[1] == 0.5


def test_all_zero_blocks_dequantize_to_zero():
    for double_quant in (False, True):
        for shape in [(128,), (100,), (3,)]:
            q = Q.quantize_4bit(torch.zeros(shape), double_quant=double_quant)
            out = Q.dequantize_4bit(q)
            assert torch.equal(out, torch.zeros(shape)), (shape, double_quant)
    x = torch.randn(256)
    x[64:128] = 0
    out = Q.dequantize_4bit(Q.quantize_4bit(x))
    assert torch.equal(out[64:128], torch.zeros(64)) and torch.isfinite(out).all()


def test_dequantize_dtype():
    q = Q.quantize_4bit(torch.randn(8, 64, dtype=torch.bfloat16))
    assert Q.dequantize_4bit(q).dtype == torch.bfloat16
    assert Q.dequantize_4bit(q, torch.float32).dtype == torch.float32


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "x, kwargs, error, words",
    [
        (torch.arange(64), {}, TypeError, "int64"),
        (torch.ones(64, dtype=torch.float64), {}, TypeError, "float64"),
        (torch.ones(64, dtype=torch.bool), {}, TypeError, "bool"),
        ([1.0, 2.0], {}, TypeError, "list"),
        (torch.ones(64), {"blocksize": 0}, ValueError, "power of two"),
        (torch.ones(64), {"blocksize": 48}, ValueError, "48"),
        (torch.ones(64), {"blocksize": -64}, ValueError, "-64"),
        (torch.ones(64), {"blocksize": 64.0}, TypeError, "64.0"),
        (torch.ones(64), {"blocksize": True}, TypeError, "True"),
        (torch.ones(0), {}, ValueError, "empty"),
        (torch.ones(3, 0), {}, ValueError, "empty"),
        (torch.ones(64), {"quant_type": "nf5"}, ValueError, "nf5"),
        (torch.ones(64), {"quant_type": "NF4"}, ValueError, "nf4"),
    ],
)
def test_bad_input(x, kwargs, error, words):
    with pytest.raises(error, match=words):
        Q.quantize_4bit(x, **kwargs)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_names_the_index(bad):
    x = torch.randn(4, 100)
    x[2, 37] = bad
    with pytest.raises(ValueError, match=r"index \(2, 37\)"):
        Q.quantize_4bit(x)


def test_bad_dequantize_arguments():
    q = Q.quantize_4bit(torch.randn(64))
    with pytest.raises(TypeError, match="Quantized4bit"):
        Q.dequantize_4bit(torch.randn(64))
    with pytest.raises(TypeError, match="int8"):
        Q.dequantize_4bit(q, torch.int8)
    with pytest.raises(ValueError, match="even"):
        Q.pack_nibbles(torch.zeros(3, dtype=torch.uint8))


# ------------------------------------------------------------------------------- helpers


def test_int_roundtrip_error_bound():
    x = torch.randn(1000)
    for bits in (4, 8):
        levels = 2 ** (bits - 1) - 1
        err = (Q.absmax_int_roundtrip(x, bits) - x).abs().max()
        assert err <= x.abs().max() / levels / 2 * (1 + 1e-5)
    blockwise = (Q.absmax_int_roundtrip(x, 4, blocksize=64) - x).abs().mean()
    assert blockwise < (Q.absmax_int_roundtrip(x, 4) - x).abs().mean()


def test_code_usage_counts_every_value():
    q = Q.quantize_4bit(torch.randn(1001))
    counts = Q.code_usage(q)
    assert counts.shape == (16,) and counts.sum() == 1001


def test_quantize_model_linears(tiny_cfg):
    from lorakit.model import GPT

    model = GPT(tiny_cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = Q.quantize_model_linears(model, "nf4", 64)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # the original is untouched
    qstate = quantized.state_dict()
    w = "blocks.0.attn.q_proj.weight"
    assert not torch.equal(qstate[w], before[w])
    expected = Q.dequantize_4bit(Q.quantize_4bit(before[w]))
    assert torch.equal(qstate[w], expected)
    assert torch.equal(qstate["lm_head.weight"], before["lm_head.weight"])
    assert torch.equal(qstate["tok_emb.weight"], before["tok_emb.weight"])
    with pytest.raises(ValueError, match="quant_type"):
        Q.quantize_model_linears(model, "int3")


def test_torchao_dialect_is_close_not_equal():
    nf4_tensor = pytest.importorskip("torchao.quantization.quantize_.workflows.nf4.nf4_tensor")
    x = torch.randn(128, 128, generator=torch.Generator().manual_seed(3), dtype=torch.bfloat16)
    theirs = nf4_tensor.to_nf4(x, 64, 256).get_original_weight().float()
    ours = Q.dequantize_4bit(Q.quantize_4bit(x, double_quant=True)).float()
    absmax = x.float().abs().max()
    assert (ours - theirs).abs().mean() < 0.01 * absmax
    assert math.isclose(
        (ours - x.float()).abs().mean().item(),
        (theirs - x.float()).abs().mean().item(),
        rel_tol=0.05,
    )


def test_bench_smoke(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "bench_quant.py"
    spec = importlib.util.spec_from_file_location("bench_quant", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(["--smoke"])
    assert {r["name"] for r in rows} >= {"lorakit"}
    assert all(r["total"] > 0 for r in rows)
    assert "÷ bnb" in capsys.readouterr().out
