"""Review, export and report commands: people's accept / reject decisions on tags (``review``), a
run's tags in other tools' formats (``export``) and the static report site (``report``)."""
from __future__ import annotations

import getpass
import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import (
    DEFAULT_WORKSPACE, QUICK_WAIT, JsonOpt, WaitOpt, WorkspaceOpt, console, emit_rows, err_console, fail,
    open_catalog, output_format, print_summary, reported,
)

__all__ = ["export_cmd", "report_cmd", "review_app"]

review_app = typer.Typer(no_args_is_help=True, help=(
    "Accept or reject tags: every later tag and nightly run keeps them (provenance 'person')."))

WhoOpt = Annotated[Optional[str], typer.Option(
    "--who", help="the reviewer's name stored with each decision (default: the login name)")]
RunOpt = Annotated[Optional[int], typer.Option("--run", help="the tag run (default: the current one)")]


def _who(name: str | None) -> str:
    if name and name.strip():
        return name.strip()
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in a container
        return "unknown"


def _uri(text: str) -> str:
    """A URI as the catalog stores it (local paths absolute)."""
    from ..pipeline.sources import normalize_uri
    return normalize_uri(text)


def _record(workspace: Path, rows: list[tuple[str, str, str]], who: str | None, source: str, wait: float,
            as_json: bool) -> None:
    with reported(), open_catalog(workspace, read_only=False, wait=wait) as cat:
        summary = cat.record_decisions([(_uri(u), lab, d) for u, lab, d in rows], who=_who(who), source=source)
    print_summary("review decisions", summary, as_json)


def _decide(decision: str):
    def command(
        uri: Annotated[str, typer.Argument(help="the image (path or URI, as the catalog lists it)")],
        label: Annotated[str, typer.Argument(help="the label")],
        who: WhoOpt = None,
        workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
        wait: WaitOpt = QUICK_WAIT,
        as_json: JsonOpt = False,
    ) -> None:
        _record(workspace, [(uri, label, decision)], who, "cli", wait, as_json)
    command.__doc__ = (f"{decision.capitalize()} LABEL on the image URI: the current run's tag and every later "
                       f"run's {'stay on' if decision == 'accept' else 'stay off'}.")
    return command


review_app.command("accept")(_decide("accept"))
review_app.command("reject")(_decide("reject"))


@review_app.command("import")
def review_import(
    file: Annotated[Path, typer.Argument(dir_okay=False, help=(
        "a CSV of uri,label,decision rows (accept or reject), or the JSON file the report's review queue downloads"))],
    who: WhoOpt = None,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    wait: WaitOpt = QUICK_WAIT,
    as_json: JsonOpt = False,
) -> None:
    """Record every decision of FILE (all or none: an unknown image or label stores nothing)."""
    from ..report.decisions import read_decisions
    with reported():
        rows, source = read_decisions(file)
    _record(workspace, rows, who, source, wait, as_json)


@review_app.command("list")
def review_list(
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    wait: WaitOpt = QUICK_WAIT,
    as_json: JsonOpt = False,
) -> None:
    """List the stored decisions, oldest first (the latest decision of an image and label wins)."""
    with reported(), open_catalog(workspace, read_only=True, wait=wait) as cat:
        rows = cat.review_decisions()
    cols = ("uri", "label", "decision", "who", "decided_at", "source")
    emit_rows(cols, [tuple(r[c] for c in cols) for r in rows], output_format(as_json), title=f"{len(rows)} decision(s)")


# -- export --------------------------------------------------------------------------------------
class ExportFormat(str, Enum):
    XMP = "xmp"
    CSV = "csv"
    JSONL = "jsonl"
    PARQUET = "parquet"


def export_cmd(
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help=(
        "xmp: a sidecar per image (dc:subject, lr:hierarchicalSubject; other fields kept); csv, jsonl, "
        "parquet: one row per tag"))],
    run: RunOpt = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", dir_okay=False, help="table formats: the file to write (default: tags-run<N>.<format>)")] = None,
    positive_only: Annotated[bool, typer.Option("--positive-only", help="table formats: positive tags only")] = False,
    mirror: Annotated[Optional[Path], typer.Option(
        "--mirror", file_okay=False, help="xmp: write the sidecars under this folder (same paths) instead of "
                                          "beside the images, e.g. for read-only sources")] = None,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    wait: WaitOpt = QUICK_WAIT,
    as_json: JsonOpt = False,
) -> None:
    """Export a run's tags: XMP sidecars for photo tools, or a CSV / JSON lines / Parquet table with
    uri, run, label, score, confidence, positive and provenance (model or person)."""
    from ..export import export_run
    with reported(), open_catalog(workspace, read_only=True, wait=wait) as cat:
        summary = export_run(cat, fmt.value, run_id=run, out=out, positive_only=positive_only, mirror=mirror)
    print_summary(f"export {fmt.value}", summary, as_json)
    if summary.get("remote"):
        err_console.print(f"warning: {summary['remote']} remote image(s) skipped: give --mirror DIR for their "
                          "sidecars", markup=False)
    if summary.get("failed"):
        fail(f"{summary['failed']} sidecar(s) not written, e.g. {summary['first_error']} "
             "(read-only source? give --mirror DIR)")


# -- report --------------------------------------------------------------------------------------
def report_cmd(
    run: RunOpt = None,
    against: Annotated[Optional[int], typer.Option(
        "--against", help="also a diff page: what changed from this older run to RUN")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", file_okay=False, help="the site's folder (default: <workspace>/report)")] = None,
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
    from .options import workspace_at
    ws = workspace_at(workspace, create=False)
    cfg = ReportConfig(max_images=max_images)
    with reported(), open_catalog(workspace, read_only=True, wait=wait) as cat:
        summary = build_report(cat, ws.root, out if out is not None else ws.root / "report", run_id=run,
                               against=against, cfg=cfg)
    print_summary("report", summary, as_json)
    if not as_json:
        console.print(f"open {os.path.join(summary['out'], 'index.html')}", markup=False)
