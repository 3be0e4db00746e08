"""Course plumbing: start one Python module on N local processes as torchrun would, watch them,
stop them. Not a lesson: notebook 10 §3 uses it through ``lorakit.distributed.launch``.

What torchrun does, in the open, on 127.0.0.1 only: this process hosts the rendezvous store
(``torch.distributed.TCPStore``) on a free port of 127.0.0.1 (torchrun's own store listens on
every interface, which a course should not open), starts one process per rank with torchrun's
environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``PORT``, ...) in its own process group,
echoes the lines a caller picks and watches every rank. A rank that exits with an error stops
the others and raises ``DistributedRunError`` naming it; so does a run past its timeout.
Nothing is left running and nothing hangs.

Teardown: a rank says on its own line that its work is done (``say_finished``, after the
run's last collective) and, after destroying its process group, leaves without running C++
destructors (``exit_now``: ``os._exit``). Tearing down gloo's process group and the store
client's threads can abort the process (``terminate called without an active exception``) after
everything was written; that abort is the process ending, not the run failing. A rank that
said it had finished and then died of a signal is therefore counted as finished, and the
launcher notes it in the log; an error exit (a Python exception) still fails the run.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

import torch

FINISHED = "[lorakit.launcher] rank finished"


class DistributedRunError(RuntimeError):  # notebook 10 §8
    """A sharded run failed (a rank died) or overran its timeout; every rank has been stopped.

    ``log`` holds everything the ranks printed; ``pids`` the ranks' process ids (all ended).
    """

    def __init__(self, message: str, log: str = "", pids: tuple[int, ...] = ()):
        super().__init__(message)
        self.log, self.pids = log, tuple(pids)


def say_finished() -> None:
    """Tell the launcher this rank's work is done: call it after the run's last collective."""
    print(FINISHED, flush=True)


def exit_now(code: int = 0) -> None:
    """Leave without C++ teardown (static destructors, gloo's and the store's threads)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _listening_socket() -> socket.socket:
    """A socket bound to a free port on 127.0.0.1 (the OS picks the port), already listening."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    return s


def _loopback_interface() -> str | None:
    """The loopback interface's name (``lo`` on Linux, ``lo0`` on macOS): gloo's sockets go there."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except (OSError, AttributeError):
        return None
    return next((n for n in ("lo", "lo0") if n in names), None)


def _rank_env(rank: int, nproc: int, port: int) -> dict[str, str]:
    """The environment torchrun gives each rank, pointing at our store on 127.0.0.1."""
    env = dict(
        os.environ,
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(nproc),
        LOCAL_WORLD_SIZE=str(nproc),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        TORCHELASTIC_USE_AGENT_STORE="True",
        TORCHELASTIC_RESTART_COUNT="0",
        OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // nproc)),
        PYTHONUNBUFFERED="1",
    )
    loopback = _loopback_interface()
    if loopback:
        env["GLOO_SOCKET_IFNAME"] = loopback
    return env


def _stop(procs: list[subprocess.Popen], grace: float = 5.0) -> None:
    """SIGTERM every rank's process group, wait, then SIGKILL whatever is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in procs if p.poll() is None]
        for p in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, sig)
        deadline = time.monotonic() + grace
        for p in alive:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.0, deadline - time.monotonic()))


def run_ranks(
    module: str, args: list[str], nproc: int, timeout: float, echo=None
) -> list[list[str]]:
    """Run ``python -m module *args`` on ``nproc`` ranks; return each rank's lines once all finished.

    ``echo(rank, line)``: whether to print a line as it arrives (None: print nothing).
    Raises ``DistributedRunError`` when a rank fails or ``timeout`` seconds pass.
    """
    listener = _listening_socket()
    port = listener.getsockname()[1]
    store = torch.distributed.TCPStore(
        "127.0.0.1",
        port,
        nproc + 1,
        True,
        wait_for_workers=False,
        timeout=datetime.timedelta(seconds=max(timeout, 30)),
        master_listen_fd=listener.detach(),  # the store owns the socket now
    )
    lines: queue.Queue = queue.Queue()
    logs: list[list[str]] = [[] for _ in range(nproc)]
    procs: list[subprocess.Popen] = []
    readers: list[threading.Thread] = []

    def read(rank: int, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            lines.put((rank, line))

    def collect() -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                rank, line = lines.get_nowait()
                logs[rank].append(line)

    try:
        for rank in range(nproc):
            proc = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                env=_rank_env(rank, nproc, port),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            procs.append(proc)
            readers.append(threading.Thread(target=read, args=(rank, proc), daemon=True))
            readers[-1].start()
        deadline = time.monotonic() + timeout
        while True:
            # read lines for up to 0.1 s at a time: a chatty rank must not starve the deadline check
            with contextlib.suppress(queue.Empty):
                while time.monotonic() <= deadline:
                    rank, line = lines.get(timeout=0.1)
                    logs[rank].append(line)
                    if echo is not None and echo(rank, line):
                        print(line, end="", flush=True)
            codes = [p.poll() for p in procs]
            if all(c is not None for c in codes):
                for t in readers:  # every line a rank wrote before it ended, FINISHED included
                    t.join(timeout=5)
                collect()
                failed = [r for r, c in enumerate(codes) if c != 0 and not _finished(logs[r], c)]
                if not failed:
                    for r, c in enumerate(codes):
                        if c != 0:
                            logs[r].append(
                                f"(rank {r} ended with code {c} after finishing its work)\n"
                            )
                    return logs
            else:
                failed = [
                    r
                    for r, c in enumerate(codes)
                    if c not in (None, 0) and not _finished(logs[r], c)
                ]
            if failed:
                _stop(procs)
                for t in readers:
                    t.join(timeout=1)
                collect()
                first = failed[0]
                others = [
                    f"rank {r} exited with code {procs[r].returncode}"
                    for r in range(nproc)
                    if r != first
                    and procs[r].returncode not in (0, None)
                    and not _finished(logs[r], procs[r].returncode)
                ]
                tail = "".join(logs[first][-12:]).rstrip()
                stopped = f" ({'; '.join(others)})" if others else ""
                raise DistributedRunError(
                    f"the {nproc}-rank run failed: rank {first} exited with code {procs[first].returncode}; "
                    f"every other rank was stopped{stopped}. Last lines of rank {first}:\n{tail}",
                    _joined(logs),
                    [p.pid for p in procs],
                )
            if time.monotonic() > deadline:
                _stop(procs)
                collect()
                raise DistributedRunError(
                    f"the {nproc}-rank run exceeded its timeout of {timeout:g} s; all {nproc} ranks were stopped",
                    _joined(logs),
                    [p.pid for p in procs],
                )
    except BaseException:
        _stop(
            procs
        )  # also on KeyboardInterrupt (the notebook's stop button): never leave ranks behind
        raise
    finally:
        del store  # closes its socket


def _finished(log: list[str], code: int | None) -> bool:
    """A rank that printed FINISHED and then ended by a signal (negative code) did its work."""
    return code is not None and code < 0 and any(line.rstrip("\n") == FINISHED for line in log)


def _joined(logs: list[list[str]]) -> str:
    return "".join(f"[rank {r}] {line}" for r, log in enumerate(logs) for line in log)
