"""Every generated title and verdict follows the numbers: each outcome it can name is produced."""

from lorakit import claims


def test_forgetting_verdict_has_three_outcomes():
    assert claims.forgetting_verdict(0.5, 1.0) == "agrees"
    assert claims.forgetting_verdict(1.03, 1.04).startswith("no, the same line")
    opposite = claims.forgetting_verdict(1.38, 0.52)
    assert opposite.startswith("no, the opposite") and "1.38" in opposite and "0.52" in opposite


def test_forgetting_title_follows_the_verdict():
    assert claims.forgetting_title(0.5, 1.0).startswith("LoRA forgets less")
    assert claims.forgetting_title(1.03, 1.04).startswith("LoRA and full fine-tuning trade")
    assert claims.forgetting_title(1.38, 0.52).startswith("LoRA forgets more")


def test_lr_ratio_title_states_the_measured_ratio():
    assert "10×, 10×" not in claims.lr_ratio_title({1: 10.0, 16: 10.0})
    assert claims.lr_ratio_title({1: 10.0, 16: 10.0}).endswith("(~10×, as published)")
    one = claims.lr_ratio_title({1: 1.0, 4: 1.0})
    assert "only 1×" in one and "as published" not in one
    wide = claims.lr_ratio_title({1: 1.0, 16: 10.0})
    assert "1–10×" in wide and "as published" not in wide


def test_targets_title_names_the_winner():
    spread = claims.targets_title({"q": 0.2, "MLP": 0.7, "all linear": 0.77}, 4608)
    assert "spreading LoRA over all linear layers wins (77 %" in spread.replace("77%", "77 %")
    mlp = claims.targets_title({"q": 0.2, "MLP": 0.44, "all linear": 0.30}, 4608)
    assert "spreading" not in mlp and mlp.index("MLP") < mlp.index("all linear 30%")


def test_stall_title_reads_the_exact_zero():
    assert "stays exactly 0" in claims.stall_title(12.5, 0.0)
    assert claims.stall_title(0.0, 0.0).startswith("Neither")
    assert claims.stall_title(12.5, 3.0).startswith("Both runs moved")


def test_improvement_title_says_when_a_drop_is_small_or_missing():
    assert (
        claims.improvement_title({"a": 0.5, "b": 0.6}, 6.0)
        == "Every method lowers the held-out loss"
    )
    small = claims.improvement_title({"a": 0.5, "b": 0.01}, 6.0)
    assert small.startswith("Every method") and "b by under 1 %" in small
    some = claims.improvement_title({"a": 0.5, "b": -0.1}, 6.0)
    assert some.startswith("a lowers the held-out loss; b not")
    assert claims.improvement_title({"a": -0.1}, 6.0) == "No method lowers the held-out loss"
