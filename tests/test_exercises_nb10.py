"""Every worked solution of notebook 10 passes its checker; typical wrong answers are rejected."""

import copy

import pytest
from solutions import load_solutions

from lorakit import distributed as D
from lorakit.exercises import nb10
from lorakit.memory import PAPER_DTYPES, estimate_memory

solutions = load_solutions("nb10")


@pytest.fixture(scope="module")
def three_ranks():
    return solutions.solve_ex_10_4()


@pytest.mark.parametrize("m", [1, 2, 3])
def test_solution_passes(m, capsys):
    answer = getattr(solutions, f"solve_ex_10_{m}")()
    assert getattr(nb10, f"check_ex_10_{m}")(answer) is True
    assert "Correct" in capsys.readouterr().out


def test_experiment_solution_passes(three_ranks, capsys):
    assert three_ranks["world_size"] == 3
    assert nb10.check_ex_10_4(three_ranks) is True
    assert "padding" in capsys.readouterr().out


_one = estimate_memory("70B", "qlora", r=64, batch_size=1, seq_len=2048, **PAPER_DTYPES)
_four = D.fsdp_qlora_memory("70B", 4, False, batch_size=1, seq_len=2048)
_off = D.fsdp_qlora_memory("70B", 4, True, batch_size=1, seq_len=2048)
WRONG = {
    1: [
        None,
        "20",
        True,
        _one["total"],
        _one["total"] / 4,
        _four["total"] - _four["activations"],
        _four["total"] - _four["gathered"],
        _four["total"] - _four["root"] + _four["root"] / 4,
    ],
    2: [
        None,
        3.0,
        (1.0,),
        (_off["cpu"], _off["total"]),
        (_off["total"], _off["cpu"] / 4),
        (_four["total"], _off["cpu"]),
        ("a", "b"),
    ],
    3: [None, "76", 38.0, 152.0, 2.0 * 140],
}


def test_the_root_gathered_twice_is_refused(capsys):
    """Issue 27: the root gathered twice is only 1.4 % above the answer; 2 % used to accept it."""
    from lorakit.memory import lora_parameter_count, parameter_counts, quantized_bits_per_parameter

    counts = parameter_counts("70B")
    layers = counts["linear"] * quantized_bits_per_parameter() / 8 + 2 * lora_parameter_count(
        "70B", 64
    )
    root = 2 * counts["other"]
    right = solutions.solve_ex_10_3()
    for wrong in (
        2 * (layers + root) / 1e9,
        (layers + root) / 1e9,
        (2 * (2 * counts["linear"] + 2 * lora_parameter_count("70B", 64)) + root) / 1e9,
    ):
        assert nb10.check_ex_10_3(wrong) is False, wrong
    assert nb10.check_ex_10_3(right * 1.004) is True, "a rounded right answer still passes"
    assert "root is gathered once" in capsys.readouterr().out


def test_offload_solution_is_worked_not_looked_up():
    gpu, cpu = solutions.solve_ex_10_2()
    assert gpu == pytest.approx(_off["total"], rel=1e-9) and cpu == pytest.approx(
        _off["cpu"], rel=1e-9
    )


@pytest.mark.parametrize("m", sorted(WRONG))
def test_wrong_answers_are_rejected_without_raising(m, capsys):
    for wrong in WRONG[m]:
        assert getattr(nb10, f"check_ex_10_{m}")(wrong) is False, wrong
    assert "Not yet" in capsys.readouterr().out


def test_wrong_experiments_are_rejected(three_ranks, capsys):
    two = copy.deepcopy(three_ranks)
    two["world_size"], two["rank_bytes"] = 2, two["rank_bytes"][:2]
    tampered = copy.deepcopy(three_ranks)
    tampered["comm_measured"]["all_gather"] += 1
    short = copy.deepcopy(three_ranks)
    short["train_bpb"] = short["train_bpb"][:-1]
    for wrong in (None, {}, [1, 2, 3], two, tampered, short):
        assert nb10.check_ex_10_4(wrong) is False
    assert "Not yet" in capsys.readouterr().out


def test_checkers_accept_numpy_and_lists(capsys):
    np = pytest.importorskip("numpy")
    assert nb10.check_ex_10_1(np.float64(solutions.solve_ex_10_1())) is True
    assert nb10.check_ex_10_2(list(solutions.solve_ex_10_2())) is True
    assert nb10.check_ex_10_2(np.array(solutions.solve_ex_10_2())) is True
