"""Readers and jobs share the catalog: jobs hold the DuckDB file only for their short writes.

Real processes hold the locks (a job mid-run, a reader mid-query); the drivers run for real up to
the point where their Ray job would start, where a separate `tagger` process must be able to read.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import tagger.pipeline.raycluster
from tagger.catalog import Catalog, JobLock
from tagger.cli import app
from tagger.pipeline.encode import EncodeConfig, run_encode
from tagger.errors import CatalogLockedError, JobLockedError
from tagger.pipeline.tag import run_tag
from tagger.workspace import Workspace

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace.at(tmp_path / "ws")
    with Catalog.open(ws.catalog) as cat:
        cat.add_labels(["star"])
    return ws


@contextmanager
def holding(script: str, *args: str, ready: str = "ready"):
    """Run ``script`` in another Python process until it prints ``ready``; yield the process."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == ready
        yield proc
    finally:
        if proc.poll() is None:
            proc.stdin.close()
            proc.wait(timeout=60)


READER = """
    import sys
    from tagger.catalog import Catalog
    with Catalog.open(sys.argv[1], read_only=True) as cat:
        cat.query("SELECT count(*) FROM labels")
        print("ready", flush=True)
        sys.stdin.readline()
"""

JOB = """
    import sys
    from tagger.catalog import Catalog
    with Catalog.for_job(sys.argv[1], "test-job") as cat:
        cat.add_labels(["first"])
        print("ready", flush=True)
        sys.stdin.readline()
        t = __import__("time").monotonic()
        cat.add_labels(["second"])
        print(f"done {__import__('time').monotonic() - t:.2f}", flush=True)
"""


def test_readers_and_short_writers_get_in_while_a_job_runs(ws):
    with holding(JOB, str(ws.catalog)) as job:
        with Catalog.open(ws.catalog, read_only=True, external_access=False) as ro:  # no wait needed
            assert sorted(ro.active_labels()) == ["first", "star"]
        out = invoke("sql", "SELECT name FROM labels ORDER BY name", "-w", str(ws.root), "--json", "--wait", "0")
        assert out.exit_code == 0 and '"name": "first"' in out.stdout, out.output
        out = invoke("labels", "add", "moon", "-w", str(ws.root), "--wait", "0")
        assert out.exit_code == 0, out.output
        with pytest.raises(JobLockedError, match=rf"another job is running.*test-job, PID {job.pid}"):
            Catalog.for_job(ws.catalog, "second job")
        # a reader holds the file when the job writes again: the job waits for it, it does not fail
        ro = Catalog.open(ws.catalog, read_only=True)
        job.stdin.write("go\n")
        job.stdin.flush()
        time.sleep(1.0)
        assert job.poll() is None
        ro.close()
        line = job.stdout.readline().split()
        assert line[0] == "done" and float(line[1]) >= 0.9
    with Catalog.open(ws.catalog, read_only=True) as ro:
        assert sorted(ro.active_labels()) == ["first", "moon", "second", "star"]


def test_writer_waits_for_a_reader_then_names_it(ws):
    with holding(READER, str(ws.catalog)) as reader:
        t = time.monotonic()
        out = invoke("labels", "add", "moon", "-w", str(ws.root), "--wait", "1")
        elapsed = time.monotonic() - t
        assert out.exit_code == 2 and 1.0 <= elapsed < 10
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in out.output, out.stderr
        assert f"locked by a reader, process {reader.pid} (" in lines[0] and "after waiting 1 s" in lines[0]
        with pytest.raises(CatalogLockedError, match=rf"locked by a reader, process {reader.pid} \(.*python"):
            Catalog.open(ws.catalog)
        threading.Timer(0.5, reader.stdin.close).start()  # the query ends half a second from now
        t = time.monotonic()
        out = invoke("labels", "add", "moon", "-w", str(ws.root), "--wait", "30")
        assert out.exit_code == 0 and time.monotonic() - t < 30, out.output
    with Catalog.open(ws.catalog, read_only=True) as ro:
        assert sorted(ro.active_labels()) == ["moon", "star"]


def test_reader_is_told_a_writer_holds_it_and_waits_for_it(ws):
    writer = """
        import sys
        from tagger.catalog import Catalog
        with Catalog.open(sys.argv[1]) as cat:
            print("ready", flush=True)
            sys.stdin.readline()
    """
    with holding(writer, str(ws.catalog)) as proc:
        out = invoke("runs", "list", "-w", str(ws.root), "--wait", "0")
        assert out.exit_code == 2 and f"locked by a writer, process {proc.pid}" in out.stderr, out.stderr
        threading.Timer(0.5, proc.stdin.close).start()
        out = invoke("runs", "list", "-w", str(ws.root), "--json", "--wait", "30")
        assert out.exit_code == 0, out.output


def test_a_killed_job_leaves_no_lock(ws):
    holder = """
        import sys, time
        from tagger.catalog import JobLock
        with JobLock(sys.argv[1], "doomed"):
            print("ready", flush=True)
            time.sleep(600)
    """
    with holding(holder, str(ws.catalog)) as proc:
        with pytest.raises(JobLockedError, match="doomed"):
            JobLock(ws.catalog, "next").acquire()
        proc.kill()
        proc.wait(timeout=60)
        with JobLock(ws.catalog, "next"), JobLock(ws.catalog, "nested"):  # re-entrant in one process
            pass


class _RayWouldStart(Exception):
    pass


def _read_from_another_process(ws: Workspace, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tagger.cli", *args, "-w", str(ws.root), "--json",
                           "--wait", "0"], capture_output=True, text=True, timeout=300)


@pytest.fixture
def ray_start(monkeypatch):
    """Stop a driver where its Ray job would start, after running the probes given in the list."""
    probes: list = []
    seen: list = []

    @contextmanager
    def session(*args, **kwargs):
        seen.extend(probe() for probe in probes)
        raise _RayWouldStart
        yield  # pragma: no cover

    monkeypatch.setattr(tagger.pipeline.raycluster, "ray_session", session)
    return probes, seen


def test_encode_driver_lets_readers_in_during_its_ray_job(ws, tmp_path, ray_start):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.jpg"):
        (folder / name).write_bytes(b"not decoded before the Ray job")
    ckpt = tmp_path / "toy.npz"
    np.savez(ckpt, w=np.zeros(1))
    probes, seen = ray_start
    probes.append(lambda: _read_from_another_process(ws, "sql", "SELECT count(*) AS n FROM images"))
    with pytest.raises(_RayWouldStart):
        run_encode(ws, str(folder), EncodeConfig(model="toy-vit", pretrained=str(ckpt)), progress=False)
    assert seen[0].returncode == 0, seen[0].stderr
    assert '"n": 3' in seen[0].stdout


def test_tag_driver_lets_readers_in_during_its_ray_job(ws, ray_start):
    with Catalog.open(ws.catalog) as cat:
        cat.add_classifier("clf", model_id="m@x", labels=["star"], path=str(ws.root / "clf"))
    probes, seen = ray_start
    probes.append(lambda: _read_from_another_process(ws, "runs", "list"))
    with pytest.raises(_RayWouldStart):
        run_tag(ws, "m@x")
    assert seen[0].returncode == 0, seen[0].stderr
    assert '"status": "running"' in seen[0].stdout and '"classifier_id": "clf"' in seen[0].stdout


def test_per_call_catalog_holds_no_connection_between_calls(ws):
    cat = Catalog.open(ws.catalog, hold=False)
    try:
        cat.add_labels(["moon"])
        with holding(READER, str(ws.catalog)):  # another process reads between two calls
            pass
        assert sorted(cat.active_labels()) == ["moon", "star"]
    finally:
        cat.close()
    with pytest.raises(Exception, match="closed"):
        cat.active_labels()
    held = Catalog.open(ws.catalog)  # the default keeps its connection: the reader cannot get in
    try:
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(READER), str(ws.catalog)],
                              input="", capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and "locked by a writer" in proc.stderr
    finally:
        held.close()
    assert Path(f"{ws.catalog}.job.lock").exists() is False


def test_job_verbs_wait_for_a_reader_and_refuse_a_second_job(ws):
    with holding(READER, str(ws.catalog)) as reader:
        t = time.monotonic()
        out = invoke("tag", "-w", str(ws.root), "--wait", "0.5")
        assert out.exit_code == 2 and time.monotonic() - t >= 0.5
        assert f"locked by a reader, process {reader.pid}" in out.stderr and "after waiting 0.5 s" in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    holder = """
        import sys
        from tagger.catalog import JobLock
        with JobLock(sys.argv[1], "nightly"):
            print("ready", flush=True)
            sys.stdin.readline()
    """
    with holding(holder, str(ws.catalog)) as job:
        out = invoke("tag", "-w", str(ws.root), "--wait", "30")
        assert out.exit_code == 2 and "another job is running" in out.stderr and f"PID {job.pid}" in out.stderr
        out = invoke("sql", "SELECT count(*) AS n FROM labels", "-w", str(ws.root), "--json", "--wait", "0")
        assert out.exit_code == 0 and '"n": 1' in out.stdout, out.output
