"""Joining Ray from the CLI: an unreachable $RAY_ADDRESS fails within the connect timeout, a
refused connection (token authentication) is one error line, and the local Ray a command starts
leaves no session folder behind."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tagger.cli import app
from tagger.errors import ConfigError
from tagger.pipeline.raycluster import host_port
from tagger.toyworld.export import export_scenes

from raytools import ENV

runner = CliRunner()


def test_host_port():
    assert host_port("10.0.0.5:6380") == ("10.0.0.5", 6380)
    assert host_port("head-svc") == ("head-svc", 6379)
    assert host_port("ray://head-svc") == ("head-svc", 10001)
    assert host_port("ray://[::1]:10002") == ("::1", 10002)
    assert host_port("auto") is None
    with pytest.raises(ConfigError, match="no valid port"):
        host_port("head:port")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def images(tmp_path) -> Path:
    export_scenes(tmp_path / "images", 2)
    return tmp_path / "images"


def test_unreachable_address_fails_fast_in_one_line(images, tmp_path):
    env = {**ENV, "RAY_ADDRESS": f"127.0.0.1:{_closed_port()}", "TAGGER_RAY_CONNECT_TIMEOUT": "3"}
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "tagger.cli", "encode", str(images), "-w", str(tmp_path / "ws")],
                         capture_output=True, text=True, timeout=240, env=env)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-3000:]
    assert lines[0].startswith("error: cannot reach the Ray cluster at 127.0.0.1:") and "within 3 s" in lines[0]
    assert time.monotonic() - t0 < 120


def test_token_auth_refusal_is_one_line(images, tmp_path, monkeypatch):
    import ray

    def refuse(*args, **kwargs):  # what ray.init raises against a cluster with token auth enabled
        raise ConnectionError("Failed to connect to GCS: UNAUTHENTICATED: Invalid or missing authentication "
                              "token. Set RAY_AUTH_TOKEN.\nTraceback (most recent call last): ...")

    with socket.socket() as head:  # something listens at the address, as a real head would
        head.bind(("127.0.0.1", 0))
        head.listen()
        monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{head.getsockname()[1]}")
        monkeypatch.setattr(ray, "init", refuse)
        # a real head answers the gRPC handshake; this stand-in only listens
        monkeypatch.setattr("tagger.pipeline.raycluster._grpc_ready", lambda *args: True)
        out = runner.invoke(app, ["encode", str(images), "-w", str(tmp_path / "ws")], catch_exceptions=False)
    assert out.exit_code == 2, out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr
    assert "requires token authentication" in lines[0] and "RAY_AUTH_TOKEN" in lines[0]


def _sessions(ray_tmp: Path) -> list[str]:
    root = ray_tmp / "ray"
    return sorted(p.name for p in root.iterdir() if p.name.startswith("session")) if root.exists() else []


def test_local_ray_leaves_no_session_folder(tmp_path, monkeypatch):
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths must fit
    try:
        for k, v in {**ENV, "RAY_TMPDIR": str(ray_tmp)}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        export_scenes(tmp_path / "a", 2)
        (tmp_path / "a" / "notes.txt").write_text("not an image")
        export_scenes(tmp_path / "b", 2, start=2)
        ws = str(tmp_path / "ws")
        before = _sessions(ray_tmp)
        summaries = []
        for folder in ("a", "b"):
            out = runner.invoke(app, ["encode", str(tmp_path / folder), "-w", ws, "--json"], catch_exceptions=False)
            assert out.exit_code == 0, out.output
            summaries.append(json.loads([x for x in out.stdout.splitlines() if x.startswith("{")][-1]))
        assert [s["encoded"] for s in summaries] == [2, 2]
        assert summaries[0]["skipped"] == 1 and summaries[0]["skipped_why"] == "1 with extension .txt"
        assert summaries[1]["skipped"] == 0 and [s["listed"] for s in summaries] == [2, 2]
        assert _sessions(ray_tmp) == before == []
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_command_line_that_is_not_utf8_is_one_clear_error_before_ray_starts(monkeypatch):
    from tagger.errors import ClusterError
    from tagger.pipeline import raycluster

    class NoRay:
        def init(self, **kw):  # reaching it would mean Ray was started
            raise AssertionError("ray.init was called")

    monkeypatch.setattr(sys, "orig_argv", ["tagger", "encode", "/p/nu\udce9"])  # b"/p/nu\xe9", as os passes it
    with pytest.raises(ClusterError, match=r"not UTF-8 text \(b'/p/nu\\xe9'\).*glob"):
        raycluster._init(NoRay(), None, None)


ACTOR_POOL_LARGER_THAN_ITS_INPUT = """
import logging, sys
from tagger.pipeline.raycluster import ray_session
logging.basicConfig(level=getattr(logging, sys.argv[1]))

class Same:
    def __call__(self, batch):
        return batch

with ray_session(num_cpus=2) as ray:
    ray.data.from_items([{"a": 1}], override_num_blocks=1).map_batches(Same, concurrency=2, batch_size=1).take_all()
print("done")
"""


@pytest.mark.ray
def test_rays_own_python_warnings_are_hidden_unless_verbose(tmp_path):
    """Ray Data's UserWarning that an actor pool is larger than its input (tag --concurrency 1000, a nightly
    with no image) reached stderr without -v."""
    runs = {}
    for level in ("WARNING", "INFO"):
        out = subprocess.run([sys.executable, "-c", ACTOR_POOL_LARGER_THAN_ITS_INPUT, level], capture_output=True,
                             text=True, timeout=300, env=ENV, cwd=Path(__file__).resolve().parents[1])
        assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr[-3000:]
        runs[level] = out.stderr
    assert "The minimum number of concurrent actors" in runs["INFO"]  # what -v shows
    assert "Warning" not in runs["WARNING"] and "warnings.warn" not in runs["WARNING"], runs["WARNING"][-3000:]
