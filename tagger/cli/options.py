"""Pieces shared by the command-line modules: consoles, error exits, common options, row output."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn, Optional

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from ..errors import TaggerError
from ..workspace import Workspace

if TYPE_CHECKING:
    from ..catalog import Catalog

_COLORS: Literal["auto"] | None = None if os.environ.get("NO_COLOR") else "auto"  # no-color.org: with NO_COLOR, no styles at all
console = Console(highlight=False, color_system=_COLORS)
err_console = Console(stderr=True, soft_wrap=True, highlight=False, color_system=_COLORS)

DEFAULT_WORKSPACE = Path("workspace")


def workspace_path(value: str | Path) -> Path:
    """Parser of a workspace folder given on the command line: a blank one (``-w ""``, ``-w "   "``,
    ``TAGGER_WORKSPACE="   "``) is refused, as is a file; nothing is created here."""
    if isinstance(value, Path):
        return value
    if not value.strip():
        raise typer.BadParameter("is empty: give the workspace folder")
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise typer.BadParameter(f"{value} is a file, not a workspace folder")
    return path


WorkspaceOpt = Annotated[Path, typer.Option(
    "--workspace", "-w", envvar="TAGGER_WORKSPACE", parser=workspace_path, metavar="DIRECTORY",
    help="workspace directory (default: $TAGGER_WORKSPACE, else ./workspace)")]
ModelOpt = Annotated[Optional[str], typer.Option(help="open_clip model name (default: the workspace's)")]
PretrainedOpt = Annotated[Optional[str], typer.Option(help="hub tag or local checkpoint path")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the summary as one JSON object (one line)")]
RowsJsonOpt = Annotated[bool, typer.Option("--json", help="print the rows as a JSON array of objects")]
NlOpt = Annotated[bool, typer.Option("--nl", help="print the rows as JSON lines: one object per line")]
CsvOpt = Annotated[bool, typer.Option("--csv", help="print CSV (with a header row) instead of a table")]


class DecisionRule(str, Enum):
    """How a tag run decides positives (``TagConfig.decision``)."""

    ANCHORED = "anchored"
    MIXTURE = "mixture"
    STANDARDIZED = "standardized"


DecisionOpt = Annotated[DecisionRule, typer.Option(
    help="anchored: each label's own threshold, from the classifier's text scale and the label's share "
         "of the corpus; mixture: fitted on the corpus's scores alone (both apply pins and labelled images); "
         "standardized: the per-image z-score reaches --threshold")]
CalibrateWithOpt = Annotated[Optional[Path], typer.Option(
    "--calibrate-with", dir_okay=False, metavar="FILE",
    help="CSV or Parquet of image URIs and their labels (columns uri and label or labels): becomes the "
         "catalog's labelled set, which this and every later run calibrates thresholds from")]


def _head_kind_enum() -> Any:
    """The ``--head`` choices: the registry's heads (:mod:`tagger.method.headkinds`), read once when
    the CLI is imported."""
    from ..method.headkinds import train_heads
    return Enum("HeadKind", {k.upper().replace("-", "_"): k for k in train_heads()}, type=str)


def _head_help() -> str:
    from ..method.headkinds import TEXT_HEAD, image_heads, spec
    return "; ".join([f"{TEXT_HEAD}: the text-only classifier (with --annotations: improved few-shot from those images)",
                      *(f"{k}: {spec(k).summary}" for k in image_heads())]) + (
        "; an image head learns from the annotated images and tags every label from its name")


if TYPE_CHECKING:
    class HeadKind(str, Enum):
        """Which head ``train`` fits; its members come from the registry when the module runs."""
else:
    #: Which head ``train`` fits (``comc`` needs no labelled image; the others learn from them).
    HeadKind = _head_kind_enum()
HeadOpt = Annotated[HeadKind, typer.Option(help=_head_help())]
AnnotationsOpt = Annotated[Optional[Path], typer.Option(
    "--annotations", dir_okay=False, metavar="FILE",
    help="CSV or Parquet of image URIs and their labels (columns uri and label or labels); the images "
         "must be encoded")]


def finite(value: float | None) -> float | None:
    """Option callback refusing NaN and infinity (``--threshold nan``)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def finite_non_negative(value: float | None) -> float | None:
    """Option callback for counts and shares: a finite number, at least 0 (NaN is named as such)."""
    finite(value)
    if value is not None and value < 0:
        raise typer.BadParameter(f"{value} is below 0")
    return value


def node_resource_name(value: str | None) -> str | None:
    """Option callback refusing what cannot name a custom Ray resource (``GPU``, an empty name)."""
    from ..pipeline.raycluster import check_node_resource
    try:
        check_node_resource(value)
    except TaggerError as e:
        raise typer.BadParameter(str(e)) from None
    return value


#: Default ``--wait`` of the quick verbs (sql, runs, labels): rides out a job's short write.
QUICK_WAIT = 10.0
#: Default ``--wait`` of the job verbs (encode, tag, nightly, ...): a long query may be reading.
JOB_WAIT = 600.0
WaitOpt = Annotated[float, typer.Option(
    "--wait", envvar="TAGGER_WAIT", metavar="SECONDS", callback=finite_non_negative,
    help="while another process holds the catalog file (a job's write, a long query), retry for up to "
         "SECONDS before failing ($TAGGER_WAIT; 0: fail at once); a second job is refused at once, "
         "whatever the wait")]


_ONE_LINE = re.compile(r"\s*[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]\s*|\t")  # line breaks (and the indent after)


def fail(e: Exception | str) -> NoReturn:
    """Print ``error: <message>`` as one line on stderr and exit with status 2."""
    message = _ONE_LINE.sub(" ", str(e)).strip() or type(e).__name__  # line breaks go; a name's spaces stay
    err_console.print(Text.assemble(("error:", "red"), " ", message))
    raise typer.Exit(code=2)


@contextmanager
def reported() -> Iterator[None]:
    """Turn the library's named errors raised inside the block into :func:`fail` exits."""
    try:
        yield
    except TaggerError as e:
        fail(e)


def workspace_at(path: Path, *, create: bool = False) -> Workspace:
    """The workspace at ``path``, or one ``error:`` line. Only the verbs that start a workspace (``init``,
    ``encode``, ``labels add``) pass ``create``: one is made there only where ``init`` would make it (a new
    or empty folder, never among someone's files). Every other verb is refused where the folder holds no
    workspace, and nothing (no folder, catalog or lock) is created."""
    with reported():
        if create:
            return Workspace.at(workspace_target(path).root)
        return Workspace(Path(path).expanduser().resolve()).require()


def workspace_target(path: Path) -> Workspace:
    """The workspace at ``path``, or the place where one may be started (checked as ``init`` checks it,
    :meth:`Workspace.check_target`); nothing is created yet."""
    with reported():
        ws = Workspace(Path(path).expanduser().resolve())
        ws.check_target()
        return ws


@contextmanager
def open_catalog(path: Path, *, read_only: bool, wait: float = 0.0, create: bool = False) -> Iterator["Catalog"]:
    """Open the workspace catalog, waiting up to ``wait`` seconds for a lock held elsewhere.

    Only a writable open with ``create`` (the verbs that start a workspace) makes a workspace and its
    catalog where there is none; the others are refused there (:func:`workspace_at`). Read-only opens are
    sealed: their SQL reaches no other file, no URL and no extension (``Catalog.open(external_access=False)``).
    """
    from ..catalog import Catalog
    ws = workspace_at(path, create=create and not read_only)
    with Catalog.open(ws.catalog, read_only=read_only, external_access=not read_only, wait=wait) as cat:
        yield cat


@contextmanager
def job_scope(ws: Workspace, job: str, wait: float) -> Iterator[None]:
    """Run a job verb's driver holding the workspace's job lock, its catalog opens waiting up to
    ``wait`` seconds while another process holds the file (a second job is refused at once)."""
    from ..catalog import JobLock
    ws.check_writable()
    with JobLock(ws.catalog, job, wait=wait):
        yield


def output_format(as_json: bool, as_csv: bool = False, *, nl: bool = False) -> str:
    """``table``, ``json`` (an array), ``nl`` (JSON lines) or ``csv`` from the flags.

    ``--nl`` alone or with ``--json`` gives JSON lines; ``--csv`` with either JSON flag is an error.
    """
    if as_csv and (as_json or nl):
        fail("choose one of --json, --nl and --csv")
    return "nl" if nl else "json" if as_json else "csv" if as_csv else "table"


def _words(value: Any, limit: int = 8) -> str:
    """A nested value in words: ``k=v, ...`` for a mapping, ``a, b, ... (+N more)`` for a list."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_words(v, limit)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        if any(isinstance(v, Mapping) for v in items):
            shown = "; ".join(_words(v, limit) for v in items[:limit])
        else:
            shown = ", ".join(_words(v, limit) for v in items[:limit])
        return (shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")) or "-"
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else str(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return "-" if value is None else str(value)


_CONTROLS = {c: repr(chr(c))[1:-1] for c in [*range(32), *range(127, 160)]}


def _cell(value: Any) -> Text:
    """A table cell; control characters in the data (an escape sequence, a newline in a file name) are
    shown escaped (``\\x1b``, ``\\n``), never sent to the terminal, so a row stays one line."""
    if value is None:
        return Text("NULL", style="dim")
    if isinstance(value, float):
        return Text(f"{value:.4f}")
    if isinstance(value, datetime):
        return Text(value.isoformat(sep=" ", timespec="seconds"))
    if isinstance(value, (list, tuple, set, frozenset, Mapping)):
        return Text(_words(value, limit=10**6).translate(_CONTROLS))
    return Text(str(value).translate(_CONTROLS))


def _jsonable(value: Any) -> Any:
    """NaN and infinity as null (JSON has no such numbers); the rest as ``json`` writes it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def print_table(table: Table) -> None:
    """Print a rich table: fitted to a terminal, at its full width when piped (never squeezed)."""
    if console.is_terminal:
        console.print(table)
        return
    wide = Console(file=console.file, width=100_000, highlight=False, color_system=None)
    width = Measurement.get(wide, wide.options, table).maximum
    Console(file=console.file, width=max(width, 20), highlight=False, color_system=None).print(table)


def emit_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table",
              title: str | None = None) -> None:
    """Print rows as a rich table, a JSON array (``json``), JSON lines (``nl``) or CSV with a header.

    The array holds one row per line (``[{...},\n {...}]``), so it is read whole or line by line.
    """
    if fmt in ("json", "nl"):
        objects = [_json({c: _jsonable(v) for c, v in zip(columns, row)}) for row in rows]
        if fmt == "nl":
            typer.echo("".join(f"{o}\n" for o in objects), nl=False)
        else:
            typer.echo("[" + ",\n ".join(objects) + "]")
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if v is None else _words(v, limit=10**6) if isinstance(v, (list, tuple, Mapping))
                           else v for v in row] for row in rows])
        typer.echo(buf.getvalue(), nl=False)
    elif console.is_terminal and _table_width(columns) > console.width:
        _print_records(columns, rows, title)
    else:
        table = Table(title=title)
        for name in columns:
            table.add_column(name, overflow="fold")
        for row in rows:
            table.add_row(*(_cell(v) for v in row))
        print_table(table)


def _table_width(columns: Sequence[str]) -> int:
    """The narrowest a table of these columns reads at: each column as wide as its name (at least 4),
    with the borders and padding around it."""
    return sum(max(len(c), 4) + 3 for c in columns) + 1


def _print_records(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None) -> None:
    """Rows as ``column  value`` lines, one block per row: a terminal too narrow for the table
    (it would squeeze every cell to nothing)."""
    if title:
        console.print(title, markup=False)
    pad = max((len(c) for c in columns), default=0)
    for k, row in enumerate(rows, 1):
        console.print(f"-- row {k} --", style="bold", markup=False)
        for name, value in zip(columns, row):
            console.print(Text.assemble(name.ljust(pad), "  ", _cell(value)))


def report_calibration(summary: dict[str, Any]) -> None:
    """Warn on stderr about the URIs of a ``--calibrate-with`` file that were skipped."""
    report = summary.get("calibration") or {}
    for key, what in (("unknown_uris", "not in the catalog"), ("not_encoded", "not encoded")):
        uris = report.get(key) or []
        if uris:
            shown = ", ".join(uris[:5]) + (f" (+{len(uris) - 5} more)" if len(uris) > 5 else "")
            err_console.print(Text.assemble(("warning:", "yellow"), f" {len(uris)} URI(s) of "
                                            f"{report.get('file')} {what}, skipped: {shown}"))


def print_summary(title: str, summary: dict[str, Any], as_json: bool = False) -> None:
    """Print a job summary as a two-column table (nested values in words), or as one JSON object on
    one line (the form the Ray jobs print)."""
    if as_json:
        typer.echo(_json(summary))
        return
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right", overflow="fold")
    flips = summary.get("flips") or []
    for k, v in summary.items():
        if k == "flips":
            v = len(v or [])
        nested = isinstance(v, (list, tuple, set, frozenset, Mapping))
        table.add_row(str(k), _cell(f"{v:.2f}" if isinstance(v, float) else _words(v) if nested else v))
    print_table(table)
    print_flips(flips, summary.get("flips_against") or summary.get("previous_run"))


def print_flips(flips: list[Mapping[str, Any]], against: Any = None) -> None:
    """The labels whose decision flipped, one line each with its reason (nothing when none did)."""
    from ..catalog.flips import flip_lines
    if not flips:
        return
    lines = [f"{len(flips)} label(s) whose decision changed" + (f" from run {against}" if against else "") + ":",
             *(f"  {line}" for line in flip_lines(flips))]
    for line in lines:  # on a terminal, wrapped to it; piped, one line per flip at its full width
        if console.is_terminal:
            console.print(line, markup=False, highlight=False)
        else:
            typer.echo(line.translate(_CONTROLS))


# -- options of the job verbs, shared with ``jobs/`` (which run these same commands) ------------------
PartitionSizeOpt = Annotated[int, typer.Option(min=1, help="images per partition (shard)")]
EncodeCpusOpt = Annotated[float, typer.Option(callback=finite_non_negative, help=(
    "Ray CPUs reserved per CPU encoder actor (e.g. 0.75 to fit 2 encoders and a decoder on 2 cores)"))]
DecodeCpusOpt = Annotated[float, typer.Option(callback=finite_non_negative, help="Ray CPUs per decode task")]
#: The most label sets a corpus asks for: 10^7 sentences' text embeddings already take ~20 GB.
MAX_SENTENCES = 10_000_000
NSentencesOpt = Annotated[int, typer.Option(min=1, max=MAX_SENTENCES, help=(
    "label sets of the corpus (a corpus made with another count, seed or generator is not reused)"))]
MaxMissingOpt = Annotated[float, typer.Option(callback=finite_non_negative, help=(
    "label sets allowed to end without a sentence: a fraction below 1 (0.01 = 1 %) or a count; "
    "beyond it the run fails and saves nothing, a rerun requests only the missing ones"))]
NodeResourceOpt = Annotated[Optional[str], typer.Option(
    "--node-resource", metavar="NAME", callback=node_resource_name, help=(
        "keep the encoder and tagging actors on the Ray nodes offering custom resource NAME "
        "(ray start --resources '{\"NAME\": 1}'), e.g. the GPU nodes"))]
CrashAfterOpt = Annotated[Optional[int], typer.Option(hidden=True, help="tests: crash after N batches")]
SourceOpt = Annotated[Optional[str], typer.Option(
    "--source", help="the same as the SOURCE argument (the form the Ray jobs' manifests use)")]


def one_source(argument: str | None, option: str | None) -> str | None:
    """SOURCE given as the argument or as ``--source`` (not both)."""
    if argument is not None and option is not None and argument != option:
        fail("give SOURCE once: as the argument or as --source")
    return argument if argument is not None else option
