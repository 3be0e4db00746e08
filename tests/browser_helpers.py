"""Helpers for tests/test_browser.py: a JupyterLab server and a headless Chromium we own by PID.

Why by PID: the browser test starts two long-lived programs (a Jupyter server, which in turn
starts a kernel, and Chromium, which starts a dozen helper processes). A test that dies half-way
must not leave any of them running on a shared 2-core machine, so each one is started in its own
process group, every descendant is recorded, and `stop_process_tree` checks afterwards that every
recorded PID is really gone.

Chromium is Debian's `/usr/bin/chromium` (installed by scripts/install_browser.sh): Playwright
cannot download its own browser here. We start it ourselves with `--remote-debugging-port=0` and
let Playwright attach over the DevTools protocol (`connect_over_cdp`), so the PID is ours.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
JUPYTER = Path(sys.executable).with_name("jupyter")

# Flags for a quiet, isolated, offline headless browser (no sandbox: we run as root in a container).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
]

# JupyterLab settings for the test server: fetch no news (no internet, no pop-up), and attach
# every cell to the DOM so the test can see all prompts and outputs without scrolling.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 10.0) -> tuple[int, dict, str]:
    """GET without following redirects: returns (status, headers, body text)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode("utf-8", "replace")


def http_json(url: str, method: str = "GET", timeout: float = 10.0):
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
    return json.loads(body) if body else None


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(p: psutil.Process) -> bool:
    """True while the process runs (a zombie waiting for its parent counts as gone)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop_process_tree(proc: subprocess.Popen, known: list[psutil.Process], name: str) -> None:
    """Stop `proc` (leader of its own process group) and every process in `known`, by PID.

    SIGTERM to the group first (lets Jupyter shut its kernel down and Chromium close cleanly),
    SIGKILL after a grace period, then SIGKILL to any recorded descendant that escaped the group
    (Jupyter starts kernels in a session of their own). Raises if any recorded PID survives.
    """
    known = known + _descendants(proc.pid)
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in known):
        time.sleep(0.2)
    for p in known:
        if _alive(p):
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
    psutil.wait_procs([p for p in known if _alive(p)], timeout=5)
    survivors = [p.pid for p in known if _alive(p)]
    if proc.poll() is None or survivors:
        raise RuntimeError(
            f"{name}: processes still running after stop: "
            f"leader {proc.pid} alive={proc.poll() is None}, others {survivors}"
        )


class JupyterLab:
    """`jupyter lab` on a free loopback port with token auth, serving `root` (a temp folder)."""

    def __init__(self, root: Path, workdir: Path, env: dict[str, str]):
        self.root, self.workdir = root, workdir
        self.port = free_port()
        self.token = secrets.token_hex(24)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "jupyter.log"
        settings = workdir / "lab-settings"
        for rel, value in LAB_SETTINGS.items():
            f = settings / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(value))
        for d in ("runtime", "config", "data", "workspaces"):
            (workdir / d).mkdir(exist_ok=True)
        # Isolated Jupyter dirs: no user config, no user kernelspec shadowing the venv's python3.
        self.env = dict(
            env,
            JUPYTER_RUNTIME_DIR=str(workdir / "runtime"),
            JUPYTER_CONFIG_DIR=str(workdir / "config"),
            JUPYTER_DATA_DIR=str(workdir / "data"),
        )
        self.cmd = [
            str(JUPYTER),
            "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={root}",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={workdir / 'workspaces'}",
            "--LabApp.news_url=None",
            "--LabApp.extension_manager=readonly",  # offline: ask no website
        ] + (["--allow-root"] if os.geteuid() == 0 else [])  # containers and CI often run as root
        self.proc: subprocess.Popen | None = None
        self.known: list[psutil.Process] = []

    def start(self, timeout: float = 90) -> None:
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=self.root,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"jupyter lab exited with {self.proc.returncode} before answering; "
                    f"log:\n{_tail(self.log_path)}"
                )
            try:
                status, _, _ = http_get(f"{self.base}/api/status?token={self.token}", timeout=3)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(
            f"jupyter lab did not answer on {self.base} within {timeout:.0f} s; "
            f"log:\n{_tail(self.log_path)}"
        )

    def api(self, path: str, method: str = "GET"):
        sep = "&" if "?" in path else "?"
        return http_json(f"{self.base}{path}{sep}token={self.token}", method=method)

    def kernel_states(self) -> list[str] | None:
        """Execution states of the server's kernels; None when the server could not say just now
        (listing kernels while one is starting can answer 500 for a moment): callers poll again."""
        try:
            return [k["execution_state"] for k in self.api("/api/kernels")]
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return None

    def record_children(self) -> None:
        """Remember the kernel PIDs now, so `stop` can check they are gone too."""
        if self.proc is not None:
            seen = {p.pid for p in self.known}
            self.known += [p for p in _descendants(self.proc.pid) if p.pid not in seen]

    def log_tail(self) -> str:
        return _tail(self.log_path)

    def stop(self) -> None:
        if self.proc is not None:
            self.record_children()
            stop_process_tree(self.proc, self.known, "jupyter lab")


class Chromium:
    """Headless Debian Chromium with a fresh profile and a DevTools port Playwright attaches to."""

    def __init__(self, workdir: Path):
        self.profile = workdir / "chromium-profile"
        self.profile.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "chromium.log"
        self.proc: subprocess.Popen | None = None
        self.known: list[psutil.Process] = []

    def start(self, timeout: float = 60) -> str:
        """Start the browser; return the DevTools endpoint URL for `connect_over_cdp`."""
        log = open(self.log_path, "wb")
        cmd = [
            str(CHROMIUM),
            *CHROMIUM_FLAGS,
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={self.profile}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        port_file = self.profile / "DevToolsActivePort"  # Chromium writes "<port>\n<path>" here
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"chromium exited with {self.proc.returncode}; log:\n{_tail(self.log_path)}"
                )
            if port_file.exists():
                lines = port_file.read_text().split()
                if lines and lines[0].isdigit():
                    self.known = _descendants(self.proc.pid)
                    return f"http://127.0.0.1:{lines[0]}"
            time.sleep(0.2)
        raise RuntimeError(
            f"chromium wrote no DevTools port within {timeout:.0f} s; log:\n{_tail(self.log_path)}"
        )

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_tree(self.proc, self.known, "chromium")
