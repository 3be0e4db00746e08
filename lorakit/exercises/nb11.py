"""Checkers for notebook 11 (LoRA after SFT: DPO and GRPO). Each prints right/wrong and why,
returns a bool, and never raises. Solutions: notebooks/solutions/nb11.py."""

from __future__ import annotations

import math

from . import as_number, as_numbers, report

#: exercise 11.1's pair: policy chosen, policy rejected, reference chosen, reference rejected; β
PAIR_11_1 = (-12.0, -15.0, -13.0, -14.0)
BETA_11_1 = 0.5
#: exercise 11.2's group of rewards
GROUP_11_2 = (0.25, 0.75, 0.5, 0.5)


def check_ex_11_1(answer) -> bool:
    """The DPO loss −log σ(β[(π_c − ref_c) − (π_r − ref_r)]) of ``PAIR_11_1``, within ±1e-3 nats."""
    pc, pr, rc, rr = PAIR_11_1
    margin = (pc - rc) - (pr - rr)
    right = math.log1p(math.exp(-BETA_11_1 * margin))
    value = as_number(answer)
    if value is None:
        return report(False, "", f"expected one number (the loss in nats), got {answer!r}")
    if abs(value - right) <= 1e-3:
        return report(
            True,
            f"{right:.4f} nats: the margin is {margin:g}, β·margin = {BETA_11_1 * margin:g}, "
            f"and −log σ({BETA_11_1 * margin:g}) = {right:.4f} (below log 2 = 0.693: the policy already "
            "prefers the chosen answer more than the reference does).",
            "",
        )
    if abs(value - math.log1p(math.exp(BETA_11_1 * margin))) <= 1e-3:
        return report(
            False,
            "",
            "the sign is flipped: chosen minus rejected, and the loss is −log σ(+β·margin).",
        )
    if abs(value - math.log1p(math.exp(-margin))) <= 1e-3:
        return report(False, "", "β is missing: multiply the margin by β = 0.5 before the sigmoid.")
    if abs(value - math.log1p(math.exp(-BETA_11_1 * (pc - pr)))) <= 1e-3:
        return report(
            False,
            "",
            "the reference is missing: each log-probability is taken relative to the "
            "reference (log π − log π_ref) before the difference.",
        )
    if abs(value - 1 / (1 + math.exp(-BETA_11_1 * margin))) <= 1e-3:
        return report(
            False,
            "",
            "that is σ(β·margin), the probability of preferring the chosen answer; the "
            "loss is its negative log.",
        )
    return report(
        False,
        "",
        f"{value:.4f} is not it (tolerance ±1e-3): margin = (−12 + 13) − (−15 + 14), "
        "loss = −log σ(β · margin).",
    )


def check_ex_11_2(answer) -> bool:
    """GRPO's advantages of ``GROUP_11_2``: (r − mean)/std with std over n − 1 or n, within ±1e-3."""
    r = list(GROUP_11_2)
    mean = sum(r) / len(r)
    var = sum((x - mean) ** 2 for x in r)
    values = as_numbers(answer, length=len(r))
    if values is None:
        return report(False, "", f"expected a list of {len(r)} numbers, got {answer!r}")
    for ddof, name in ((1, "n − 1 (torch.std, TRL)"), (0, "n (the population std)")):
        std = math.sqrt(var / (len(r) - ddof))
        right = [(x - mean) / std for x in r]
        if all(abs(v - w) <= 1e-3 for v, w in zip(values, right)):
            return report(
                True,
                f"{[round(w, 3) for w in right]} (std over {name}). They sum to 0: the group is "
                "its own baseline, so better-than-average answers are pushed up, the rest down.",
                "",
            )
    if all(abs(v - (x - mean)) <= 1e-3 for v, x in zip(values, r)):
        return report(False, "", "you subtracted the mean but did not divide by the group's std.")
    if all(abs(v - x) <= 1e-3 for v, x in zip(values, r)):
        return report(
            False, "", "those are the rewards themselves; the advantage is relative to the group."
        )
    return report(
        False, "", "not yet (tolerance ±1e-3): (r − mean(r)) / std(r) for each of the four."
    )


def check_ex_11_3(better_reward) -> bool:
    """A verifier in [0, 1]: 1.0 for the true line, ≤ 0.1 for format without content, content pays."""
    if not callable(better_reward):
        return report(
            False,
            "",
            f"expected a function better_reward(answer, stopped, summary), got {better_reward!r}",
        )
    summary = "Return True for leap years, False for non-leap years."
    cases = {
        "the true line, stopped": (summary, True),
        "a one-word sentence": ("Rod.", True),
        "a generic sentence": ("Return the value.", True),
        "content": ("Return true for leap years.", True),
        "content, not stopped": ("Return true for leap years.", False),
        "empty": ("", True),
        "babble": ("the the the and", False),
    }
    got = {}
    for name, (text, stopped) in cases.items():
        try:
            value = as_number(better_reward(text, stopped, summary))
        except Exception as e:  # noqa: BLE001 - a learner's bug is reported, not raised
            return report(
                False,
                "",
                f"better_reward({text!r}, {stopped}, summary) raised {type(e).__name__}: {e}",
            )
        if value is None or not 0 <= value <= 1:
            return report(
                False, "", f"better_reward({text!r}, ...) must be a number in [0, 1], got {value!r}"
            )
        got[name] = value
    if abs(got["the true line, stopped"] - 1.0) > 1e-6:
        return report(
            False,
            "",
            f"the true summary, ended with EOS, must score 1.0; got {got['the true line, stopped']:.3f}",
        )
    for hack in ("a one-word sentence", "a generic sentence", "empty"):
        if got[hack] > 0.1:
            return report(
                False,
                "",
                f"{cases[hack][0]!r} scores {got[hack]:.3f}: format without content must "
                "score at most 0.1, or the policy will learn it (notebook 11 §3).",
            )
    if not got["content"] > max(got["a one-word sentence"], got["a generic sentence"]):
        return report(
            False,
            "",
            "an answer that shares content words must score more than one that shares none.",
        )
    if not got["content"] >= got["content, not stopped"]:
        return report(False, "", "stopping should never lower the reward.")
    return report(
        True,
        f"the hack scores {got['a one-word sentence']:.2f}, real content "
        f"{got['content']:.2f}, the true line 1.0: format is paid only together with content.",
        "",
    )
