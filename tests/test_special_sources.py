"""`tagger encode` on a folder holding special files with image names: a FIFO named pipe.jpg (opening
it would block for ever) and a link x.jpg to /dev/zero (it never ends) are skipped with their reasons,
the real images are encoded, and an image over the size cap becomes an error row."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from tagger.catalog import Catalog
from tagger.toyworld.export import export_scenes
from tagger.workspace import Workspace

from raytools import ENV


def test_encode_skips_a_fifo_and_a_device_link_and_caps_sizes(tmp_path):
    src = tmp_path / "src"
    export_scenes(src, 3)
    os.mkfifo(src / "pipe.jpg")
    (src / "x.jpg").symlink_to("/dev/zero")
    images = sorted(p for p in src.rglob("*") if p.is_file() and not p.is_symlink() and p.suffix != ".json"
                    and p.name != "pipe.jpg")
    sizes = sorted(p.stat().st_size for p in images)
    cap = sizes[-1] - 1  # the largest image is over it
    env = {**ENV, "TAGGER_MAX_IMAGE_BYTES": str(cap)}
    env.pop("RAY_ADDRESS", None)
    ws = tmp_path / "ws"
    out = subprocess.run([sys.executable, "-m", "tagger.cli", "encode", str(src), "-w", str(ws), "--json"],
                         capture_output=True, text=True, timeout=420, env=env)  # generous: hanging is the failure
    assert out.returncode == 0, out.stderr[-3000:]
    # piped: the progress is plain sentences on stderr, not a redrawn bar
    assert re.search(r"^encode \S+: \d+ / \d+ images \(100 %\) in \d+ s$", out.stderr, re.M), out.stderr[-2000:]
    assert "\r" not in out.stderr
    summary = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])
    assert "1 not a regular file (FIFO)" in summary["skipped_why"], summary
    assert "1 not a regular file (character device)" in summary["skipped_why"], summary
    with Catalog.open(Workspace(ws).catalog, read_only=True) as cat:
        rows = cat.query("SELECT uri, status, error FROM images ORDER BY uri")
    uris = [r[0] for r in rows]
    assert str(src / "pipe.jpg") not in uris and str(src / "x.jpg") not in uris
    errors = {u: e for u, s, e in rows if s == "error"}
    assert len(rows) == len(images) and len(errors) == sum(s > cap for s in sizes) >= 1, rows
    assert f"over the per-image limit of {cap} bytes" in next(iter(errors.values()))
