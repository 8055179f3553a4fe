"""Catalog commands: read-only SQL, the label vocabulary (``labels``) and tagging runs (``runs``)."""
from __future__ import annotations

import math
from typing import Annotated, Optional

import typer

from ..catalog.thresholds import present_state
from ..catalog.readonly import SCHEMA_OVERVIEW_SQL
from ..catalog.runs import run_mode
from .options import (
    DEFAULT_WORKSPACE, QUICK_WAIT, CsvOpt, JsonOpt, NlOpt, RowsJsonOpt, WaitOpt, WorkspaceOpt, console, emit_rows, fail, finite_non_negative,
    open_catalog, output_format, print_flips, reported, workspace_at,
)

__all__ = ["labels_app", "runs_app", "sql_cmd"]

ParentOpt = Annotated[Optional[list[str]], typer.Option(
    "--parent", "-p", metavar="PARENT",
    help="a parent label (repeatable; added as a label when new): a positive tag of the label makes its "
         "ancestors positive; cycles are refused")]

labels_app = typer.Typer(no_args_is_help=True, help="Manage the label vocabulary (labels are retired, never deleted).")
runs_app = typer.Typer(no_args_is_help=True, help="Inspect tagging runs and compare them.")


def sql_cmd(
    query: Annotated[Optional[str], typer.Argument(help="one read-only statement (SELECT, WITH, SHOW, ...)")] = None,
    schema: Annotated[bool, typer.Option("--schema", help="list the tables and views with their columns")] = False,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    wait: WaitOpt = QUICK_WAIT,
    timeout: Annotated[Optional[float], typer.Option(
        "--timeout", metavar="SECONDS", callback=finite_non_negative, help=(
            "stop the query after this long (default $TAGGER_SQL_TIMEOUT or 60; 0: no limit), so that it never "
            "holds the catalog long enough to stall a job"))] = None,
    as_json: RowsJsonOpt = False,
    as_nl: NlOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """Run a read-only SQL query on the catalog (e.g. over the current_tags view).

    The query sees the catalog's tables and views only: no other file, URL, extension or setting; it
    is stopped at its time limit, and at its memory and temp-space limits ($TAGGER_SQL_MEMORY,
    $TAGGER_SQL_TEMP, 1GB each by default).
    """
    from ..catalog.sealed import SqlLimits, open_sealed
    fmt = output_format(as_json, as_csv, nl=as_nl)
    if schema == (query is not None):
        fail("give either a QUERY or --schema")
    with reported():
        limits = SqlLimits.from_env(timeout)
        with open_sealed(workspace_at(workspace, create=False).catalog, limits, wait=wait) as session:
            table = session.query(SCHEMA_OVERVIEW_SQL if schema or query is None else query)
    emit_rows(table.column_names, [tuple(r.values()) for r in table.to_pylist()], fmt)


# -- labels ------------------------------------------------------------------------------------
def _parse_synonyms(pairs: list[str], names: list[str]) -> dict[str, list[str]]:
    """``NAME=SYN`` options -> {name: [synonyms]}; each NAME must be among the labels added."""
    out: dict[str, list[str]] = {}
    known = {n.strip() for n in names}
    for pair in pairs:
        name, sep, syn = pair.partition("=")
        name, syn = name.strip(), syn.strip()
        if not sep or not name or not syn:
            fail(f"--synonym expects NAME=SYNONYM, got {pair!r}")
        if name not in known:
            fail(f"--synonym {pair!r} names a label that is not being added: {name!r}")
        out.setdefault(name, []).append(syn)
    return out


@labels_app.command("add")
def labels_add(
    names: Annotated[Optional[list[str]], typer.Argument(help="label names (quote names with spaces)")] = None,
    synonym: Annotated[Optional[list[str]], typer.Option(
        "--synonym", "-s", help="NAME=SYNONYM, repeatable; replaces NAME's stored synonyms")] = None,
    toy: Annotated[bool, typer.Option("--toy", help="also add the toy-world vocabulary with its synonyms")] = False,
    parent: ParentOpt = None,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    wait: WaitOpt = QUICK_WAIT,
) -> None:
    """Add labels, or re-activate retired ones (--parent: under parent labels, added when new)."""
    names = list(names or [])
    synonyms: dict[str, list[str]] = {}
    if toy:
        from ..toyworld import LABEL_SYNONYMS, LABELS
        names += [n for n in LABELS if n not in names]
        synonyms.update({n: list(s) for n, s in LABEL_SYNONYMS.items()})
    if not names:
        fail("no labels given: pass NAME... or --toy")
    synonyms.update(_parse_synonyms(list(synonym or []), names))
    parents = list(parent or [])
    with reported(), open_catalog(workspace, read_only=False, wait=wait) as cat:
        before = set(cat.active_labels())
        if parents:
            cat.check_parents(names, parents)  # a cycle is refused before anything is added
        cat.add_labels(names, synonyms or None)
        if parents:
            cat.add_parents(names, parents)
        after = set(cat.active_labels())
    again = len({n.strip() for n in names} & before)
    console.print(f"added {len(after - before)} label(s)" + (f" ({again} already active)" if again else "")
                  + f"; {len(after)} active" + (f"; parents: {', '.join(parents)}" if parents else ""), markup=False)


@labels_app.command("list")
def labels_list(
    include_all: Annotated[bool, typer.Option("--all", help="include retired labels")] = False,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    wait: WaitOpt = QUICK_WAIT,
    as_json: RowsJsonOpt = False,
    as_nl: NlOpt = False,
) -> None:
    """List the active labels (--all: retired ones too) with their synonyms and parents."""
    with reported(), open_catalog(workspace, read_only=True, wait=wait) as cat:
        labels, parents = cat.list_labels(include_retired=include_all), cat.label_parents()
    fmt = output_format(as_json, nl=as_nl)
    pins = fmt != "table" or any(lab.threshold is not None for lab in labels)  # the table shows pins when any
    ups = fmt != "table" or any(lab.name in parents for lab in labels)  # and parents when any
    rows = [(lab.label_id, lab.name, lab.synonyms, *((parents.get(lab.name, []),) if ups else ()),
             "active" if lab.active else "retired", *((lab.threshold,) if pins else ()), lab.added_at,
             lab.retired_at) for lab in labels]
    cols = ("label_id", "name", "synonyms", *(("parents",) if ups else ()), "status",
            *(("threshold",) if pins else ()), "added_at", "retired_at")
    emit_rows(cols, rows, fmt, title=f"{len(rows)} label(s)")


def _threshold_value(text: str | None, clear: bool) -> float | None:
    """``--threshold X`` / ``--threshold none`` / ``--clear`` -> a finite threshold or None (unpin)."""
    if clear and text is not None:
        fail("give either --threshold X (none unpins) or --clear")
    if clear or text is None or text.strip().lower() in ("none", "null", ""):
        return None
    try:
        value = float(text)
    except ValueError:
        fail(f"--threshold expects a number or none, got {text!r}")
    if not math.isfinite(value):
        fail(f"--threshold must be a finite number, got {text!r}")
    return value


@labels_app.command("set")
def labels_set(
    name: Annotated[str, typer.Argument(help="the label to change")],
    threshold: Annotated[Optional[str], typer.Option(
        "--threshold", metavar="X", help="pin the label's threshold on the score column (as `tagger runs show` "
                                         "lists them); every later tag and nightly run uses it; none unpins")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="unpin: later runs fit the threshold again")] = False,
    parent: ParentOpt = None,
    no_parent: Annotated[Optional[list[str]], typer.Option(
        "--no-parent", metavar="PARENT", help="unlink a parent of the label (repeatable; the parent label stays)")] = None,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    wait: WaitOpt = QUICK_WAIT,
) -> None:
    """Pin (or unpin) a label's positive threshold for every later run, or link and unlink its parents."""
    add, drop = list(parent or []), list(no_parent or [])
    if threshold is None and not clear and not (add or drop):
        fail("give --threshold X (none unpins), --clear, --parent PARENT or --no-parent PARENT")
    pin = threshold is not None or clear
    value = _threshold_value(threshold, clear) if pin else None
    with reported(), open_catalog(workspace, read_only=False, wait=wait) as cat:
        if add:
            cat.check_parents(name, add)  # refused before anything changes
        if drop:
            cat.remove_parents(name, drop)
        before = cat.set_threshold(name, value) if pin else None
        if add:
            cat.add_parents(name, add)
        parents = cat.label_parents().get(name.strip(), [])
    if pin:
        was = "unpinned" if before is None else f"{before:g}"
        now = "unpinned (fitted per run)" if value is None else f"pinned at {value:g}"
        console.print(f"{name.strip()}: threshold {now} (was {was})", markup=False)
    if add or drop:
        console.print(f"{name.strip()}: parents {', '.join(parents) or 'none'}", markup=False)


@labels_app.command("retire")
def labels_retire(
    names: Annotated[list[str], typer.Argument(help="label names to retire")],
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    wait: WaitOpt = QUICK_WAIT,
) -> None:
    """Retire labels: kept for the history of old runs, no longer used by new ones."""
    with reported(), open_catalog(workspace, read_only=False, wait=wait) as cat:
        n = cat.retire_labels(names)
    console.print(f"retired {n} label(s)")


# -- runs --------------------------------------------------------------------------------------
@runs_app.command("list")
def runs_list(
    kind: Annotated[Optional[str], typer.Option(help="only runs of this kind (e.g. tag)")] = None,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    wait: WaitOpt = QUICK_WAIT,
    as_json: RowsJsonOpt = False,
    as_nl: NlOpt = False,
) -> None:
    """List runs, oldest first (the current run has status 'current'; a failed run gives its error,
    e.g. a run whose process was killed is marked failed, abandoned, when the next tag job starts)."""
    with reported(), open_catalog(workspace, read_only=True, wait=wait) as cat:
        runs, current, heads = cat.runs(kind), cat.current_run(), cat.classifier_heads()
    rows = [(r.run_id, r.kind, r.status + (" (pruned)" if r.pruned_at else ""), r.started_at, r.finished_at,
             r.model_id, heads.get(r.classifier_id) if r.classifier_id else None, r.classifier_id,
             run_mode(r), r.n_images, r.n_tags, len(r.labels or []), r.error) for r in runs]
    cols = ("run_id", "kind", "status", "started_at", "finished_at", "model_id", "head", "classifier_id", "mode",
            "n_images", "n_tags", "n_labels", "error")
    emit_rows(cols, rows, output_format(as_json, nl=as_nl), title=f"{len(rows)} run(s); current: {current or '-'}")


@runs_app.command("show")
def runs_show(
    run_id: Annotated[Optional[int], typer.Argument(help="the run (default: the current one)")] = None,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    wait: WaitOpt = QUICK_WAIT,
    as_json: RowsJsonOpt = False,
    as_nl: NlOpt = False,
) -> None:
    """A run's decisions: per label its threshold (on the score column), whether the corpus fit
    found it present, where the threshold came from (fit, labelled, pinned) and its positives."""
    with reported(), open_catalog(workspace, read_only=True, wait=wait) as cat:
        run_id = run_id if run_id is not None else cat.current_run()
        if run_id is None:
            fail("no current run: give a RUN_ID")
        run, rows, heads = cat.get_run(run_id), cat.run_thresholds(run_id), cat.classifier_heads()
    head = f"; head {heads.get(run.classifier_id, '-')} (classifier {run.classifier_id})" if run.classifier_id else ""
    tag_cfg = (run.config or {}).get("tag") or {}
    rule = tag_cfg.get("decision", "standardized")
    if rule == "standardized":
        title = f"run {run_id} ({run.status}): per-image standardised rule, z >= {tag_cfg.get('threshold', 1.0)}"
    else:
        n_present = sum(bool(r["present"]) for r in rows)
        title = f"run {run_id} ({run.status}): per-label thresholds, {n_present} of {len(rows)} labels present"
    title += head + (f"; mode {run_mode(run)}" if run.kind == "tag" else "")
    fmt = output_format(as_json, nl=as_nl)
    for r in rows:  # a parent raised only by its children reads so, never "absent" beside positives
        state, raised = present_state(r["present"], int(r["positives"]), int(r.get("by_person") or 0))
        r["source"] = raised or r["source"]
        if fmt == "table":
            r["present"] = state
    cols = ("label", "threshold", "present", "source", "positives", "reason")
    emit_rows(cols, [tuple(r.get(c) for c in cols) for r in rows], fmt, title=title)


@runs_app.command("diff")
def runs_diff(
    a: Annotated[int, typer.Argument(help="the older run id")],
    b: Annotated[int, typer.Argument(help="the newer run id")],
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    wait: WaitOpt = QUICK_WAIT,
    as_json: JsonOpt = False,
) -> None:
    """Labels added/removed between runs A and B, and per label the images that gained or lost it."""
    import json

    from ..catalog.diff import run_diff
    with reported(), open_catalog(workspace, read_only=True, wait=wait) as cat:
        diff = run_diff(cat, a, b)
    if as_json:
        typer.echo(json.dumps(diff, ensure_ascii=False))
        return
    added = ", ".join(diff["labels_added"]) or "-"
    removed = ", ".join(diff["labels_removed"]) or "-"
    console.print(f"run {a} -> run {b}: labels added: {added}; removed: {removed}", markup=False)
    rows = [(r["label"], r["a_positive"], r["b_positive"], f"+{r['gained']}", f"-{r['lost']}")
            for r in diff["labels"]]
    emit_rows(("label", f"positive in {a}", f"positive in {b}", "gained", "lost"), rows,
              title=f"positive tags: +{diff['gained']} / -{diff['lost']}")
    print_flips(diff["flips"], a)
