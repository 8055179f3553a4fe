"""A reader never stalls a job for long: a slow `tagger sql` query holds the catalog until its time
limit stops it, and a `tagger tag` job that started meanwhile (waiting up to --wait for the file)
finishes. Without the limit the query would run for hours and the job would give up."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tagger.toyworld.export import export_scenes

from raytools import ENV

pytestmark = pytest.mark.ray
SLOW = "SELECT count(*) FROM range(1000000000000)"


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in ENV.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, "-m", "tagger.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _wait_until_open(proc: subprocess.Popen, path: Path, limit: float = 120.0) -> None:
    """Until ``proc`` holds ``path`` open (a loaded machine takes seconds to start Python), then a moment
    for its query to begin."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        fds = Path(f"/proc/{proc.pid}/fd")
        try:
            if any(os.path.realpath(fd) == str(path.resolve()) for fd in fds.iterdir()):
                time.sleep(1.0)
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the reader never opened {path}")


def test_a_slow_query_is_stopped_while_a_tag_job_finishes(tmp_path):
    images, ws = tmp_path / "images", str(tmp_path / "ws")
    export_scenes(images, 3)
    for args in (("labels", "add", "--toy"), ("encode", str(images), "--model", "toy-vit"),
                 ("generate-text", "--n-sentences", "200"), ("train",)):
        out = _cli(*args, "-w", ws)
        assert out.returncode == 0, (args, out.stderr[-3000:])
    env = {k: v for k, v in ENV.items() if k != "RAY_ADDRESS"}
    reader = subprocess.Popen([sys.executable, "-m", "tagger.cli", "sql", SLOW, "-w", ws, "--timeout", "20"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _wait_until_open(reader, Path(ws) / "catalog.duckdb")  # the query runs and holds the catalog
    assert reader.poll() is None, reader.communicate()
    blocked = _cli("labels", "add", "extra", "-w", ws, "--wait", "0")  # a writer cannot get in now
    assert blocked.returncode == 2 and "locked by a reader" in blocked.stderr, blocked.stderr
    tag = _cli("tag", "-w", ws, "--wait", "120", "--json")
    _, err = reader.communicate(timeout=120)
    assert reader.returncode == 2 and err.strip() == (
        "error: query stopped after its time limit of 20 s (--timeout SECONDS or $TAGGER_SQL_TIMEOUT; 0: no limit)"), err
    assert tag.returncode == 0, tag.stderr[-3000:]
    summary = json.loads([ln for ln in tag.stdout.splitlines() if ln.startswith("{")][-1])
    assert summary["n_images"] == 3
