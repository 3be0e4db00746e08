"""Repository-wide pytest hook: under nbval (`make test`), a notebook cell that writes to stderr
fails. A clean run on a healthy machine shows no red (issue 11, item 12): library start-up noise
is imported away with `lorakit.quiet.quiet_import`, progress bars are off in test mode.

It reads the outputs nbval already collected for the cell, so it costs no second run.
"""

import pytest


def stderr_text(outputs) -> str:
    """The text a cell wrote to stderr, from nbval's collected outputs (a list of output dicts)."""
    return "".join(
        o.get("text", "")
        for o in outputs or []
        if o.get("output_type") == "stream" and o.get("name") == "stderr"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    if hasattr(item, "cell") and hasattr(item, "test_outputs"):  # an nbval notebook cell
        text = stderr_text(item.test_outputs)
        if text.strip():
            pytest.fail(
                f"{item.name} wrote to stderr (a learner sees this as red):\n{text[-2000:]}",
                pytrace=False,
            )
    return result
