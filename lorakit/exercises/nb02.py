"""Checkers for the exercises of notebook 02 (LoRA from scratch); solutions: notebooks/solutions/nb02.py.

Each ``check_ex_2_M(answer)`` prints right/wrong and why, returns a bool, and never raises.
"""

from __future__ import annotations

import torch

from . import report

# ------------------------------------------------------------------ 2.1: LoRA's backward by hand


def _backward_probe():
    gen = torch.Generator().manual_seed(21)
    k, m, n, r, s = 5, 10, 7, 3, 0.5
    x = torch.randn(k, m, generator=gen, dtype=torch.float64)
    W0 = torch.randn(m, n, generator=gen, dtype=torch.float64)
    A = torch.randn(m, r, generator=gen, dtype=torch.float64)
    B = torch.randn(r, n, generator=gen, dtype=torch.float64)
    G = torch.randn(k, n, generator=gen, dtype=torch.float64)
    return x, W0, A, B, s, G


def _autograd(x, W0, A, B, s, G):
    x, A, B = (t.clone().requires_grad_(True) for t in (x, A, B))
    y = x @ W0 + x @ A @ B * s
    y.backward(G)
    return A.grad, B.grad, x.grad


def check_ex_2_1(answer) -> bool:
    """A function ``lora_backward(x, W0, A, B, s, G)`` returning ``(grad_A, grad_B, grad_x)`` for
    y = x W0 + s·x A B and upstream gradient G = ∂L/∂y; compared with autograd in float64 within 1e-8."""
    if not callable(answer):
        return report(
            False, "", f"expected a function lora_backward(x, W0, A, B, s, G), got {answer!r}"
        )
    x, W0, A, B, s, G = _backward_probe()
    want = _autograd(x, W0, A, B, s, G)
    try:
        got = tuple(answer(x.clone(), W0.clone(), A.clone(), B.clone(), s, G.clone()))
    except Exception as e:  # a learner's function may fail in any way: explain, don't raise
        return report(
            False,
            "",
            f"your function raised {type(e).__name__}: {e}. Shapes: x k×m, W0 m×n, "
            "A m×r, B r×n, G k×n.",
        )
    if len(got) != 3 or not all(isinstance(g, torch.Tensor) for g in got):
        return report(False, "", "return three tensors: (grad_A, grad_B, grad_x)")
    names = ("grad_A", "grad_B", "grad_x")
    for name, g, w in zip(names, got, want):
        if g.shape != w.shape:
            return report(
                False,
                "",
                f"{name} has shape {tuple(g.shape)}, expected {tuple(w.shape)} "
                "(a gradient has its variable's shape)",
            )
    ok = [torch.allclose(g.double(), w, atol=1e-8, rtol=1e-8) for g, w in zip(got, want)]
    if all(ok):
        return report(
            True,
            "∂L/∂A = s·xᵀ(G Bᵀ), ∂L/∂B = s·(xA)ᵀ G, ∂L/∂x = G W0ᵀ + s·G Bᵀ Aᵀ — equal to "
            "autograd. Note ∂L/∂A ∝ B: at init (B = 0) only B moves.",
            "",
        )
    wrong = names[ok.index(False)]
    g, w = got[ok.index(False)].double(), want[ok.index(False)]
    if torch.allclose(g * s, w, atol=1e-8) or torch.allclose(g, w * s, atol=1e-8):
        return report(
            False, "", f"{wrong} is off by the factor s: the scaling multiplies the whole LoRA path"
        )
    if wrong == "grad_x" and torch.allclose(g, G @ B.T @ A.T * s, atol=1e-8):
        return report(
            False, "", "grad_x misses the frozen path: x also reaches y through W0 (add G W0ᵀ)"
        )
    if wrong == "grad_x" and torch.allclose(g, G @ W0.T, atol=1e-8):
        return report(False, "", "grad_x misses the LoRA path: add s·G Bᵀ Aᵀ")
    return report(
        False,
        "",
        f"{wrong} differs from autograd (max diff {(g - w).abs().max():.2e}); "
        "write y = x W0 + s·(xA)B and apply ∂(xM)/∂M = xᵀ(·) one factor at a time",
    )


# ------------------------------------------------------------------ 2.2: merge by hand


def _probe_merge():
    gen = torch.Generator().manual_seed(0)
    W0 = torch.randn(6, 10, generator=gen)  # nn.Linear weight: out×in
    A, B = torch.randn(10, 3, generator=gen), torch.randn(3, 6, generator=gen)
    return W0, A, B


def check_ex_2_2(answer) -> bool:
    """A function ``merge(W0, A, B, scaling)`` returning a NEW merged ``nn.Linear`` weight (out×in),
    ``W0 + scaling · (A B)ᵀ``, within 1e-5, leaving ``W0`` itself unchanged (a merge that writes into
    the base weight destroys the base every other adapter shares, so it fails even if the value is right)."""
    if not callable(answer):
        return report(False, "", f"expected a function merge(W0, A, B, scaling), got {answer!r}")
    W0, A, B = _probe_merge()
    W0_before = W0.clone()
    want = W0 + 0.5 * (A @ B).T
    try:
        got = answer(W0, A, B, 0.5)
    except Exception as e:  # a learner's function may fail in any way: explain, don't raise
        return report(
            False,
            "",
            f"your function raised {type(e).__name__}: {e}. "
            "Hint: nn.Linear stores W0ᵀ (out×in), while A B is in×out.",
        )
    if not torch.equal(W0, W0_before):
        return report(
            False,
            "",
            "your merge changed W0 itself (an in-place +=): the base weight is shared by "
            "every adapter and needed to unmerge; return a new tensor, e.g. W0 + ...",
        )
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        return report(
            False, "", f"expected a tensor of shape {tuple(want.shape)} (out×in), got {shape}"
        )
    if torch.allclose(got, want, atol=1e-5):
        return report(
            True,
            "merged = W0 + scaling·(A B)ᵀ, in nn.Linear's out×in layout, and W0 untouched.",
            "",
        )
    if torch.allclose(got, W0 + (A @ B).T, atol=1e-5):
        return report(False, "", "you left out the scaling α/r (it was 0.5 in the probe).")
    return report(False, "", "the values are wrong: compare with W0 + scaling * (A @ B).T")


# ------------------------------------------------------------------ 2.3: PEFT's orientation


def check_ex_2_3(answer) -> bool:
    """A function ``to_peft(A, B)`` returning ``(lora_A_weight, lora_B_weight)`` = ``(Aᵀ, Bᵀ)``
    (a tuple or a list; exact)."""
    if not callable(answer):
        return report(False, "", f"expected a function to_peft(A, B), got {answer!r}")
    gen = torch.Generator().manual_seed(1)
    A, B = torch.randn(12, 4, generator=gen), torch.randn(4, 7, generator=gen)
    try:
        got = answer(A.clone(), B.clone())
        a, b = got
    except Exception as e:
        return report(
            False,
            "",
            f"expected a pair (lora_A_weight, lora_B_weight); got an error {type(e).__name__}: {e}",
        )
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return report(False, "", "both entries must be tensors")
    if tuple(a.shape) != (4, 12) or tuple(b.shape) != (7, 4):
        return report(
            False,
            "",
            f"shapes {tuple(a.shape)}, {tuple(b.shape)}: PEFT's lora_A.weight is r×in "
            "= (4, 12) and lora_B.weight is out×r = (7, 4) (nn.Linear stores out×in).",
        )
    if torch.equal(a, A.T) and torch.equal(b, B.T):
        return report(
            True, "lora_A.weight = Aᵀ and lora_B.weight = Bᵀ; PEFT computes x Aᵀᵀ Bᵀᵀ = x A B.", ""
        )
    return report(
        False, "", "right shapes, wrong values: use the transposes A.T and B.T (no reshape)."
    )


# ------------------------------------------------------------------ 2.4: which factor starts at zero?


def toy_problem():
    """Exercise 2.4's task: inputs ``x`` (256×16), a frozen ``W0`` (16×16) and a ``target`` =
    x (W0 + ΔW*) with a rank-2 ΔW* to be learned by LoRA at r = 2 (float32, fixed seed)."""
    gen = torch.Generator().manual_seed(24)
    x = torch.randn(256, 16, generator=gen)
    W0 = torch.randn(16, 16, generator=gen) / 4
    dW_star = torch.randn(16, 2, generator=gen) @ torch.randn(2, 16, generator=gen) / 4
    return x, W0, x @ (W0 + dW_star)


def check_ex_2_4(answer) -> bool:
    """A function ``final_loss(A0, B0)`` that trains A and B (W0 frozen) on ``toy_problem()`` from the
    given initial A0 (16×2) and B0 (2×16) and returns the final mean squared error. Checked on three
    starts (each has A0 B0 = 0, so the same initial loss L0): (random, zero) and (zero, random) must
    fall below L0/2; (zero, zero) must stay at L0 (within 1e-6 relative)."""
    if not callable(answer):
        return report(False, "", f"expected a function final_loss(A0, B0) -> float, got {answer!r}")
    x, W0, target = toy_problem()
    L0 = float(((x @ W0 - target) ** 2).mean())
    gen = torch.Generator().manual_seed(7)
    rand_A, rand_B = torch.randn(16, 2, generator=gen) / 4, torch.randn(2, 16, generator=gen) / 4
    starts = {
        "A random, B = 0 (LoRA's choice)": (rand_A, torch.zeros(2, 16)),
        "A = 0, B random": (torch.zeros(16, 2), rand_B),
        "A = 0, B = 0": (torch.zeros(16, 2), torch.zeros(2, 16)),
    }
    losses = {}
    for name, (A0, B0) in starts.items():
        try:
            value = answer(A0.clone(), B0.clone())
            value = float(value.item() if isinstance(value, torch.Tensor) else value)
        except Exception as e:  # a learner's function may fail in any way: explain, don't raise
            return report(False, "", f"final_loss raised {type(e).__name__}: {e} (start: {name})")
        losses[name] = value
    text = ", ".join(f"{k}: {v:.4g}" for k, v in losses.items())
    both_zero, a_rand, b_rand = losses["A = 0, B = 0"], *list(losses.values())[:2]
    if abs(both_zero - L0) > 1e-6 * L0:
        return report(
            False,
            "",
            f"losses {text} (L0 = {L0:.4g}). Starting from A = B = 0 the loss moved: "
            "did your function start from the A0 and B0 it was given (and keep W0 frozen)?",
        )
    if not (a_rand < 0.5 * L0 and b_rand < 0.5 * L0):
        return report(
            False,
            "",
            f"losses {text} (L0 = {L0:.4g}): a start with one random factor should "
            "learn (below L0/2). Train A and B with Adam (lr ≈ 2e-2, 100 steps or more).",
        )
    return report(
        True,
        f"losses {text}, from L0 = {L0:.4g}. Either factor may start at zero — AB = 0 "
        "either way and the other factor's gradient is non-zero — but with both at zero "
        "each gradient is proportional to the other factor (∂L/∂A ∝ B, ∂L/∂B ∝ A), so "
        "neither ever moves: a saddle point training cannot leave.",
        "",
    )
