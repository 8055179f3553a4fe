"""`tagger export`: a run's tags as XMP sidecars merged into a person's own, or as a CSV / JSON
lines / Parquet table; and `tagger import-keywords`: a person's keywords as labelled images."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import ConfigError
from ..targets import STDOUT
from .options import (
    DEFAULT_WORKSPACE, QUICK_WAIT, JsonOpt, WaitOpt, WorkspaceOpt, err_console, fail, open_catalog, print_summary,
    reported, workspace_at,
)

__all__ = ["export_cmd", "register"]

RunOpt = Annotated[Optional[int], typer.Option("--run", help="the tag run (default: the current one)")]
ForceOpt = Annotated[bool, typer.Option("--force", help="replace an existing --out file")]


class ExportFormat(str, Enum):
    XMP = "xmp"
    CSV = "csv"
    JSONL = "jsonl"
    PARQUET = "parquet"


class SidecarName(str, Enum):
    FULL = "photo.jpg.xmp"
    STEM = "photo.xmp"


def _warn(summary: dict) -> None:
    notes = [("remote", "remote image(s) skipped: give --mirror DIR for their sidecars"),
             ("outside_root", "image(s) outside the mirror's source root skipped: give --source-root DIR"),
             ("missing_images", "image(s) no longer on disk: no sidecar written"),
             ("name_clash", "image(s) share a sidecar name with another (photo.jpg, photo.png -> photo.xmp: "
                            "written for the first only; photo.jpg.jpg -> photo.jpg.xmp, photo.jpg's own: not "
                            "written)"),
             ("sidecars_cleared", "sidecar(s) lost every keyword tagger wrote since the last export (deleted by a "
                                  "person, or by a tool that writes its own keywords over the file, as darktable "
                                  "does for images it knows): those labels are declined and not written again; "
                                  "`tagger review accept URI LABEL` writes one back"),
             ("changed_meanwhile", "sidecar(s) changed by another program during the export: left as they are, "
                                   "export again")]
    for key, text in notes:
        if summary.get(key):
            example = summary.get(f"first_{key}")
            err_console.print(f"warning: {summary[key]} {text}" + (f"; e.g. {example}" if example else ""),
                              markup=False)
    if summary.get("labels_declined"):
        err_console.print(f"note: {summary['labels_declined']} positive label(s) not written: a person deleted them "
                          "from the sidecar after an earlier export (`tagger review accept URI LABEL` writes one back)",
                          markup=False)
    if summary.get("refused_labels"):
        err_console.print(f"warning: label(s) XML cannot hold, not written: {summary['refused_labels']!r}",
                          markup=False)


def export_cmd(
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help=(
        "xmp: merge each image's positive labels into its sidecar (a person's keywords and every other "
        "field kept); csv, jsonl, parquet: one row per tag"))],
    run: RunOpt = None,
    out: Annotated[Optional[str], typer.Option(
        "--out", "-o", help=(
            "table formats: a new file outside the workspace (default: tags-run<N>.<format>); its folder must "
            "exist; - writes the table to standard output"))] = None,
    force: ForceOpt = False,
    positive_only: Annotated[bool, typer.Option("--positive-only", help="table formats: positive tags only")] = False,
    mirror: Annotated[Optional[Path], typer.Option(
        "--mirror", help=(
            "xmp: write the sidecars under this folder (made if its parent exists) at each image's path "
            "relative to the source root, instead of beside the images"))] = None,
    source_root: Annotated[Optional[Path], typer.Option(
        "--source-root", file_okay=False, help=(
            "xmp --mirror: the folder the mirror's layout starts from (default: the one recorded in the "
            "mirror, else the deepest folder holding every image of the run)"))] = None,
    root: Annotated[Optional[str], typer.Option(
        "--root", metavar="NAME", help=(
            "xmp: put the machine keywords' hierarchy under NAME (auto|shape|star); default: none"))] = None,
    sidecar_name: Annotated[SidecarName, typer.Option(
        "--sidecar-name", help=(
            "xmp: photo.jpg.xmp (darktable, digiKam) or photo.xmp (Lightroom Classic, Capture One: raw "
            "files)"))] = SidecarName.FULL,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    wait: WaitOpt = QUICK_WAIT,
    as_json: JsonOpt = False,
    crash_after: Annotated[Optional[int], typer.Option(hidden=True, help="tests: crash after N sidecars")] = None,
) -> None:
    """Export a run's tags: XMP sidecars for photo tools, or a CSV / JSON lines / Parquet table with
    uri, run, label, score, confidence, positive and provenance (model or person)."""
    from ..export import ExportOptions, export_run
    ws = workspace_at(workspace)
    opts = ExportOptions(out=out, force=force, positive_only=positive_only, mirror=mirror, source_root=source_root,
                         naming=sidecar_name.value, root_label=root, workspace=ws.root, crash_after=crash_after)
    to_stdout = out == STDOUT
    with reported(), open_catalog(workspace, read_only=True, wait=wait) as cat:
        if to_stdout and as_json:
            raise ConfigError("--out - writes the table to standard output: not with --json")
        summary = export_run(cat, fmt.value, run_id=run, options=opts)
    if to_stdout:  # the table is standard output: the summary goes to the error stream
        err_console.print(f"exported {summary['rows']} row(s) of run {summary['run']} ({fmt.value})", markup=False)
        return
    print_summary(f"export {fmt.value}", summary, as_json)
    _warn(summary)
    if summary.get("failed"):
        fail(f"{summary['failed']} sidecar(s) not written (each left as it was), e.g. {summary['first_error']}"
             + _hint(summary["first_error"]))


def _hint(error: str | None) -> str:
    """What to do about a sidecar that could not be written: a read-only source wants --mirror DIR;
    a sidecar that is not XMP or not readable is for the person to look at (no hint)."""
    text = (error or "").lower()
    if any(k in text for k in ("permission denied", "read-only", "operation not permitted")):
        return " (read-only source? give --mirror DIR)" if "--mirror" not in text else ""
    return ""


def register(app: typer.Typer) -> None:
    """Add ``export`` and ``import-keywords`` to the command line."""
    from .keywords import import_keywords_cmd
    app.command("export")(export_cmd)
    app.command("import-keywords")(import_keywords_cmd)
