"""`tagger status` (what a workspace holds: images, errors, labels, the current run and its head, the
newest tag run, a job running now, disk used) and `tagger --version`."""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..catalog.runs import LEFT_RUNNING
from ..pipeline.progress import show_progress
from .options import (
    DEFAULT_WORKSPACE, QUICK_WAIT, JsonOpt, WaitOpt, WorkspaceOpt, open_catalog, print_summary, reported,
    workspace_at,
)

__all__ = ["INTERRUPTED", "quiet_warnings", "register", "status_cmd"]

#: How a run marked 'running' reads while no job runs: its job ended (killed); the next tag job resumes
#: it when its inputs are the same, or marks it failed.
INTERRUPTED = f"interrupted: {LEFT_RUNNING}"


def _disk_bytes(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def status_cmd(
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    wait: WaitOpt = QUICK_WAIT,
    as_json: JsonOpt = False,
) -> None:
    """What the workspace holds: images (encoded, pending, errors), labels, decisions, the current run and
    its head, the newest tag run, a job running now, and disk used."""
    from ..catalog.status import catalog_status
    ws = workspace_at(workspace)
    with reported(), open_catalog(ws.root, read_only=True, wait=wait) as cat:
        summary: dict[str, Any] = {"workspace": str(ws.root), "model": ws.model()[0], **catalog_status(cat)}
    from ..catalog import running_job
    summary["job_running"] = running_job(ws.catalog)
    if summary.get("last_tag_status") == "running" and summary["job_running"] is None:
        summary["last_tag_status"] = INTERRUPTED
    summary["disk_used"] = _size(_disk_bytes(ws.root))
    print_summary("status", summary, as_json)


def _version(value: bool) -> None:
    if value:
        from .. import __version__
        typer.echo(f"tagger {__version__}")
        raise typer.Exit()


def quiet_warnings() -> None:
    """Hide deprecation and future-change notices (the libraries', Ray's) unless ``-v`` is given."""
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)


def _main(
    version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version, is_eager=True, help="print the version and exit")] = None,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="show progress logs, Ray's own logs and warnings, and deprecation notices")] = False,
) -> None:
    """Tag image collections with labels nobody annotated."""
    show_progress(True)  # encode, tag and nightly: a bar on a terminal, plain lines in a log
    if verbose:
        logging.getLogger().setLevel(logging.INFO)
        for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
            warnings.filterwarnings("default", category=category)


def register(app: typer.Typer) -> None:
    """Add ``status`` and ``--version`` to the CLI."""
    app.command("status")(status_cmd)
    app.callback()(_main)
