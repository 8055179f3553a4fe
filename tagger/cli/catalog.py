"""Catalog commands: the label vocabulary (``labels``) and tagging runs (``runs``) (``sql``: :mod:`tagger.cli.sql`)."""
from __future__ import annotations

import math
from typing import Annotated, Optional

import typer

from ..catalog import Catalog, running_job
from ..catalog.thresholds import present_state
from ..catalog.vocab import Label
from ..errors import CatalogError
from ..catalog.runs import LEFT_RUNNING, run_mode
from .options import (
    DEFAULT_WORKSPACE, QUICK_WAIT, JsonOpt, NlOpt, RowsJsonOpt, WaitOpt, WorkspaceOpt, console, emit_rows, err_console,
    fail, open_catalog, output_format, print_flips, reported, workspace_at,
)

__all__ = ["labels_app", "runs_app"]

ParentOpt = Annotated[Optional[list[str]], typer.Option(
    "--parent", "-p", metavar="PARENT",
    help="a parent label (repeatable; added as a label when new): a positive tag of the label makes its "
         "ancestors positive; cycles are refused")]

MAX_WARNINGS = 5  # clash warnings printed per labels command

labels_app = typer.Typer(no_args_is_help=True, help="Manage the label vocabulary (labels are retired, never deleted).")
runs_app = typer.Typer(no_args_is_help=True, help="Inspect tagging runs and compare them.")


# -- labels ------------------------------------------------------------------------------------
def _parse_synonyms(pairs: list[str], names: list[str]) -> dict[str, list[str]]:
    """``NAME=SYN`` options -> {name: [synonyms]}; each NAME must be among the labels added. A name
    holding ``=`` itself (``e=mc2=formula``) is split after the longest label being added it begins with."""
    out: dict[str, list[str]] = {}
    known = {n.strip() for n in names}
    for pair in pairs:
        cuts = [i for i, c in enumerate(pair) if c == "=" and pair[:i].strip() in known]
        name, sep, syn = (pair[:cuts[-1]], "=", pair[cuts[-1] + 1:]) if cuts else pair.partition("=")
        name, syn = name.strip(), syn.strip()
        if not sep or not name or not syn:
            fail(f"--synonym expects NAME=SYNONYM, got {pair!r}")
        if name not in known:
            fail(f"--synonym {pair!r} names a label that is not being added: {name!r}")
        out.setdefault(name, []).append(syn)
    return out


def _vocab(cat: Catalog) -> dict[str, Label]:
    """Every stored label by name, retired ones included."""
    return {lab.name: lab for lab in cat.list_labels(include_retired=True)}


def _active(labels: dict[str, Label]) -> set[str]:
    return {n for n, lab in labels.items() if lab.active}


def _print_edits(before: dict[str, Label], after: dict[str, Label], current: int | None,
                 changed: bool = False) -> None:
    """Say what an edit did beyond its first line: re-activated labels, synonyms replaced (the next
    run retrains those labels), a pin kept on a retrained label, and when the change reaches the tags."""
    for name, lab in after.items():
        old = before.get(name)
        moved = old is not None and sorted(old.synonyms) != sorted(lab.synonyms)
        changed = changed or old is None or old.active != lab.active or moved
        if old is None or not lab.active or (old.active and old.synonyms == lab.synonyms):
            continue
        if old.active and not moved:
            console.print(f"{name}: synonyms reordered ({', '.join(lab.synonyms)}); nothing to retrain", markup=False)
            continue
        if not old.active:
            console.print(f"{name}: re-activated; synonyms {', '.join(lab.synonyms) or 'none'}", markup=False)
        else:
            console.print(f"{name}: synonyms {', '.join(old.synonyms) or 'none'} -> "
                          f"{', '.join(lab.synonyms) or 'none'}", markup=False)
        if lab.threshold is not None:
            console.print(f"{name}: its threshold stays pinned at {lab.threshold:g}, but the next run retrains the "
                          f"label and its scores may move (`tagger labels set {name!r} --clear` unpins)", markup=False)
    if changed and current is not None:
        console.print(f"the next `tagger nightly` applies this (current_tags show run {current} until then)",
                      markup=False)


def _warn_clashes(cat: Catalog, names: list[str]) -> None:
    """A warning line per name or synonym of ``names`` that reads as a plural of another label's, or
    lies inside another label's (or another's inside it); at most ``MAX_WARNINGS`` of each kind."""
    seen: set[frozenset[tuple[str, str]]] = set()
    for clash in cat.term_clashes(names):
        pair = frozenset({(clash.label, clash.term), (clash.other, clash.other_term)})
        if pair not in seen and len(seen) < MAX_WARNINGS:
            seen.add(pair)
            err_console.print(f"warning: {clash.describe()}", markup=False)
    inside = cat.terms_inside(names)
    for item in inside[:MAX_WARNINGS]:
        err_console.print(f"warning: {item.describe()}", markup=False)
    if len(inside) > MAX_WARNINGS:
        err_console.print(f"warning: ... and {len(inside) - MAX_WARNINGS} more names inside others", markup=False)


@labels_app.command("add")
def labels_add(
    names: Annotated[Optional[list[str]], typer.Argument(help="label names (quote names with spaces)")] = None,
    synonym: Annotated[Optional[list[str]], typer.Option(
        "--synonym", "-s", help="NAME=SYNONYM, repeatable; replaces NAME's stored synonyms (to add or remove "
                                "one: `tagger labels set NAME --synonym S` / `--no-synonym S`)")] = None,
    toy: Annotated[bool, typer.Option("--toy", help="also add the toy-world vocabulary with its synonyms")] = False,
    parent: ParentOpt = None,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    wait: WaitOpt = QUICK_WAIT,
) -> None:
    """Add labels, or re-activate retired ones (--parent: under parent labels, added when new). A name
    or synonym that another active label already has (any case, spaces or hyphens aside) is refused; a plural of
    one, or a name inside another's, is warned of."""
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
    with reported(), open_catalog(workspace, read_only=False, wait=wait, create=True) as cat:
        before = _vocab(cat)
        if parents:  # a cycle or a clashing new parent is refused before anything is added
            cat.check_parents(names, parents)
            cat.check_labels(names + [p.strip() for p in parents if p.strip() not in before], synonyms or None)
        cat.add_labels(names, synonyms or None, strict=True)
        if parents:
            cat.add_parents(names, parents)
        after, current = _vocab(cat), cat.current_run()
        _warn_clashes(cat, names + parents)
    again, now = len({n.strip() for n in names} & _active(before)), _active(after)
    console.print(f"added {len(now - _active(before))} label(s)" + (f" ({again} already active)" if again else "")
                  + f"; {len(now)} active" + (f"; parents: {', '.join(parents)}" if parents else ""), markup=False)
    _print_edits(before, after, current, changed=bool(parents))


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
        active = set(cat.active_labels())
    fmt = output_format(as_json, nl=as_nl)
    table = fmt == "table"
    pins = not table or any(lab.threshold is not None for lab in labels)  # the table shows pins when any
    ups = not table or any(lab.name in parents for lab in labels)  # and parents when any

    def ups_of(name: str) -> list[str]:  # the table marks a retired parent: runs pass over it
        return [p if not table or p in active else f"{p} (retired)" for p in parents.get(name, [])]

    def pin(t: float | None) -> float | str | None:
        return t if not table or t is None else f"{t:.6g}"
    rows = [(lab.label_id, lab.name, lab.synonyms, *((ups_of(lab.name),) if ups else ()),
             "active" if lab.active else "retired", *((pin(lab.threshold),) if pins else ()), lab.added_at,
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
    synonym: Annotated[Optional[list[str]], typer.Option(
        "--synonym", "-s", metavar="SYNONYM", help="add a synonym, keeping the others (repeatable); refused when "
                                                   "another active label has it as its name or synonym")] = None,
    no_synonym: Annotated[Optional[list[str]], typer.Option(
        "--no-synonym", metavar="SYNONYM", help="remove a synonym of the label (repeatable)")] = None,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    wait: WaitOpt = QUICK_WAIT,
) -> None:
    """Pin (or unpin) a label's positive threshold for every later run, link and unlink its parents,
    add and remove its synonyms; every part is checked before any is made."""
    add, drop = list(parent or []), list(no_parent or [])
    syn_add, syn_drop = list(synonym or []), list(no_synonym or [])
    if threshold is None and not clear and not (add or drop or syn_add or syn_drop):
        fail("give --threshold X (none unpins), --clear, --parent PARENT, --no-parent PARENT, --synonym S "
             "or --no-synonym S")
    pin = threshold is not None or clear
    value = _threshold_value(threshold, clear) if pin else None
    label = name.strip()
    with reported(), open_catalog(workspace, read_only=False, wait=wait) as cat:
        before = _vocab(cat)
        _check_set(cat, before, label, add, drop, syn_add, syn_drop)
        if drop:
            cat.remove_parents(label, drop)
        was = cat.set_threshold(label, value) if pin else None
        if add:
            cat.add_parents(label, add)
        if syn_add or syn_drop:
            cat.edit_synonyms(label, syn_add, syn_drop)
        after, current = _vocab(cat), cat.current_run()
        _warn_clashes(cat, [label, *add] if syn_add or add else [])
        parents = cat.label_parents().get(label, [])
    if pin:
        now = "unpinned (fitted per run)" if value is None else f"pinned at {value:g}"
        console.print(f"{label}: threshold {now} (was {'unpinned' if was is None else f'{was:g}'})"
                      + ("" if after[label].active else "; the label is retired"), markup=False)
    if add or drop:
        console.print(f"{label}: parents {', '.join(parents) or 'none'}", markup=False)
    if (syn_add or syn_drop) and before[label].synonyms == after[label].synonyms:
        why = _unchanged_why(label, syn_add, list(before[label].synonyms or []))
        console.print(f"{label}: synonyms unchanged ({', '.join(after[label].synonyms) or 'none'})"
                      + (f": {why}" if why else ""), markup=False)
    if not after[label].active and (add or drop or syn_add or syn_drop):
        console.print(f"{label}: the label is retired: its synonyms and parents are kept for when it is added "
                      f"again (tagger labels add {label})", markup=False)
    _print_edits(before, after, current, changed=bool(add or drop) or (pin and was != value))


def _unchanged_why(label: str, added: list[str], had: list[str]) -> str:
    """Why synonyms given to ``label`` were not added: each already one, or a form of its name."""
    from ..text.vocab import same_term
    parts = []
    for syn in dict.fromkeys(x.strip() for x in added):
        if syn in had:
            parts.append(f"{syn!r} is already one")
        elif same_term(syn, label):
            parts.append(f"{syn!r} is a form of the name {label!r}, which sentences already match")
    return "; ".join(parts)


def _check_set(cat: Catalog, before: dict[str, Label], label: str, add: list[str], drop: list[str],
               syn_add: list[str], syn_drop: list[str]) -> None:
    """Refuse (CatalogError) a `labels set` any part of which would be refused, before any is made."""
    if label not in before:
        near = [n for n in before if n.casefold() == label.casefold()]
        raise CatalogError(f"unknown label {label!r}" + (f" (names are case-sensitive: use {near[0]!r})" if near
                                                          else " (add it with `tagger labels add`)"))
    have = cat.label_parents().get(label, [])
    absent = [p.strip() for p in drop if p.strip() not in have]
    if absent:
        raise CatalogError(f"label {label!r} has no parent(s) {absent!r} (it has {have or 'none'})")
    synonyms = before[label].synonyms
    if syn_add or syn_drop:
        synonyms = cat.edit_synonyms(label, syn_add, syn_drop, dry_run=True)[1]
    if add:  # new parents checked against the label's synonyms as they will be
        cat.check_parents(label, add)
        cat.check_labels([label, *(p.strip() for p in add if p.strip() not in before)], {label: synonyms})


@labels_app.command("retire")
def labels_retire(
    names: Annotated[list[str], typer.Argument(help="label names to retire")],
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    wait: WaitOpt = QUICK_WAIT,
) -> None:
    """Retire labels: kept for the history of old runs, no longer used by new ones."""
    with reported(), open_catalog(workspace, read_only=False, wait=wait) as cat:
        before = _vocab(cat)
        n = cat.retire_labels(names)
        after, current, edges = _vocab(cat), cat.current_run(), cat.label_parents()
    gone = len({x.strip() for x in names}) - n
    console.print(f"retired {n} label(s)" + (f" ({gone} already retired)" if gone else "")
                  + f"; {len(_active(after))} active", markup=False)
    for label in sorted(_active(before) - _active(after)):
        kids = [c for c, ps in edges.items() if label in ps and c in _active(after)]
        if kids:
            console.print(f"{label}: was a parent of {', '.join(kids)}; tag runs pass over it while it is retired "
                          "(the links stay for when it is added again)", markup=False)
    _print_edits(before, after, current)


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
    idle = running_job(workspace_at(workspace, create=False).catalog) is None  # 'running' runs were left
    rows = []
    for r in runs:
        left = r.status == "running" and idle
        status = "interrupted" if left else r.status + (" (pruned)" if r.pruned_at else "")
        rows.append((r.run_id, r.kind, status, r.started_at, r.finished_at, r.model_id,
                     heads.get(r.classifier_id) if r.classifier_id else None, r.classifier_id, run_mode(r),
                     r.n_images, r.n_tags, len(r.labels or []), r.error or (LEFT_RUNNING if left else None)))
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
    moved = "".join(f"; renamed: {o} -> {n}" for n, o in diff.get("renamed", {}).items())
    console.print(f"run {a} -> run {b}: labels added: {added}; removed: {removed}{moved}", markup=False)
    rows = [(r["label"], r["a_positive"], r["b_positive"], f"+{r['gained']}", f"-{r['lost']}")
            for r in diff["labels"]]
    emit_rows(("label", f"positive in {a}", f"positive in {b}", "gained", "lost"), rows,
              title=f"positive tags: +{diff['gained']} / -{diff['lost']}")
    print_flips(diff["flips"], a)
