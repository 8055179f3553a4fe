"""Review commands: people's accept / reject decisions on tags (``review``). ``export`` and
``report`` live in :mod:`tagger.cli.export` and :mod:`tagger.cli.report`."""
from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import (
    DEFAULT_WORKSPACE, QUICK_WAIT, JsonOpt, NlOpt, RowsJsonOpt, WaitOpt, WorkspaceOpt, emit_rows, open_catalog, output_format,
    print_summary, reported,
)

__all__ = ["review_app"]

review_app = typer.Typer(no_args_is_help=True, help=(
    "Accept or reject tags: every later tag and nightly run keeps them (provenance 'person')."))

WhoOpt = Annotated[Optional[str], typer.Option(
    "--who", help="the reviewer's name stored with each decision (default: the login name)")]


def _who(name: str | None) -> str:
    if name and name.strip():
        return name.strip()
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in a container
        return "unknown"


def _uri(text: str) -> str:
    """A URI as the catalog stores it (local paths absolute); an empty one stays empty (and is refused
    as such, not taken for the working directory)."""
    from ..uris import normalize_uri
    return normalize_uri(text) if str(text or "").strip() else ""


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
    from ..report.review_file import read_decisions
    with reported():
        rows, source = read_decisions(file)
    _record(workspace, rows, who, source, wait, as_json)


@review_app.command("list")
def review_list(
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    wait: WaitOpt = QUICK_WAIT,
    as_json: RowsJsonOpt = False,
    as_nl: NlOpt = False,
) -> None:
    """List the stored decisions, oldest first (the latest decision of an image and label wins)."""
    with reported(), open_catalog(workspace, read_only=True, wait=wait) as cat:
        rows = cat.review_decisions()
    cols = ("uri", "label", "decision", "who", "decided_at", "source")
    emit_rows(cols, [tuple(r[c] for c in cols) for r in rows], output_format(as_json, nl=as_nl), title=f"{len(rows)} decision(s)")
