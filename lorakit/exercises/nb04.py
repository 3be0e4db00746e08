"""Checkers for notebook 04's exercises (solutions: notebooks/solutions/nb04.py).

Exercises 4.1 and 4.2 are experiments: the checker cannot know the learner's measured losses in
advance, so it checks that the experiment was designed and read correctly (enough points, a wide
enough grid, the answer is what the measurements say). Each ``check_ex_4_M(answer)`` prints
right/wrong and why, returns a bool, and never raises.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from . import report


def _number(value) -> float | None:
    """A finite real number as float (ints, floats, numpy and 1-element tensors), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _pair(answer):
    if isinstance(answer, (str, bytes)) or not isinstance(answer, Sequence) or len(answer) != 2:
        return None
    return answer[0], answer[1]


def check_ex_4_1(answer) -> bool:
    """``(best_lr, {lr: val_loss})`` from a LoRA learning-rate sweep at r = 64.

    Checks: at least 3 rates spanning at least 10× (to 0.1 %), losses finite and in (0, 16)
    bits/byte, ``best_lr`` is the rate with the lowest loss (to 1e-6 relative), and it does not
    sit at the edge of the grid.
    """
    pair = _pair(answer)
    if pair is None:
        return report(False, "", f"expected a pair (best_lr, {{lr: val_loss}}), got {answer!r}")
    best, results = pair
    best = _number(best)
    if best is None or best <= 0:
        return report(False, "", f"best_lr must be a positive number, got {pair[0]!r}")
    if not isinstance(results, Mapping) or len(results) < 3:
        return report(
            False, "", "the sweep must be a dict {lr: val_loss} with at least 3 learning rates"
        )
    sweep = {}
    for lr, loss in results.items():
        lr_f, loss_f = _number(lr), _number(loss)
        if lr_f is None or lr_f <= 0 or loss_f is None or not 0 < loss_f < 16:
            return report(
                False,
                "",
                f"every entry must be a positive lr with a val loss in bits/byte (0…16); "
                f"got {lr!r}: {loss!r}",
            )
        sweep[lr_f] = loss_f
    lrs = sorted(sweep)
    if lrs[-1] / lrs[0] < 10 * (1 - 1e-3):
        return report(
            False,
            "",
            f"your rates span only {lrs[-1] / lrs[0]:.3g}×: cover at least a factor of 10 "
            "(e.g. 1e-3, 3e-3, 1e-2, 3e-2)",
        )
    argmin = min(sweep, key=sweep.get)
    if not math.isclose(best, argmin, rel_tol=1e-6):
        return report(
            False,
            "",
            f"your sweep's lowest loss is at lr {argmin:g}, not {best:g}: "
            "the best rate is the one with the lowest validation loss",
        )
    if argmin in (lrs[0], lrs[-1]):
        side = "smallest" if argmin == lrs[0] else "largest"
        return report(
            False,
            "",
            f"the best rate {argmin:g} is the {side} you tried: the optimum may lie beyond "
            "it. Extend the grid on that side and run again.",
        )
    return report(
        True,
        f"best lr at r = 64: {argmin:g} (loss {sweep[argmin]:.3f} bits/byte). Compare it with "
        "section 2's best rates at smaller r: under α/r with a fixed α it should be in the same decade.",
        "",
    )


def check_ex_4_2(answer) -> bool:
    """``(name, {name: (gain, forget)})``: the target set with the least forgetting per unit of gain.

    Checks: at least 3 target sets, every gain > 0 (a set that learned nothing has no ratio),
    and ``name`` is the set with the smallest ``forget / gain`` (ties within 1e-9 accepted).
    """
    pair = _pair(answer)
    if pair is None:
        return report(
            False, "", f"expected a pair (name, {{name: (gain, forget)}}), got {answer!r}"
        )
    name, results = pair
    if not isinstance(results, Mapping) or len(results) < 3:
        return report(False, "", "measure at least 3 target sets: a dict {name: (gain, forget)}")
    table = {}
    for key, value in results.items():
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
            return report(False, "", f"each entry must be (gain, forget); got {key!r}: {value!r}")
        gain, forget = _number(value[0]), _number(value[1])
        if gain is None or forget is None:
            return report(False, "", f"gain and forget must be numbers; got {key!r}: {value!r}")
        if gain <= 0:
            return report(
                False,
                "",
                f"{key!r} gained nothing ({gain:.3g}): forgetting per unit of gain needs "
                "a positive gain — retune its learning rate",
            )
        table[key] = (gain, forget)
    if name not in table:
        return report(False, "", f"{name!r} is not one of your measured sets {list(table)}")
    ratio = {k: f / g for k, (g, f) in table.items()}
    best = min(ratio, key=ratio.get)
    if ratio[name] <= ratio[best] + 1e-9:
        return report(
            True,
            f"{name!r} forgets {ratio[name]:.3g} bits/byte of code per bit/byte gained on the docs, "
            "the least of your sets.",
            "",
        )
    if name == min(table, key=lambda k: table[k][1]):
        return report(
            False,
            "",
            f"{name!r} forgets least in absolute terms, but it also learns less: divide "
            "forget by gain",
        )
    if name == max(table, key=lambda k: table[k][0]):
        return report(
            False, "", f"{name!r} learns most; the question is forgetting per unit of gain"
        )
    return report(
        False,
        "",
        f"by your own numbers {best!r} has the smallest forget/gain ({ratio[best]:.3g}), "
        f"{name!r} has {ratio[name]:.3g}",
    )


def check_ex_4_3(answer) -> bool:
    """A function ``first_update(x, g, A, s, lr) -> ΔW`` (m×n): the change of the layer's effective
    weight s·A·B after ONE plain SGD step from LoRA's init (B = 0), checked against autograd and an
    optimizer step (tolerance 1e-8 absolute and relative, in float64)."""
    if not callable(answer):
        return report(
            False,
            "",
            f"expected a function first_update(x, g, A, s, lr), got {type(answer).__name__}",
        )
    gen = torch.Generator().manual_seed(43)
    for tokens, m, n, r, s, lr in ((7, 6, 5, 3, 2.0, 0.1), (4, 9, 9, 2, 0.5, 0.03)):
        x = torch.randn(tokens, m, generator=gen, dtype=torch.float64)
        A = torch.randn(m, r, generator=gen, dtype=torch.float64, requires_grad=True)
        B = torch.zeros(r, n, dtype=torch.float64, requires_grad=True)
        g = torch.randn(tokens, n, generator=gen, dtype=torch.float64)
        A0 = A.detach().clone()
        (s * x @ A @ B).backward(g)
        torch.optim.SGD([A, B], lr=lr).step()
        with torch.no_grad():
            want = s * A @ B  # B started at 0, so this is the whole change
        try:
            got = answer(x.clone(), g.clone(), A0.clone(), s, lr)
        except Exception as e:  # noqa: BLE001 - a learner's bug must not stop the notebook
            return report(False, "", f"your function raised {type(e).__name__}: {e}")
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != (m, n):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            return report(False, "", f"expected a tensor of W0's shape ({m}, {n}), got {shape}")
        got = got.double()
        if torch.allclose(got, want, rtol=1e-8, atol=1e-8):
            continue
        full = -lr * x.T @ g
        if torch.allclose(got, full, rtol=1e-8, atol=1e-8):
            return report(
                False,
                "",
                "that is full fine-tuning's step -lr·xᵀg; LoRA moves only B, and the "
                "change reaches W through s·A·B",
            )
        if torch.allclose(got, want / s, rtol=1e-8, atol=1e-8):
            return report(False, "", "one factor s short: s enters once in dL/dB and once in s·A·B")
        if torch.allclose(got, -want, rtol=1e-8, atol=1e-8):
            return report(False, "", "wrong sign: a descent step subtracts lr times the gradient")
        return report(
            False,
            "",
            "not it: B₁ = -lr·s·(xA)ᵀg (A does not move: its gradient carries B = 0), "
            "then ΔW = s·A·B₁",
        )
    return report(
        True,
        "ΔW = -lr·s²·A Aᵀ (xᵀg): full fine-tuning's step -lr·xᵀg, projected onto A's "
        "r columns and scaled by s². That factor is why LoRA's best learning rate differs (§2).",
        "",
    )


def check_ex_4_4(answer) -> bool:
    """α for a scaling of 2 at r = 64: (α/r → 128, α/√r → 16), to 1e-6 relative."""
    pair = _pair(answer)
    if pair is None:
        return report(False, "", f"expected a pair (alpha for α/r, alpha for α/√r), got {answer!r}")
    a, b = _number(pair[0]), _number(pair[1])
    if a is None or b is None:
        return report(False, "", f"both entries must be numbers, got {answer!r}")
    if math.isclose(a, 128, rel_tol=1e-6) and math.isclose(b, 16, rel_tol=1e-6):
        return report(True, "α = 2·64 = 128 under α/r, α = 2·√64 = 16 under rsLoRA.", "")
    if math.isclose(a, 2, rel_tol=1e-6):
        return report(
            False, "", "α = 2 gives a scaling of 2/64: α is not the scaling, the scaling is α/r"
        )
    if math.isclose(a, 16, rel_tol=1e-6) and math.isclose(b, 128, rel_tol=1e-6):
        return report(False, "", "swapped: α/r needs α = 128, α/√r needs α = 16")
    return report(False, "", f"({a:g}, {b:g}) is not it: solve α/64 = 2 and α/√64 = 2")
