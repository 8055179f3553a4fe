"""`tagger report`: the static report site of a run, written to a folder outside the workspace (or
the workspace's own ``report/`` folder, the default)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import (
    DEFAULT_WORKSPACE, QUICK_WAIT, JsonOpt, WaitOpt, WorkspaceOpt, console, fail, open_catalog, print_summary,
    reported, workspace_at,
)

__all__ = ["report_cmd"]


def _site_folder(out: Path | None, ws_root: Path) -> Path:
    """The report's folder: ``<workspace>/report``, or ``out`` checked as an export target (outside
    the workspace, a folder or nothing yet, its parent existing and writable)."""
    from ..targets import check_out_dir
    from ..workspace import Workspace
    default = Workspace(ws_root).report_dir
    if out is None or Path(os.path.abspath(out)) == default:
        return default
    return check_out_dir(out, ws_root, option="--out", create=False)


def report_cmd(
    run: Annotated[Optional[int], typer.Option("--run", help="the tag run (default: the current one)")] = None,
    against: Annotated[Optional[int], typer.Option(
        "--against", help="also a diff page: what changed from this older run to RUN")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help=(
            "the site's folder outside the workspace: new (its parent must exist), empty, or an earlier "
            "report (default: <workspace>/report)"))] = None,
    max_images: Annotated[int, typer.Option(
        "--max-images", min=1, help=(
            "thumbnails per page at most (and tags in the review queue): keeps the site small"))] = 24,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    wait: WaitOpt = QUICK_WAIT,
    as_json: JsonOpt = False,
) -> None:
    """Build a static report of a run (overview, a page per label, a diff with --against, a review
    queue whose decisions `tagger review import` reads); open its index.html from disk."""
    from ..report.site import ReportConfig, build_report
    ws = workspace_at(workspace)
    cfg = ReportConfig(max_images=max_images)
    with reported(), open_catalog(workspace, read_only=True, wait=wait) as cat:
        site = _site_folder(out, ws.root)
        try:
            summary = build_report(cat, ws.root, site, run_id=run, against=against, cfg=cfg)
        except OSError as e:
            fail(f"cannot write the report to {site}: {(e.strerror or type(e).__name__).lower()}")
    print_summary("report", summary, as_json)
    if not as_json:
        console.print(f"open {os.path.join(summary['out'], 'index.html')}", markup=False)
