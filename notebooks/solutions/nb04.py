"""Worked solutions for the exercises of notebook 04 (choosing a fine-tune).

4.1 and 4.2 are experiments: each solution takes the notebook's ``finetune`` function (or any
function with the same keywords) and runs the experiment with it.
"""


def solve_ex_4_1(finetune, lrs=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1)):
    """Sweep the learning rate at r = 64 (α/r, α = 16, all linear layers) and take the best.

    Prediction from section 2: under α/r with a fixed α the best rate barely moves with r, so
    expect the same decade as at r = 16. If the best rate lands on an edge, extend the grid.
    """
    lrs = list(lrs)
    while True:
        sweep = {lr: finetune("lora", r=64, lr=lr)["docs"] for lr in lrs}
        best = min(sweep, key=sweep.get)
        if best == lrs[0]:
            lrs.insert(0, lrs[0] / 3)
        elif best == lrs[-1]:
            lrs.append(lrs[-1] * 3)
        else:
            return best, sweep


TARGET_SETS = {  # name -> (targets, r): the same budget per block (section 4)
    "q": (["q_proj"], 36),
    "q, v": (["q_proj", "v_proj"], 18),
    "attention": (["q_proj", "k_proj", "v_proj", "o_proj"], 9),
    "MLP": (["up_proj", "down_proj"], 7),
    "all linear": ("all-linear", 4),
}


def solve_ex_4_2(finetune, lr=1e-2, sets=TARGET_SETS):
    """Gain and forgetting per target set at an equal budget; the least forget/gain wins."""
    table = {}
    for name, (targets, r) in sets.items():
        res = finetune("lora", targets=targets, r=r, lr=lr)
        table[name] = (res["gain"], res["forget"])
    learned = {k: v for k, v in table.items() if v[0] > 0}
    best = min(learned, key=lambda k: learned[k][1] / learned[k][0])
    return best, learned


def solve_ex_4_3():
    """From B = 0: dL/dA = s·xᵀ(g Bᵀ) = 0, so A stays; dL/dB = s·(xA)ᵀ g, so B₁ = -lr·s·(xA)ᵀ g;
    the weight changes by s·A·B₁ = -lr·s²·A Aᵀ xᵀ g."""

    def first_update(x, g, A, s, lr):
        B1 = -lr * s * (x @ A).T @ g  # r×n; A's step is zero (its gradient carries B = 0)
        return s * A @ B1  # m×n

    return first_update


def solve_ex_4_4():
    """α/r = 2 → α = 2r = 128; α/√r = 2 → α = 2√r = 16."""
    r, scaling = 64, 2
    return scaling * r, scaling * r**0.5
