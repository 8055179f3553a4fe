"""Files of review decisions: a CSV of ``uri,label,decision`` rows (a header, optional, may name the
three columns in any order beside others, which are ignored), or the JSON file the report's review
queue downloads (``{"format": "tagger-review", "version": 1, "run": N, "decisions": [...]}``,
each decision ``{"uri", "label", "decision"}``)."""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from ..catalog.review import DECISIONS
from ..errors import ConfigError
from ..textfile import read_utf8_text

__all__ = ["FILE_FORMAT", "decisions_document", "read_decisions"]

FILE_FORMAT = "tagger-review"
_COLUMNS = ("uri", "label", "decision")


def decisions_document(run_id: int | None, decisions: list[dict[str, str]]) -> dict[str, Any]:
    """The JSON document of some decisions, as the report's review queue writes it."""
    return {"format": FILE_FORMAT, "version": 1, "run": run_id,
            "decisions": [{k: d[k] for k in _COLUMNS} for d in decisions]}


def _from_json(path: Path, text: str) -> list[tuple[str, str, str]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"decisions file {path} is not valid JSON: {e}") from e
    except RecursionError:
        raise ConfigError(f"decisions file {path} nests too deeply to be a decisions file") from None
    items = doc.get("decisions") if isinstance(doc, dict) else doc
    if isinstance(doc, dict) and doc.get("format", FILE_FORMAT) != FILE_FORMAT:
        raise ConfigError(f"decisions file {path} has format {doc.get('format')!r}, expected {FILE_FORMAT!r}")
    if not isinstance(items, list):
        raise ConfigError(f"decisions file {path} holds no list of decisions")
    out = []
    for k, item in enumerate(items, 1):
        if not isinstance(item, dict) or any(not isinstance(item.get(c), str) for c in _COLUMNS):
            raise ConfigError(f"decisions file {path}: decision {k} needs string fields uri, label and decision")
        out.append((item["uri"], item["label"], item["decision"]))
    return out


def _header(path: Path, row: list[str]) -> tuple[int, int, int] | None:
    """Where uri, label and decision stand when ``row`` is a header (it names one of them and holds no
    decision); None for a data row. ConfigError for a header lacking one of them or naming one twice."""
    names = [c.strip().lower() for c in row]
    if not set(names) & set(_COLUMNS) or set(names) & set(DECISIONS):
        return None
    twice = [c for c in _COLUMNS if names.count(c) > 1]
    if twice:
        raise ConfigError(f"decisions file {path}: the header names {twice[0]} twice")
    missing = [c for c in _COLUMNS if c not in names]
    if missing:
        raise ConfigError(f"decisions file {path}: the header ({','.join(row)}) has no {' or '.join(missing)} "
                          "column: it needs uri, label and decision, in any order")
    return names.index("uri"), names.index("label"), names.index("decision")


def _from_csv(path: Path, text: str) -> list[tuple[str, str, str]]:
    try:
        rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    except csv.Error as e:  # e.g. a field over the csv module's limit (128 KiB)
        raise ConfigError(f"cannot read decisions file {path}: {e}") from None
    header = _header(path, rows[0]) if rows else None
    (u, lab, d), width = (header, len(rows[0])) if header else ((0, 1, 2), 3)
    out = []
    for k, row in enumerate(rows[1:] if header else rows, 1):
        if len(row) != width:
            said = f"the header has {width}" if header else "expected uri,label,decision"
            raise ConfigError(f"decisions file {path}: row {k} has {len(row)} column(s), {said}")
        out.append((row[u], row[lab], row[d]))
    return out


def read_decisions(path: str | os.PathLike) -> tuple[list[tuple[str, str, str]], str]:
    """``(uri, label, decision)`` rows of a decisions file and its kind (``csv`` or ``report``).
    A ``.json`` file (or one starting with ``{`` or ``[``) is read as JSON, anything else as CSV."""
    p = Path(path)
    text = read_utf8_text(p, "decisions file")
    is_json = p.suffix.lower() == ".json" or text.lstrip()[:1] in ("{", "[")
    rows = _from_json(p, text) if is_json else _from_csv(p, text)
    if not rows:
        raise ConfigError(f"decisions file {p} holds no decision")
    _check_conflicts(p, rows)
    return rows, "report" if is_json else "csv"


def _check_conflicts(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """ConfigError when one image and label get two different decisions: which one the person meant
    cannot be told (a repeated identical row is fine)."""
    seen: dict[tuple[str, str], tuple[int, str]] = {}
    clashes = []
    for k, (uri, label, decision) in enumerate(rows, 1):
        decision = decision.strip().lower()  # as the decisions are read when recorded
        first = seen.setdefault((uri.strip(), label.strip()), (k, decision))
        if first[1] != decision:
            clashes.append((uri, label, first, (k, decision)))
    if clashes:
        uri, label, (k1, d1), (k2, d2) = clashes[0]
        more = f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else ""
        raise ConfigError(f"decisions file {path}: {uri} {label!r} is {d1!r} in decision {k1} and {d2!r} in decision "
                          f"{k2}{more}: keep one decision per image and label (nothing was recorded)")
