"""Sliders for rank r and for α (notebook 03): thin ipywidgets shells over pure functions.

Every slider here is two layers, so that what a learner sees is also what the tests check:

- **pure functions** that turn numbers into a figure and a one-line readout
  (``rank_reconstruction``, ``rank_figure``/``rank_readout``; ``alpha_figure``/``alpha_readout``
  over the results of ``lorakit.train.short_lora_run``);
- a **shell** (``rank_slider``, ``alpha_slider``) that only wires an ipywidgets control to
  those functions: a slider, an HTML readout and an ``Output`` holding the figure.

Training runs are slow on a laptop, so ``alpha_slider`` caches one run per α value and its
slider uses ``continuous_update=False`` (it recomputes when the handle is released).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import torch

from . import lowrank
from .validate import number

# ---------------------------------------------------------------- rank r: pure functions


def rank_reconstruction(W: torch.Tensor, r: int) -> dict:  # notebook 03 §1
    """The best rank-r approximation of ``W`` and what it costs and loses.

    Returns ``W_r`` (float32), ``rel_error`` = ‖W − W_r‖_F/‖W‖_F, ``energy`` (fraction of
    ‖W‖_F² kept), ``params_full`` = m·n and ``params_lowrank`` = r(m+n).
    """
    W_r = lowrank.truncate(W, r)  # validates W and r
    m, n = W.shape
    s = lowrank.singular_values(W)
    norm = float(s.square().sum().sqrt())
    rel = lowrank.tail_error(s, r) / norm if norm > 0 else 0.0
    return dict(
        r=r,
        W_r=W_r.float(),
        rel_error=rel,
        energy=1.0 - rel**2,
        params_full=m * n,
        params_lowrank=r * (m + n),
    )


def rank_readout(W: torch.Tensor, r: int) -> str:  # notebook 03 §2
    """The slider's one-line readout; it always contains the relative error as a number."""
    rec = rank_reconstruction(W, r)
    return (
        f"rank r = {r}: relative error ‖W − W_r‖_F/‖W‖_F = {rec['rel_error']:.4f}, "
        f"energy kept = {100 * rec['energy']:.1f} %, "
        f"numbers stored r(m+n) = {rec['params_lowrank']:,} of m·n = {rec['params_full']:,}"
    )


def rank_figure(W: torch.Tensor, r: int, name: str = "W") -> plt.Figure:  # notebook 03 §1–§2
    """Three panels: ``W``, its best rank-r approximation (same colour scale), and the relative
    error against r with the chosen r marked. Returns the figure (the caller shows it)."""
    rec = rank_reconstruction(W, r)
    errors = lowrank.relative_errors(W)
    Wf = W.detach().float().cpu()
    if Wf.dim() == 2 and Wf.shape[0] > Wf.shape[1] * 3:
        Wf, W_r = Wf.T, rec["W_r"].T  # draw tall matrices lying down
    else:
        W_r = rec["W_r"]
    lim = float(Wf.abs().max()) or 1.0
    grey = Wf.min() >= 0  # an image (non-negative): grey scale; a weight: diverging colours
    cmap, vmin = ("gray", 0.0) if grey else ("RdBu_r", -lim)
    fig, axes = plt.subplots(
        1, 3, figsize=(13, 4), gridspec_kw=dict(width_ratios=[1, 1, 1.1]), layout="constrained"
    )
    for ax, M, title in (
        (axes[0], Wf, f"{name} ({W.shape[0]}×{W.shape[1]})"),
        (axes[1], W_r, f"best rank-{r} approximation"),
    ):
        im = ax.imshow(
            M.numpy(), cmap=cmap, vmin=vmin, vmax=lim, aspect="auto", interpolation="nearest"
        )
        ax.set_title(title)
        ax.set_xlabel("column")
        ax.set_ylabel("row")
    fig.colorbar(
        im,
        ax=axes[:2],
        location="bottom",
        label="entry value (same colour scale in both)",
        fraction=0.05,
        pad=0.02,
        shrink=0.6,
    )
    ranks = torch.arange(1, len(errors) + 1)
    axes[2].plot(ranks.numpy(), errors.numpy(), color="C0")
    axes[2].plot([r], [rec["rel_error"]], "o", color="C3", label=f"r = {r}: {rec['rel_error']:.3f}")
    axes[2].set_xscale("log")
    axes[2].set_ylim(0, 1.02)
    axes[2].set_xlabel("rank r (log scale)")
    axes[2].set_ylabel("relative error ‖W − W_r‖_F / ‖W‖_F")
    axes[2].legend(loc="upper right")
    axes[2].set_title("error = tail of the singular values")
    fig.suptitle(
        f"rank {r} keeps {100 * rec['energy']:.1f} % of {name}'s energy (= 1 − relative error² "
        f"= 1 − {rec['rel_error']:.3f}²) with {rec['params_lowrank'] / rec['params_full']:.1%} of its numbers"
    )
    return fig


# ---------------------------------------------------------------- α: pure functions


def _check_runs(runs: dict, alpha) -> dict:
    if not runs:
        raise ValueError("runs is empty: run at least one α first")
    if alpha not in runs:
        raise ValueError(
            f"alpha must be one of the α values that were run, {sorted(runs)}, got {alpha!r}"
        )
    return runs[alpha]


def alpha_readout(runs: dict, alpha: float) -> str:  # notebook 03 §3
    """One line for the α slider: the scaling, the update's size and the loss it reached."""
    run = _check_runs(runs, alpha)
    kind = "α/√r" if run["rslora"] else "α/r"
    return (
        f"α = {alpha:g}, r = {run['r']}: scaling {kind} = {run['scaling']:.4g}, "
        f"‖ΔW‖_F = {run['dW_norm']:.4g}, val loss = {run['val_bpb']:.4f} bits/byte "
        f"after {run['steps']} steps"
    )


def alpha_figure(
    runs: dict, alpha: float, base_bpb: float | None = None
) -> plt.Figure:  # notebook 03 §3
    """Two panels: the training curve at the chosen α (others faint), and the final validation
    loss and ‖ΔW‖ against α (log scale), the chosen α marked."""
    run = _check_runs(runs, alpha)
    alphas = sorted(runs)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    for a in alphas:
        chosen = a == alpha
        left.plot(
            runs[a]["train_bpb"],
            color="C3" if chosen else "0.8",
            lw=2 if chosen else 1,
            label=f"α = {a:g}" if chosen else None,
            zorder=3 if chosen else 1,
        )
    if base_bpb is not None:
        left.axhline(base_bpb, color="k", ls="--", lw=1, label=f"frozen base {base_bpb:.3f}")
    left.set_xlabel("step")
    left.set_ylabel("train loss (bits/byte)")
    left.set_title("training curve (grey: the other α values)")
    left.legend(loc="upper right")
    vals = [runs[a]["val_bpb"] for a in alphas]
    # An α that diverged must not flatten the others: the axis spans the useful runs (those that
    # end below the frozen base, or all but the worst), and an off-scale run is drawn on the top
    # edge with its value written beside it.
    useful = [v for v in vals if base_bpb is None or v <= base_bpb] or vals
    if len(useful) == len(vals) and len(vals) > 2:
        useful = sorted(vals)[:-1]
    lo, hi = min(useful), max(useful)
    pad = 0.15 * (hi - lo) if hi > lo else 0.05
    top = hi + pad
    shown = [min(v, top) for v in vals]
    right.plot(alphas, shown, "o-", color="C0", label="val loss")
    for a, v in zip(alphas, vals):
        if v > top:
            right.plot([a], [top], "^", color="C3", ms=9, clip_on=False)
            right.annotate(
                f"{v:.2f} (off scale)",
                (a, top),
                textcoords="offset points",
                xytext=(-4, -14),
                ha="right",
                fontsize=8,
                color="C3",
            )
    right.set_ylim(lo - pad, top)
    right.plot([alpha], [min(run["val_bpb"], top)], "o", ms=12, mfc="none", mec="C3", mew=2)
    right.set_xscale("log", base=2)
    right.set_xticks(alphas, [f"{a:g}" for a in alphas])
    right.set_xlabel("α (log scale)")
    right.set_ylabel("val loss after training (bits/byte)", color="C0")
    twin = right.twinx()
    norms = [runs[a]["dW_norm"] for a in alphas]
    twin.plot(alphas, norms, "s:", color="C2")
    twin.set_yscale("log")
    # the top fifth is left to the off-scale markers: the largest ‖ΔW‖ (at the largest α, where a
    # run diverges) sits at 3/4 of the height instead of on the marker
    low = min(norms) / 1.5
    twin.set_ylim(low, low * (max(norms) / low) ** (1 / 0.75))
    twin.set_ylabel("mean ‖ΔW‖_F (log scale)", color="C2")
    right.set_title("larger α, larger ΔW; the best α lies in between")
    fig.suptitle(
        f"α = {alpha:g} (scaling {run['scaling']:.3g}): val loss {run['val_bpb']:.3f} bits/byte"
    )
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- the ipywidgets shells


def _show(out, make_figure: Callable[[], plt.Figure]) -> None:
    """Draw a fresh figure into an Output widget (and close it, so it is not drawn twice)."""
    from IPython.display import display

    with out:
        out.clear_output(wait=True)
        fig = make_figure()
        display(fig)
        plt.close(fig)


def rank_slider(matrices, r: int = 8):  # notebook 03 §2
    """An ``IntSlider`` "rank r" (+ a "matrix" dropdown when given several) over
    ``rank_figure``/``rank_readout``.

    ``matrices``: one 2-D tensor or ``{name: tensor}``. The readout is an ``HTML`` widget with
    CSS class ``lorakit-rank-readout``; the figure lives in an ``Output`` widget with class
    ``lorakit-rank-figure``. Returns the ``VBox``; its ``.slider``, ``.readout``, ``.out``
    (and ``.dropdown``) attributes give tests and notebooks direct access.
    """
    import ipywidgets as widgets

    if isinstance(matrices, torch.Tensor):
        matrices = {"W": matrices}
    if not isinstance(matrices, dict) or not matrices:
        raise TypeError("matrices must be a 2-D tensor or a non-empty {name: tensor} dict")
    for W in matrices.values():
        lowrank.singular_values(W)  # validates: a non-empty 2-D tensor
    first = next(iter(matrices))
    top = min(matrices[first].shape)
    slider = widgets.IntSlider(
        value=max(1, min(r, top)),
        min=1,
        max=top,
        step=1,
        description="rank r",
        continuous_update=False,
        style={"description_width": "initial"},
        layout=widgets.Layout(width="500px"),
    )
    dropdown = widgets.Dropdown(options=list(matrices), value=first, description="matrix")
    readout = widgets.HTML()
    readout.add_class("lorakit-rank-readout")
    out = widgets.Output()
    out.add_class("lorakit-rank-figure")

    busy = []  # set while redrawing: clamping slider.max must not trigger a second redraw

    def update(_change=None):
        if busy:
            return
        busy.append(True)
        try:
            name = dropdown.value
            W = matrices[name]
            slider.max = min(W.shape)  # may clamp slider.value (a new matrix can be smaller)
            readout.value = f"<b>{rank_readout(W, slider.value)}</b>"
            _show(out, lambda: rank_figure(W, slider.value, name))
        finally:
            busy.clear()

    slider.observe(update, names="value")
    dropdown.observe(update, names="value")
    controls = [dropdown, slider] if len(matrices) > 1 else [slider]
    box = widgets.VBox([widgets.HBox(controls), readout, out])
    box.slider, box.readout, box.out, box.dropdown = slider, readout, out, dropdown
    update()
    return box


def alpha_slider(
    run: Callable[[float], dict],
    alphas: Sequence[float],
    alpha: float | None = None,  # notebook 03 §3
    base_bpb: float | None = None,
    cache: dict | None = None,
):
    """A ``SelectionSlider`` "alpha α" over a cached ``run(alpha) -> result`` (a ``short_lora_run``).

    Each α is trained once and kept in ``cache`` (pass the dict you filled beforehand to make
    every position instant). ``continuous_update=False``: nothing trains while dragging.
    Readout class ``lorakit-alpha-readout``, figure ``Output`` class ``lorakit-alpha-figure``.
    """
    import ipywidgets as widgets

    alphas = [number(a, "every alpha", low=0, low_open=True) for a in alphas]
    if not alphas:
        raise ValueError("alphas is empty: give at least one α")
    cache = {} if cache is None else cache
    value = alphas[len(alphas) // 2] if alpha is None else alpha
    if value not in alphas:
        raise ValueError(f"alpha must be one of alphas {alphas}, got {value!r}")
    slider = widgets.SelectionSlider(
        options=alphas,
        value=value,
        description="alpha α",
        continuous_update=False,
        layout=widgets.Layout(width="500px"),
    )
    readout = widgets.HTML()
    readout.add_class("lorakit-alpha-readout")
    out = widgets.Output()
    out.add_class("lorakit-alpha-figure")

    def update(_change=None):
        a = slider.value
        if a not in cache:
            readout.value = f"training with α = {a:g} …"
            cache[a] = run(a)
        readout.value = f"<b>{alpha_readout(cache, a)}</b>"
        _show(out, lambda: alpha_figure(cache, a, base_bpb))

    slider.observe(update, names="value")
    box = widgets.VBox([slider, readout, out])
    box.slider, box.readout, box.out, box.cache = slider, readout, out, cache
    update()
    return box
