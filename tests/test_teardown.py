"""Notebook 10's 2-rank run ends cleanly, launch after launch (issue 27, 12b).

A rank that had finished (rank 0 printed ``done``, result.json complete) sometimes died at
teardown with ``terminate called without an active exception`` (a C++ thread destroyed while
joinable during gloo's teardown), failing 1 launch in ~15. A rank now says it has finished after
the last collective and leaves without C++ teardown (``lorakit.launcher.exit_now``), and the
launcher counts a rank that said it had finished, then died of a signal, as finished.

The drill launches the real run LORAKIT_TEARDOWN times in a row (20 in ``make test-teardown``;
each launch is two Python processes importing torch, so it is kept out of ``make test``); every
launch must return a complete result. The launcher's side is tested cheaply in ``make test``.
"""

import os

import pytest

from lorakit import distributed as D
from lorakit.launcher import FINISHED
from lorakit.train import base_model

LAUNCHES = int(os.environ.get("LORAKIT_TEARDOWN", "0"))


@pytest.mark.skipif(LAUNCHES < 1, reason="the 20-launch drill runs in make test-teardown")
def test_two_rank_runs_end_cleanly_launch_after_launch(tmp_path, capsys):
    base = base_model(progress=False)[1]["path"]
    settings = D.RunSettings(steps=1, global_batch=4, r=2, max_bytes=50_000)
    ended = []
    for i in range(LAUNCHES):
        out = tmp_path / f"run{i}"
        result = D.launch(2, out, settings, base=base, timeout=240, echo=False)
        assert result["world_size"] == 2 and len(result["train_bpb"]) == settings.steps, (i, result)
        assert (out / "adapter.safetensors").is_file(), f"launch {i}: rank 0 saved no adapter"
        ended.append(i)
    assert ended == list(range(LAUNCHES))
    with capsys.disabled():
        print(f"\n{LAUNCHES} two-rank launches in a row ended cleanly")


def test_a_finished_rank_that_aborts_at_exit_is_not_a_failed_run(tmp_path, monkeypatch):
    """The launcher's side, cheaply (no torch in the ranks): FINISHED then SIGABRT, which is what
    the teardown abort looks like, is a finished rank; SIGABRT before FINISHED is a failed run."""
    from lorakit import launcher

    (tmp_path / "abort_after_finish.py").write_text(
        "import os, signal\n"
        "print('work done', flush=True)\n"
        f"print({FINISHED!r}, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGABRT)\n"
    )
    (tmp_path / "abort_before_finish.py").write_text(
        "import os, signal\nos.kill(os.getpid(), signal.SIGABRT)\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    logs = launcher.run_ranks("abort_after_finish", [], 2, timeout=60)
    assert all("ended with code -6 after finishing its work" in log[-1] for log in logs), logs
    with pytest.raises(launcher.DistributedRunError, match=r"rank \d exited with code -6"):
        launcher.run_ranks("abort_before_finish", [], 2, timeout=60)
