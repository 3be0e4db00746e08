"""Worked solutions for notebook 00's exercises."""

import math


def solve_ex_0_1():
    # cross-entropy in nats divided by ln 2 is in bits
    return 1.6 / math.log(2)


def solve_ex_0_2():
    # nn.Linear(128, 512, bias=False) stores a 512×128 weight and nothing else
    return 128 * (4 * 128)


def solve_ex_0_3():
    # the entropy of k equally likely outcomes is log2 k bits
    return (math.log2(256), math.log2(100))
