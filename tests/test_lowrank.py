"""lorakit.lowrank: Eckart–Young, parameter arithmetic, ΔW measurement, subspace similarity."""

import math

import pytest
import torch
import torch.nn as nn

from lorakit import lowrank as lr


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------- truncation and Eckart–Young


@pytest.mark.parametrize("shape", [(40, 25), (25, 40), (16, 16)])
@pytest.mark.parametrize("r", [1, 3, 16])
def test_truncate_has_rank_r_and_error_is_the_tail(shape, r):
    W = randn(*shape)
    W_r = lr.truncate(W, r)
    assert W_r.shape == W.shape and W_r.dtype == W.dtype
    assert torch.linalg.matrix_rank(W_r) == min(r, *shape)
    s = lr.singular_values(W)
    for norm in ("fro", "spectral"):
        assert lr.truncation_error(W, r, norm) == pytest.approx(
            lr.tail_error(s, r, norm), rel=1e-9, abs=1e-9
        )
    assert lr.tail_error(s, r, "spectral") == pytest.approx(float(s[r]) if r < len(s) else 0.0)


def test_full_rank_truncation_is_exact():
    W = randn(12, 9)
    assert torch.allclose(lr.truncate(W, 9), W, atol=1e-10)
    assert lr.tail_error(lr.singular_values(W), 9) == 0.0
    assert lr.energy(W, 9) == pytest.approx(1.0)


def test_eckart_young_beats_other_rank_r_matrices():
    """No random rank-r matrix (nor a least-squares fit on random directions) does better."""
    W, r = randn(30, 20), 4
    best = lr.truncation_error(W, r)
    for seed in range(20):
        Q, _ = torch.linalg.qr(randn(30, r, seed=seed + 1))
        other = Q @ (Q.T @ W)  # best matrix with column space span(Q): still rank r
        assert torch.linalg.matrix_norm(W - other) >= best - 1e-9


def test_low_rank_factors_shapes_and_product():
    W = randn(20, 12, dtype=torch.float32)
    A, B = lr.low_rank_factors(W, 5)
    assert A.shape == (20, 5) and B.shape == (5, 12) and A.dtype == torch.float32
    assert torch.allclose(A @ B, lr.truncate(W, 5), atol=1e-5)


def test_exactly_low_rank_matrix_is_recovered():
    A, B = randn(50, 3), randn(3, 40, seed=1)
    W = A @ B
    assert lr.energy(W, 3) == pytest.approx(1.0, abs=1e-12)
    assert lr.truncation_error(W, 3) < 1e-9 * torch.linalg.matrix_norm(W)


def test_relative_errors_and_energy_agree():
    W = randn(30, 18)
    rel = lr.relative_errors(W)
    assert rel.shape == (18,) and rel[-1] == 0 and torch.all(rel[1:] <= rel[:-1] + 1e-12)
    fro = torch.linalg.matrix_norm(W)
    for r in (1, 5, 17):
        assert float(rel[r - 1]) == pytest.approx(lr.truncation_error(W, r) / float(fro), rel=1e-9)
        assert lr.energy(W, r) == pytest.approx(1 - float(rel[r - 1]) ** 2, abs=1e-12)
        assert lr.energy(lr.singular_values(W), r) == pytest.approx(lr.energy(W, r))


def test_random_like_matches_shape_and_norm_and_is_seeded():
    W = randn(32, 64, dtype=torch.float32) * 3
    R = lr.random_like(W, seed=1)
    assert R.shape == W.shape and R.dtype == W.dtype
    assert torch.linalg.matrix_norm(R) == pytest.approx(
        float(torch.linalg.matrix_norm(W)), rel=1e-5
    )
    assert torch.equal(R, lr.random_like(W, seed=1)) and not torch.equal(
        R, lr.random_like(W, seed=2)
    )
    # a low-rank matrix concentrates energy; its random twin does not
    L = randn(32, 2) @ randn(2, 64, seed=3)
    assert lr.energy(L, 2) > 0.999 > 0.3 > lr.energy(lr.random_like(L), 2)


# ---------------------------------------------------------------- parameter counts


def test_parameter_counts():
    assert lr.full_params(4096, 4096) == 16_777_216
    assert lr.lora_params(4096, 4096, 8) == 65_536
    assert lr.lora_params(10, 3, 3) == 39


def test_gpt3_claims_by_arithmetic():
    g = lr.gpt3_lora_savings(r=4)
    assert g["lora_trainable"] == 96 * 2 * 4 * (12288 + 12288) == 18_874_368
    assert 5_000 < g["ratio"] < 15_000, "the paper's '10,000x fewer trainable parameters'"
    assert g["full_checkpoint_bytes"] == pytest.approx(350e9), "350 GB in fp16"
    assert 30e6 < g["lora_checkpoint_bytes"] < 40e6, "the paper's '35 MB'"


# ---------------------------------------------------------------- ΔW of a fine-tuning


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 4)
        self.q_proj = nn.Linear(4, 6, bias=False)
        self.block = nn.Sequential(nn.Linear(6, 3), nn.ReLU())


def test_delta_weights_is_w_ft_minus_w0_in_row_vector_orientation():
    torch.manual_seed(0)
    base, tuned = Tiny(), Tiny()
    tuned.load_state_dict(base.state_dict())
    with torch.no_grad():
        tuned.q_proj.weight += 0.5
        tuned.emb.weight += 1.0  # not a Linear: not reported
    dW = lr.delta_weights(base, tuned)
    assert set(dW) == {"q_proj", "block.0"}
    assert dW["q_proj"].shape == (4, 6), "in x out, like W0 in y = x W0"
    assert torch.allclose(dW["q_proj"], torch.full((4, 6), 0.5))
    assert torch.count_nonzero(dW["block.0"]) == 0
    x = torch.randn(2, 4)
    assert torch.allclose(tuned.q_proj(x) - base.q_proj(x), x @ dW["q_proj"], atol=1e-6)


def test_delta_weights_rejects_mismatched_models():
    with pytest.raises(TypeError, match="base_model"):
        lr.delta_weights("model", Tiny())
    other = Tiny()
    other.q_proj = nn.Linear(4, 7, bias=False)
    with pytest.raises(ValueError, match="wrong shapes.*q_proj"):
        lr.delta_weights(Tiny(), other)
    other = Tiny()
    other.q_proj = nn.Identity()
    with pytest.raises(ValueError, match="not nn.Linear.*q_proj"):
        lr.delta_weights(Tiny(), other)
    with pytest.raises(ValueError, match="no nn.Linear"):
        lr.delta_weights(nn.ReLU(), nn.ReLU())


# ---------------------------------------------------------------- subspace similarity


def test_phi_identical_and_contained_subspaces_give_one():
    A = randn(64, 8)
    assert lr.subspace_similarity(A, A, 8, 8) == pytest.approx(1.0)
    # scaling and mixing columns (A @ M) keeps the column space, so phi stays 1
    M = randn(8, 8, seed=5)
    assert lr.subspace_similarity(A, A @ M, 8, 8) == pytest.approx(1.0)
    # A2 contains A's column space plus extra directions
    A2 = torch.cat([A, randn(64, 24, seed=2)], dim=1)
    assert lr.subspace_similarity(A, A2, 8, 32) == pytest.approx(1.0)


def test_phi_orthogonal_subspaces_give_zero_and_random_ones_the_baseline():
    Q, _ = torch.linalg.qr(randn(64, 16))
    assert lr.subspace_similarity(Q[:, :8], Q[:, 8:], 8, 8) == pytest.approx(0.0, abs=1e-12)
    d, i, j = 256, 4, 16
    phis = [
        lr.subspace_similarity(randn(d, i, seed=s), randn(d, j, seed=100 + s), i, j)
        for s in range(30)
    ]
    assert sum(phis) / len(phis) == pytest.approx(lr.random_subspace_similarity(d, i, j), rel=0.25)


def test_phi_grid_equals_pointwise_phi_and_is_in_unit_interval():
    A1, A2 = randn(32, 8), randn(32, 12, seed=1)
    G = lr.subspace_similarity_grid(A1, A2)
    assert G.shape == (8, 12)
    assert float(G.min()) >= 0 and float(G.max()) <= 1 + 1e-12
    for i, j in [(1, 1), (3, 7), (8, 12), (8, 2)]:
        assert float(G[i - 1, j - 1]) == pytest.approx(
            lr.subspace_similarity(A1, A2, i, j), rel=1e-10
        )
    assert lr.subspace_similarity_grid(A1, A2, 4, 5).shape == (4, 5)


def test_phi_uses_input_space_directions_of_our_in_by_r_A():
    """Our A is in x r, PEFT's lora_A.weight is r x in = A.T: phi must read A's column space."""
    A = torch.zeros(10, 2, dtype=torch.float64)
    A[0, 0] = A[1, 1] = 1.0
    A2 = torch.zeros(10, 2, dtype=torch.float64)
    A2[0, 0] = A2[2, 1] = 1.0
    assert lr.subspace_similarity(A, A2, 2, 2) == pytest.approx(0.5)
    assert lr.subspace_similarity(A, A2, 1, 1) == pytest.approx(1.0)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("r", [0, -1, 6])
def test_bad_rank_raises_value_error_naming_the_range(r):
    W = randn(8, 5)
    for fn in (lr.truncate, lr.low_rank_factors, lr.truncation_error, lr.energy):
        with pytest.raises(
            ValueError, match=r"r \(at most .*\b5\b.*\) must be an integer in 1\.\.5, got " + str(r)
        ):
            fn(W, r)
    with pytest.raises(ValueError, match="r .at most min"):
        lr.lora_params(8, 5, r)


def test_non_integer_rank_is_a_type_error():
    with pytest.raises(TypeError, match=r"r \(at most .*\) must be an int"):
        lr.truncate(randn(4, 4), 2.0)
    with pytest.raises(TypeError, match=r"r \(at most .*\) must be an int"):
        lr.truncate(randn(4, 4), True)


@pytest.mark.parametrize("bad", [torch.zeros(3), torch.zeros(2, 3, 4), torch.zeros(0, 3)])
def test_non_matrix_raises(bad):
    with pytest.raises(ValueError, match="2-D matrix|must not be empty"):
        lr.truncate(bad, 1)
    with pytest.raises(ValueError):
        lr.singular_values(bad)


def test_non_tensor_raises_type_error():
    with pytest.raises(TypeError, match="torch.Tensor"):
        lr.singular_values([[1.0, 2.0]])


def test_bad_norm_and_bad_singular_values():
    with pytest.raises(ValueError, match="norm must be"):
        lr.tail_error(torch.tensor([2.0, 1.0]), 1, "nuclear")
    with pytest.raises(ValueError, match="norm must be"):
        lr.truncation_error(randn(3, 3), 1, "max")
    with pytest.raises(ValueError, match="sorted"):
        lr.tail_error(torch.tensor([1.0, 2.0]), 1)
    with pytest.raises(ValueError, match="zero matrix"):
        lr.energy(torch.zeros(3, 3), 1)


def test_phi_bad_input():
    A1, A2 = randn(16, 4), randn(16, 8)
    with pytest.raises(
        ValueError, match=r"i \(at most the rank of A1, 4\) must be an integer in 1\.\.4, got 5"
    ):
        lr.subspace_similarity(A1, A2, 5, 1)
    with pytest.raises(
        ValueError, match=r"j \(at most the rank of A2, 8\) must be an integer in 1\.\.8, got 0"
    ):
        lr.subspace_similarity(A1, A2, 1, 0)
    with pytest.raises(ValueError, match="same input size"):
        lr.subspace_similarity(A1, randn(15, 4), 1, 1)
    with pytest.raises(ValueError, match=r"max_j .* must be an integer in 1\.\.8"):
        lr.subspace_similarity_grid(A1, A2, 4, 9)
    with pytest.raises(ValueError, match="2-D"):
        lr.subspace_similarity(torch.zeros(16), A2, 1, 1)
    with pytest.raises(TypeError, match=r"i \(at most .*\) must be an int"):
        lr.subspace_similarity(A1, A2, 1.5, 1)


def test_savings_bad_input():
    with pytest.raises(ValueError, match="total_params"):
        lr.lora_savings(0, [(4, 4)], 1)
    with pytest.raises(ValueError, match="at least one"):
        lr.lora_savings(10, [], 1)
    with pytest.raises(ValueError, match="m must be an integer >= 1"):
        lr.full_params(0, 3)
    assert math.isclose(
        lr.lora_savings(100, [(4, 4)], 1, bytes_per_param=4)["lora_checkpoint_bytes"], 32
    )


def test_integer_matrices_work_and_complex_ones_are_refused():
    W = torch.tensor([[2, 0], [0, 1], [0, 0]])
    assert lr.truncate(W, 1).dtype == torch.float64
    assert lr.tail_error(lr.singular_values(W), 1) == pytest.approx(1.0)
    with pytest.raises(TypeError, match="real matrix"):
        lr.singular_values(torch.zeros(2, 2, dtype=torch.complex64))
