"""Worked solutions for notebook 00's exercises."""

import math

import torch


def solve_ex_0_1():
    # log2 x = ln x / ln 2: a loss of 1.6 nats is 1.6 / ln 2 ≈ 2.31 bits. One nat is the larger
    # unit (1 nat = 1/ln 2 ≈ 1.443 bits), so the number grows when converted to bits.
    return 1.6 / math.log(2)


def solve_ex_0_2():
    # nn.Linear(128, 512, bias=False) stores a 512×128 weight and nothing else
    return 128 * (4 * 128)


def solve_ex_0_3():
    # the entropy of k equally likely outcomes is log2 k bits
    return (math.log2(256), math.log2(100))


def solve_ex_0_4():
    """H(next | prev) = H(prev, next) − H(prev), from counts of consecutive byte pairs."""

    def bigram_entropy(data: torch.Tensor) -> float:
        data = data.long()
        pairs = torch.bincount(data[:-1] * 256 + data[1:], minlength=256 * 256).double()
        p_joint = pairs[pairs > 0] / pairs.sum()
        h_joint = -(p_joint * p_joint.log2()).sum()
        prev = torch.bincount(data[:-1], minlength=256).double()
        p_prev = prev[prev > 0] / prev.sum()
        h_prev = -(p_prev * p_prev.log2()).sum()
        return float(h_joint - h_prev)

    return bigram_entropy
