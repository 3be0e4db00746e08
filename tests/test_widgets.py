"""lorakit.widgets: the pure functions behind the sliders, and the shells' wiring."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lorakit import lowrank, widgets  # noqa: E402
from lorakit.lora import LoRAConfig  # noqa: E402


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- rank r


def test_rank_reconstruction_numbers():
    W = randn(40, 24)
    rec = widgets.rank_reconstruction(W, 5)
    assert rec["W_r"].shape == W.shape
    assert torch.allclose(rec["W_r"], lowrank.truncate(W, 5), atol=1e-5)
    assert rec["rel_error"] == pytest.approx(
        lowrank.truncation_error(W, 5) / float(W.norm()), rel=1e-5
    )
    assert rec["energy"] == pytest.approx(lowrank.energy(W, 5), rel=1e-9)
    assert (rec["params_full"], rec["params_lowrank"]) == (960, 320)


def test_rank_readout_contains_the_error_and_changes_with_r():
    W = randn(30, 20)
    text3, text10 = widgets.rank_readout(W, 3), widgets.rank_readout(W, 10)
    assert f"{widgets.rank_reconstruction(W, 3)['rel_error']:.4f}" in text3
    assert "rank r = 3" in text3 and text3 != text10


def test_rank_figure_is_a_figure_with_three_panels_and_a_colorbar():
    fig = widgets.rank_figure(randn(16, 64), 4, "a weight")
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert isinstance(fig, plt.Figure) and len(panels) == 3 and len(fig.axes) == 4, (
        "3 panels + 1 colorbar"
    )
    title = fig._suptitle.get_text()
    assert "rank 4 keeps" in title and "1 − relative error²" in title, title
    plt.close(fig)
    img = torch.rand(20, 30)  # non-negative: drawn as a grey image
    plt.close(widgets.rank_figure(img, 20))


def test_rank_bad_input():
    with pytest.raises(ValueError, match=r"min\(m, n\) = 4 for a 5×4 matrix.*got 5"):
        widgets.rank_reconstruction(randn(5, 4), 5)
    with pytest.raises(ValueError, match="2-D"):
        widgets.rank_readout(torch.zeros(4), 1)


def test_rank_slider_wiring_updates_readout_and_figure():
    W, W2 = randn(24, 16), randn(8, 12, seed=1)
    box = widgets.rank_slider({"random": W, "small": W2}, r=4)
    assert box.slider.description == "rank r" and box.slider.continuous_update is False
    assert "lorakit-rank-readout" in box.readout._dom_classes
    assert "lorakit-rank-figure" in box.out._dom_classes
    before = box.readout.value
    assert f"{widgets.rank_reconstruction(W, 4)['rel_error']:.4f}" in before
    box.slider.value = 9
    assert box.readout.value != before and "rank r = 9" in box.readout.value
    box.dropdown.value = "small"
    assert box.slider.max == 8 and "rank r = 8" in box.readout.value  # clamped to min(m, n)
    assert plt.get_fignums() == [], "the shell closes the figures it draws"


def test_rank_slider_rejects_bad_matrices():
    with pytest.raises(TypeError, match="matrices"):
        widgets.rank_slider([randn(3, 3)])
    with pytest.raises(ValueError, match="2-D"):
        widgets.rank_slider({"bad": torch.zeros(3)})


# ---------------------------------------------------------------- alpha


def fake_run(alpha, r=4, rslora=False):
    """A run result with the shape short_lora_run returns (no training)."""
    scaling = LoRAConfig(r=r, alpha=alpha, rslora=rslora).scaling
    return dict(
        r=r,
        alpha=alpha,
        rslora=rslora,
        steps=3,
        seed=0,
        scaling=scaling,
        val_bpb=3.0 - 0.1 * alpha**0.5,
        train_bpb=[4.0, 3.5, 3.0],
        dW_norm=0.01 * scaling,
        A={},
        seconds=0.0,
    )


def test_alpha_readout_and_figure():
    runs = {a: fake_run(a) for a in (1, 4, 16)}
    text = widgets.alpha_readout(runs, 4)
    assert "α = 4" in text and "scaling α/r = 1" in text and f"{runs[4]['val_bpb']:.4f}" in text
    fig = widgets.alpha_figure(runs, 16, base_bpb=3.2)
    assert len(fig.axes) == 3  # two panels, one with a twin axis
    plt.close(fig)


def test_alpha_figure_keeps_a_diverged_alpha_from_flattening_the_rest():
    runs = {a: fake_run(a) for a in (1, 4, 16, 64)}
    runs[64]["val_bpb"] = 7.5  # diverged: far above the frozen base
    fig = widgets.alpha_figure(runs, 16, base_bpb=3.2)
    right = fig.axes[1]
    lo, hi = right.get_ylim()
    others = [runs[a]["val_bpb"] for a in (1, 4, 16)]
    assert hi < 7.5 and hi - lo < 2 * (max(others) - min(others)) + 0.2, (lo, hi)
    assert any("off scale" in t.get_text() for t in right.texts), "the off-scale run is labelled"
    twin = fig.axes[2]
    low, high = (math.log(v) for v in twin.get_ylim())
    top_norm = math.log(max(r["dW_norm"] for r in runs.values()))
    assert (top_norm - low) / (high - low) < 0.8, (
        "the largest ‖ΔW‖ stays clear of the off-scale marker"
    )
    plt.close(fig)
    runs = {a: fake_run(a) for a in (1, 4, 16)}
    with pytest.raises(ValueError, match="alpha must be one of"):
        widgets.alpha_readout(runs, 2)
    with pytest.raises(ValueError, match="runs is empty"):
        widgets.alpha_figure({}, 2)


def test_alpha_slider_caches_runs():
    calls = []

    def run(a):
        calls.append(a)
        return fake_run(a)

    box = widgets.alpha_slider(run, [1, 4, 16], alpha=4)
    assert box.slider.continuous_update is False and box.slider.description == "alpha α"
    assert calls == [4]
    box.slider.value = 16
    box.slider.value = 4
    assert calls == [4, 16], "a value already run is not trained again"
    assert "α = 4" in box.readout.value
    pre = {1: fake_run(1)}
    box = widgets.alpha_slider(run, [1, 4], alpha=1, cache=pre)
    assert calls == [4, 16], "a pre-filled cache makes the slider instant"
    with pytest.raises(ValueError, match="alpha must be one of"):
        widgets.alpha_slider(run, [1, 4], alpha=2)
    with pytest.raises(ValueError, match="alphas is empty"):
        widgets.alpha_slider(run, [])
    with pytest.raises(ValueError, match="every alpha must be"):
        widgets.alpha_slider(run, [1, 0])


def test_rank_slider_draws_once_per_change(monkeypatch):
    calls = []
    real = widgets.rank_figure
    monkeypatch.setattr(widgets, "rank_figure", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    box = widgets.rank_slider({"big": randn(20, 20), "small": randn(6, 5, seed=1)}, r=12)
    box.dropdown.value = "small"  # clamps r from 12 to 5: one redraw, not two
    assert calls == [12, 5]
    assert plt.get_fignums() == []
