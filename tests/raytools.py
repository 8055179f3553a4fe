"""Helpers shared by the tests that run Ray in subprocesses."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# loopback Ray without token auth (a stray ~/.ray/auth_token would switch it on) or usage stats
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
RAY = str(Path(sys.executable).parent / "ray")
REPO = Path(__file__).resolve().parents[1]


def stop_orphaned_ray() -> None:
    """A driver killed with os._exit leaves its local Ray processes behind: stop them."""
    subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120, env=ENV)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job_server_ready(address: str) -> bool:
    """Whether the job server at ``address`` runs a no-op job."""
    out = subprocess.run([RAY, "job", "submit", "--address", address, "--", "true"],
                         capture_output=True, text=True, timeout=120, env=ENV)
    return out.returncode == 0


def wait_for_job_server(address: str, timeout_s: float = 120) -> None:
    """`ray start` returns before the job agent accepts jobs: submit a no-op until one succeeds."""
    deadline = time.time() + timeout_s
    while not job_server_ready(address):
        if time.time() > deadline:
            raise RuntimeError(f"Ray job server at {address} never became ready")
        time.sleep(2)


def submit(address: str, *args: str, ok: bool = True) -> dict:
    """`ray job submit` a job module and return its JSON summary (last stdout line); with
    ``ok=False`` the job must fail (a crash test) and nothing is returned."""
    runtime_env = json.dumps({"working_dir": str(REPO),
                              "excludes": [".venv", ".git", ".mypy_cache", "tests", "bench", "*.duckdb", "workspace*"]})
    cmd = [RAY, "job", "submit", "--address", address, "--runtime-env-json", runtime_env,
           "--", sys.executable, "-m", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=ENV)
    if not ok:
        assert out.returncode != 0 and "succeeded" not in (out.stdout + out.stderr).lower(), out.stdout[-3000:]
        return {}
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "succeeded" in (out.stdout + out.stderr).lower(), out.stdout[-3000:]
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1])


def _session_of(pid: int) -> tuple[int, str] | None:
    """(session id, state) of a process from /proc; None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[3]), fields[0]


def session_processes(sid: int) -> list[int]:
    """The live (not zombie) processes of session ``sid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _session_of(int(entry))
            if info is not None and info[0] == sid and info[1] != "Z":
                pids.append(int(entry))
    return pids


class RayNode:
    """One `ray start --block` node with a temp dir of its own, in a session of its own, so that
    :meth:`stop` ends exactly its processes (its daemons, workers and job drivers), never another
    Ray of the machine (`ray stop` would stop them all)."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        # short: Ray's unix socket paths live under the temp dir and have a length limit
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
        self.log = self.temp_dir / "ray-start.log"
        cmd = [RAY, "start", "--block", "--node-ip-address", "127.0.0.1", "--temp-dir", str(self.temp_dir),
               "--dashboard-agent-listen-port", str(free_port()), "--object-store-memory", str(200 << 20),
               "--disable-usage-stats", *args]
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen(cmd, env=ENV, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def running(self) -> bool:
        """False once `ray start` has ended (it ends when the node fails to start, or dies)."""
        return self.proc.poll() is None

    def log_tail(self, n: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM every process of the node's session, SIGKILL what is left after ``timeout_s``."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in session_processes(self.proc.pid):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + timeout_s
            while session_processes(self.proc.pid) and time.time() < deadline:
                time.sleep(0.5)
            if not session_processes(self.proc.pid):
                break
        self.proc.wait(timeout=30)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
