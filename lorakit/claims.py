"""Words that follow the numbers: the titles and verdicts the notebooks print beside a measurement.

A figure title or a summary verdict states a claim, and a claim written before the run can sit
above numbers that say the opposite (test mode's short runs, a different machine, another seed).
Each function here picks its words from the numbers it describes, so the sentence changes when
the measurement does; tests/test_claims.py feeds each one every outcome it can name. Timings are
never the subject: a title does not state an effect that noise on a shared machine can flip.
"""

from __future__ import annotations


def forgetting_verdict(
    lora_per_gain: float, full_per_gain: float, margin: float = 0.1
) -> str:  # notebook 04 §5
    """Biderman et al.'s "forgets less per unit of gain", judged on forget/gain of the best runs.

    Three outcomes: LoRA below full fine-tuning by more than ``margin`` (agrees), within it (the
    same learning-forgetting line), or above it (LoRA forgot *more* per unit of gain).
    """
    if lora_per_gain < full_per_gain - margin:
        return "agrees"
    if lora_per_gain > full_per_gain + margin:
        return f"no, the opposite: LoRA forgot more per unit of gain ({lora_per_gain:.2f} vs {full_per_gain:.2f})"
    return f"no, the same line ({lora_per_gain:.2f} vs {full_per_gain:.2f})"


def forgetting_title(
    lora_per_gain: float, full_per_gain: float, margin: float = 0.1
) -> str:  # notebook 04 §5
    """Title of the gain-vs-forgetting scatter, from the same comparison as ``forgetting_verdict``."""
    verdict = forgetting_verdict(lora_per_gain, full_per_gain, margin)
    numbers = f"(forget/gain: LoRA {lora_per_gain:.2f}, full {full_per_gain:.2f})"
    if verdict == "agrees":
        return f"LoRA forgets less per unit of gain than full fine-tuning {numbers}"
    if verdict.startswith("no, the opposite"):
        return f"LoRA forgets more per unit of gain than full fine-tuning here {numbers}"
    return f"LoRA and full fine-tuning trade learning for forgetting alike {numbers}"


def lr_ratio_title(ratios: dict) -> str:  # notebook 04 §2
    """Title of the learning-rate sweep: the measured ratio of LoRA's best rate to full fine-tuning's
    (over the ranks swept), and whether it is the ~10× of LoRA Without Regret (3× to 30×)."""
    lo, hi = min(ratios.values()), max(ratios.values())
    measured = f"{lo:.3g}×" if lo == hi else f"{lo:.3g}–{hi:.3g}×"
    if 3 <= lo and hi <= 30:
        return f"LoRA's best learning rate is {measured} full fine-tuning's (~10×, as published)"
    if hi < 3:
        return f"LoRA's best learning rate is only {measured} full fine-tuning's here (published: ~10×)"
    return f"LoRA's best learning rate is {measured} full fine-tuning's (published: ~10×)"


def targets_title(fraction: dict, budget: int) -> str:  # notebook 04 §4
    """Title of the equal-budget target comparison: which set reached the largest share of full
    fine-tuning's gain, and whether that is spreading over every linear layer."""
    best = max(fraction, key=fraction.get)
    head = f"At an equal budget (~{budget:,} params), "
    if best == "all linear":
        return (
            head
            + f"spreading LoRA over all linear layers wins ({fraction[best]:.0%} of full FT's gain)"
        )
    rest = f"; all linear {fraction['all linear']:.0%}" if "all linear" in fraction else ""
    return head + f"{best} reaches the most of full FT's gain ({fraction[best]:.0%}{rest})"


def stall_title(moved_lora: float, moved_zero: float) -> str:  # notebook 04 §1
    """Title of the init experiment, from Σ|A| + Σ|B| after training: the evidence that both
    factors at zero never move is an exact zero, not a loss curve."""
    if moved_zero == 0 and moved_lora > 0:
        return "With A = B = 0 nothing moves: Σ|A| + Σ|B| stays exactly 0"
    if moved_zero == 0:
        return "Neither run moved its adapter: Σ|A| + Σ|B| = 0 for both"
    return f"Both runs moved: Σ|A| + Σ|B| = {moved_lora:.3g} (LoRA init) and {moved_zero:.3g} (both zero)"


def improvement_title(drops: dict, base: float, unit: str = "bits/token") -> str:  # notebook 09 §6
    """Title of a before/after comparison from each method's loss drop (base − after, > 0 = better):
    which methods lowered the loss, and which did so by less than 1 % of the base's loss (a bar
    of 0.01 on an axis from 0 is not a visible win, so the title says how small it is)."""
    improved = [m for m, d in drops.items() if d > 0]
    others = [m for m in drops if m not in improved]
    if not improved:
        title = "No method lowers the held-out loss"
    elif others:
        title = f"{', '.join(improved)} lower{'s' if len(improved) == 1 else ''} the held-out loss; {', '.join(others)} not"
    else:
        title = "Every method lowers the held-out loss"
    small = [m for m in improved if drops[m] < 0.01 * base]
    if small:
        title += f"; {', '.join(small)} by under 1 % of the base's {base:.2f} {unit}"
    return title
