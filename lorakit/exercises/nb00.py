"""Checkers for notebook 00's exercises (solutions: notebooks/solutions/nb00.py)."""

import math

import torch

from . import as_integer, as_number, as_numbers, close, report


def check_ex_0_1(answer) -> bool:
    """1.6 nats in bits: 1.6 / ln 2 = 2.308. Any number type; accepted within 0.5 % (2.31 passes)."""
    want = 1.6 / math.log(2)
    value = as_number(answer)
    if value is None:
        return report(False, "", f"expected a number (bits per byte), got {answer!r}")
    if close(value, 1.6 * math.log(2), rel=5e-3):
        return report(
            False,
            "",
            "you multiplied by ln 2. A nat is the larger unit (1 nat = 1/ln 2 ≈ 1.443 bits), "
            "so the same loss is a bigger number in bits: divide by ln 2",
        )
    return report(
        close(value, want, rel=5e-3),
        f"1.6 nats = 1.6 / ln 2 = {want:.4f} bits (1 nat ≈ 1.443 bits)",
        f"{value:.4g} is not 1.6 nats converted to bits (tolerance 0.5 %)",
    )


def check_ex_0_2(answer) -> bool:
    """Parameters of up_proj at d = 128, MLP ratio 4, no bias: 65,536. Any whole number (65536.0 too)."""
    want = 128 * 4 * 128
    value = as_integer(answer)
    if value is None:
        return report(False, "", f"expected a whole number (a parameter count), got {answer!r}")
    if value == want + 4 * 128:
        return report(False, "", "the course's Linear layers have no bias (like Llama's)")
    return report(
        value == want,
        f"{want:,} = 128 × 512 (in × out)",
        f"{value:,} is not in×out for in=128, out=512",
    )


def check_ex_0_3(answer) -> bool:
    """Uniform over 256 and over 100 outcomes: (8, log2 100 = 6.644). Any sequence of two numbers;
    each accepted within 0.5 % (6.64 passes)."""
    want = (8.0, math.log2(100))
    values = as_numbers(answer, 2)
    if values is None:
        return report(
            False,
            "",
            f"expected two numbers, e.g. a tuple (bits for 256, bits for 100), got {answer!r}",
        )
    if close(values[1], 100 / 256 * 8, rel=5e-3) or close(values[1], math.log(100), rel=5e-3):
        return report(
            False,
            "",
            "the entropy of k equally likely outcomes is log2 k, in bits (not ln k, not a ratio)",
        )
    ok = all(close(v, w, rel=5e-3) for v, w in zip(values, want))
    return report(
        ok,
        f"log2 256 = 8 and log2 100 = {want[1]:.3f} bits/byte",
        "each is log2 of the number of equally likely outcomes (tolerance 0.5 %)",
    )


# ------------------------------------------------------------------ 0.4: bigram entropy (code)


def _conditional_entropy(data: torch.Tensor) -> float:
    """H(next byte | previous byte) in bits, from the pair counts of a uint8 tensor."""
    data = data.long()
    pairs = torch.bincount(data[:-1] * 256 + data[1:], minlength=256 * 256).double().view(256, 256)
    joint = pairs / pairs.sum()
    prev = joint.sum(dim=1, keepdim=True)
    nz = joint > 0
    return float(-(joint[nz] * (joint / prev.expand_as(joint))[nz].log2()).sum())


def _probes() -> dict:
    gen = torch.Generator().manual_seed(0)
    text = ("def add(a, b):\n    return a + b\n" * 50).encode()
    return {
        "a repeating pattern 'abcabc...'": torch.tensor(list(b"abc" * 400), dtype=torch.uint8),
        "random bytes": torch.randint(0, 256, (20_000,), generator=gen, dtype=torch.uint8),
        "random bits 0/1": torch.randint(0, 2, (20_000,), generator=gen, dtype=torch.uint8),
        "a short program, repeated": torch.tensor(list(text), dtype=torch.uint8),
    }


def check_ex_0_4(answer) -> bool:
    """A function ``bigram_entropy(data)`` (uint8 tensor → bits/byte): H(next | previous), checked on
    four probes (a repeating pattern: 0 bits; random bits: 1 bit; ...) within 0.01 bits."""
    if not callable(answer):
        return report(
            False, "", f"expected a function bigram_entropy(data) -> float, got {answer!r}"
        )
    for name, data in _probes().items():
        want = _conditional_entropy(data)
        try:
            value = as_number(answer(data.clone()))
        except Exception as e:  # a learner's function may fail in any way: explain, don't raise
            return report(False, "", f"your function raised {type(e).__name__}: {e} (on {name})")
        if value is None:
            return report(
                False, "", f"your function must return one number (bits/byte); on {name} it did not"
            )
        if abs(value - want) <= 0.01:
            continue
        d = data.long()
        joint_counts = torch.bincount(d[:-1] * 256 + d[1:], minlength=65536).double()
        p = joint_counts[joint_counts > 0] / joint_counts.sum()
        joint_h = float(-(p * p.log2()).sum())
        if abs(value - joint_h) <= 0.01:
            return report(
                False,
                "",
                f"{value:.3f} bits on {name} is the JOINT entropy H(prev, next); the "
                "conditional one subtracts H(prev): H(next | prev) = H(prev, next) − H(prev)",
            )
        if abs(value - want * math.log(2)) <= 0.01 and want > 0.05:
            return report(
                False, "", f"{value:.3f} on {name} is in nats: use log2, not the natural log"
            )
        return report(
            False, "", f"on {name} your function gives {value:.4f}, expected {want:.4f} bits/byte"
        )
    return report(
        True,
        "H(next | previous) = −Σ p(a, b) log2 p(b | a): 0 bits for 'abcabc', 1 bit for "
        "random bits, 8 for random bytes. On the code corpus it lies between the unigram "
        "entropy and the model's loss: one byte of context is worth a lot, more context more.",
        "",
    )
