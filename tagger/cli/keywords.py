"""`tagger import-keywords`: the keywords people already gave their photos, as labelled images."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import (
    DEFAULT_WORKSPACE, QUICK_WAIT, JsonOpt, WaitOpt, WorkspaceOpt, console, emit_rows, err_console, open_catalog,
    print_summary, reported, workspace_at,
)

__all__ = ["import_keywords_cmd"]

DEFAULT_OUT = "keywords-labelled.csv"


def import_keywords_cmd(
    folder: Annotated[Optional[Path], typer.Argument(
        file_okay=False, help="only the registered images below this folder (default: every local image)")] = None,
    mapping: Annotated[Optional[Path], typer.Option(
        "--map", metavar="FILE", help=(
            "CSV of keyword,label rows (a keyword or a places|Paris path; an empty label ignores the keyword), "
            "tried before the label names"))] = None,
    out: Annotated[str, typer.Option(
        "--out", "-o", help=(
            "the labelled images, uri,label,decision rows: a new file outside the workspace"))] = DEFAULT_OUT,
    force: Annotated[bool, typer.Option("--force", help="replace an existing --out file")] = False,
    no_embedded: Annotated[bool, typer.Option(
        "--no-embedded", help="read the sidecars only, not the XMP and IPTC inside the image files")] = False,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    wait: WaitOpt = QUICK_WAIT,
    as_json: JsonOpt = False,
) -> None:
    """Read the keywords of the registered images (their sidecars photo.jpg.xmp and photo.xmp, and the XMP
    and IPTC in the files), map them to labels, and write the labelled images: `tagger tag
    --calibrate-with FILE`, `tagger train --annotations FILE` and `tagger review import FILE` read it.
    Keywords tagger wrote itself are left out; the unmapped ones are listed with their image counts."""
    from ..export.kwmap import import_keywords, write_labelled
    from ..uris import to_local_path
    from ..targets import check_out_file
    ws = workspace_at(workspace)
    with reported():
        target = check_out_file(out, ws.root, force=force)
        under = to_local_path(str(folder)) if folder is not None else None
        with open_catalog(workspace, read_only=True, wait=wait) as cat:
            rows, summary = import_keywords(cat, under=under, mapping_file=mapping, embedded=not no_embedded)
        summary = {"out": str(target), "rows": write_labelled(target, rows) if rows else 0, **summary}
    if as_json:
        print_summary("import-keywords", summary, True)
    else:
        unmapped = summary.pop("unmapped")
        print_summary("import-keywords", {k: v for k, v in summary.items() if k != "labels"})
        if unmapped:
            emit_rows(("keyword", "images"), list(unmapped.items()),
                      title=f"unmapped keywords ({summary['unmapped_keywords']}; add labels or a --map row)")
        if rows:
            console.print(f"use it: tagger tag --calibrate-with {target}", markup=False)
    if not rows:
        err_console.print("warning: no keyword maps to a label: nothing written", markup=False)
