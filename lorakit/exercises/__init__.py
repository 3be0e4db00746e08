"""Self-checking exercises, one module per notebook (``nb01`` for 01_..., and so on).

Each ``check_ex_N_M(answer)`` prints whether the learner's answer is right and why, and returns
True or False. It never raises on a wrong or missing answer, so a notebook with exercises left
blank still runs top to bottom. Worked solutions live in ``notebooks/solutions/``.
"""


def report(ok: bool, right: str, wrong: str) -> bool:
    """Print a one-line verdict and return ``ok``: the shared voice of every checker."""
    print(("Correct: " + right) if ok else ("Not yet: " + wrong))
    return bool(ok)
