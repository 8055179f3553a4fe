"""A `$RAY_ADDRESS` that is not a Ray head never hangs a command: a listener that accepts and never
answers, an HTTP server (the dashboard's port), a closed port each end in one `error:` line within
the connect timeout; the dashboard's `http://` form (what `ray job submit` takes) is refused with the
form to use; SIGTERM stops the command while it probes, and while a join blocks inside Ray."""
from __future__ import annotations

import http.server
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tagger.errors import ClusterError
from tagger.pipeline.raycluster import check_address
from tagger.toyworld.export import export_scenes

from raytools import ENV

GENEROUS = 240  # seconds: a hang is the failure, not a slow machine


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ray-address") / "images"
    export_scenes(folder, 2)
    return folder


def _encode(images: Path, ws: Path, address: str, timeout_s: str = "3", **popen) -> subprocess.Popen:
    env = {**ENV, "RAY_ADDRESS": address, "TAGGER_RAY_CONNECT_TIMEOUT": timeout_s}
    return subprocess.Popen([sys.executable, "-m", "tagger.cli", "encode", str(images), "-w", str(ws)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **popen)


class Silent:
    """A listener that accepts connections and never says a word."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        try:
            while True:
                self.held.append(self.sock.accept()[0])
        except OSError:
            pass

    def close(self) -> None:
        for c in self.held:
            c.close()
        self.sock.close()


@pytest.fixture
def silent():
    s = Silent()
    yield s
    s.close()


@pytest.fixture
def dashboard():
    """An HTTP server, as the Ray dashboard's port is."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_error_line(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=GENEROUS)
    lines = err.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (proc.returncode, err[-3000:])
    return lines[0]


def test_a_listener_that_never_answers(images, tmp_path, silent):
    line = _one_error_line(_encode(images, tmp_path / "ws", f"127.0.0.1:{silent.port}"))
    assert f"the Ray cluster at 127.0.0.1:{silent.port} did not answer within 3 s" in line
    assert "does not answer as a Ray head" in line and "HOST:6379" in line
    assert not (tmp_path / "ws" / "shards").exists()


def test_a_dashboard_port(images, tmp_path, dashboard):
    line = _one_error_line(_encode(images, tmp_path / "ws", f"127.0.0.1:{dashboard}"))
    assert "it is an HTTP server (a dashboard's port?), not a Ray head" in line


def test_a_closed_port(images, tmp_path):
    port = _closed_port()
    line = _one_error_line(_encode(images, tmp_path / "ws", f"127.0.0.1:{port}"))
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port} within 3 s" in line


def test_the_http_form_is_refused_naming_the_right_one(images, tmp_path, dashboard):
    line = _one_error_line(_encode(images, tmp_path / "ws", f"http://127.0.0.1:{dashboard}"))
    assert "is a dashboard address, which `ray job submit` takes" in line
    assert "set RAY_ADDRESS=127.0.0.1:6379 (or ray://127.0.0.1:10001)" in line
    for address in ("https://head:8265", "HTTP://head:8265/"):
        with pytest.raises(ClusterError, match="RAY_ADDRESS=head:6379"):
            check_address(address)
    check_address("head:6379")
    check_address("ray://head:10001")


def test_sigterm_stops_a_command_while_it_probes(images, tmp_path, silent):
    proc = _encode(images, tmp_path / "ws", f"127.0.0.1:{silent.port}", timeout_s="600")
    deadline = time.monotonic() + GENEROUS
    while not silent.held and time.monotonic() < deadline:  # it is probing
        time.sleep(0.2)
    assert silent.held, "the command never reached the listener"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode in (-signal.SIGTERM, 128 + signal.SIGTERM)


HANGING_GCS = """
import sys, time
from concurrent import futures
import grpc

class Hang(grpc.GenericRpcHandler):
    def service(self, details):
        return grpc.unary_unary_rpc_method_handler(lambda request, context: time.sleep(3600) or b"")

server = grpc.server(futures.ThreadPoolExecutor(8), handlers=[Hang()])
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
server.wait_for_termination()
"""


@pytest.mark.ray
def test_sigterm_stops_a_join_blocked_inside_ray(images, tmp_path):
    """A gRPC server that completes the handshake but never answers a call: Ray's client blocks (and
    its SIGTERM handler cannot run); the command still stops at once with one error line."""
    gcs = subprocess.Popen([sys.executable, "-c", HANGING_GCS], stdout=subprocess.PIPE, text=True)
    try:
        port = int(gcs.stdout.readline())
        proc = _encode(images, tmp_path / "ws", f"127.0.0.1:{port}", timeout_s="5")
        time.sleep(12)  # past the probe, inside ray.init
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
        assert err.strip().splitlines()[-1] == f"error: stopped by SIGTERM while joining the Ray cluster at 127.0.0.1:{port}"
    finally:
        gcs.kill()
        gcs.wait(timeout=30)


SESSION_THEN_WAIT = """
import time
from tagger.pipeline.raycluster import ray_session
with ray_session():
    print("up", flush=True)
    time.sleep(300)
"""


@pytest.mark.ray
def test_sigterm_inside_a_ray_session_exits_143_after_its_clean_up(tmp_path):
    """SIGTERM during a stage that runs on Ray (tag) exited with 15, Ray's handler's status; elsewhere 143."""
    proc = subprocess.Popen([sys.executable, "-c", SESSION_THEN_WAIT], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        assert proc.stdout.readline().strip() == "up", proc.stderr.read()[-3000:] if proc.poll() is not None else ""
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


class _FlakyRay:
    """Stands in for the ray module at start-up: ``init`` fails ``fails`` times, as a loaded machine's
    start does (its GCS not up in time), then succeeds."""

    class exceptions:
        RayError = type("RayError", (Exception,), {})

    def __init__(self, fails: int, error: Exception | None = None) -> None:
        self.fails, self.inits, self.shutdowns = fails, [], 0
        self.error = error or RuntimeError("Failed to connect to GCS within 60 seconds. GCS may have been killed.")

    def init(self, **kw):
        self.inits.append(kw)
        if len(self.inits) <= self.fails:
            raise self.error

    def shutdown(self):
        self.shutdowns += 1


def test_a_local_ray_that_fails_to_start_is_tried_again_then_named(monkeypatch, caplog):
    from tagger.pipeline import raycluster
    monkeypatch.setattr(raycluster, "LOCAL_START_RETRY_S", 0.0)
    once = _FlakyRay(fails=1)
    raycluster._start_local(once, {"log_to_driver": False})
    assert [kw["address"] for kw in once.inits] == ["local", "local"] and once.shutdowns == 1
    assert "did not start" in caplog.text
    never = _FlakyRay(fails=2)
    with pytest.raises(ClusterError, match="could not start a local Ray .*GCS.* run the command again"):
        raycluster._start_local(never, {})
    assert len(never.inits) == 2 and never.shutdowns == 2
    # Ray's node start raises a bare Exception when its raylet is not up in time (a loaded machine)
    slow = _FlakyRay(fails=2, error=Exception("The current node timed out during startup. This could happen "
                                              "because some of the raylet failed to startup"))
    with pytest.raises(ClusterError, match="could not start a local Ray .*timed out during startup"):
        raycluster._start_local(slow, {})
    assert len(slow.inits) == 2 and slow.shutdowns == 2
