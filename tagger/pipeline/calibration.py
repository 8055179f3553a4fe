"""What a tag run's decisions take besides the corpus: thresholds pinned on labels, and a small
labelled set (image URI -> labels, read from a CSV or Parquet file) kept in the catalog so that
every later run, the nightly one included, calibrates from it."""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..ids import short_sha256
from ..textfile import check_not_utf16
from ..workspace import Workspace
from ..method.decisions import DecisionConfig, Decisions, TextAnchors
from ..method.keep import keep_positives

if TYPE_CHECKING:
    from ..method.names import ZeroShotNames

logger = logging.getLogger(__name__)

#: A label is re-fitted from the labelled set when it has this many labelled positives and negatives.
LABELLED_MIN_IMAGES = 2
_SPLIT = re.compile(r"[;|]")


def _config_error(msg: str) -> Exception:
    from ..errors import ConfigError
    return ConfigError(msg)


def _read_table(path: Path):
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            table = pq.read_table(path)
        else:  # every column read as text: a label 2019 or 007 is a name, not a number
            check_not_utf16(path, "labelled file")
            names = pacsv.open_csv(path).schema.names if path.stat().st_size else []  # its first block only
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names}))
    except (OSError, pa.ArrowInvalid, UnicodeDecodeError) as e:
        raise _config_error(f"cannot read labelled file {path}: {e}") from e
    folded = [c.lower() for c in table.column_names]
    repeated = sorted({c for c in folded if folded.count(c) > 1 and c in ("uri", "label", "labels")})
    if repeated:
        raise _config_error(f"labelled file {path} has the column(s) {repeated} more than once")
    return table


def _text(value: Any, path: Path) -> str | None:
    """A cell as text: bytes decoded (UTF-8), a number written out (2019.0 as 2019); None stays None."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if value is not None and not isinstance(value, str):
        raise _config_error(f"labelled file {path}: a cell holds {type(value).__name__}, not text")
    return value


def _names(value: Any, path: Path) -> list[str]:
    """The label names one cell holds: a list, or text split at ``;`` / ``|``."""
    if isinstance(value, list):
        return [t for n in value if (t := _text(n, path)) is not None]
    return _SPLIT.split(_text(value, path) or "")


def read_labelled_file(path: str | os.PathLike) -> dict[str, list[str]]:
    """Image URI -> labels from a CSV or Parquet file with a ``uri`` column and either ``label``
    (one row per image and label; an empty label lists an image showing none) or ``labels`` (a list,
    or names separated by ``;`` or ``|``). ConfigError when the file or its columns are wrong."""
    p = Path(path)
    if not p.is_file():
        raise _config_error(f"labelled file {p} not found")
    table = _read_table(p)
    cols = {c.lower(): c for c in table.column_names}
    if "uri" not in cols or not ({"label", "labels"} & set(cols)):
        raise _config_error(f"labelled file {p} needs a 'uri' column and a 'label' or 'labels' column, "
                            f"has {table.column_names}")
    uris = table.column(cols["uri"]).to_pylist()
    raw = table.column(cols.get("label") or cols["labels"]).to_pylist()
    out: dict[str, set[str]] = {}
    for cell, value in zip(uris, raw):
        uri = _text(cell, p)
        if not uri or not uri.strip():
            continue
        names = _names(value, p)
        out.setdefault(uri.strip(), set()).update(n.strip() for n in names if n.strip())
    if not out:
        raise _config_error(f"labelled file {p} lists no image")
    return {u: sorted(v) for u, v in out.items()}


def record_labelled_set(cat, path: str | os.PathLike, model_id: str, vocabulary: list[str]) -> dict[str, Any]:
    """Read a labelled file and make its encoded images the catalog's calibration set (replacing the
    previous one). Labels outside ``vocabulary`` are refused; URIs not in the catalog or not encoded
    with ``model_id`` are reported (and skipped). Returns a report."""
    labelled = read_labelled_file(path)
    unknown = sorted({n for v in labelled.values() for n in v} - set(vocabulary))
    if unknown:
        raise _config_error(f"labelled file {path} names label(s) not in the vocabulary: {unknown}")
    variants = {u: {u, os.path.abspath(os.path.expanduser(u))} for u in labelled}
    known = cat.image_ids(sorted({v for vs in variants.values() for v in vs}))
    ids = {u: next((known[v] for v in sorted(vs) if v in known), None) for u, vs in variants.items()}
    encoded = {i for i, _ in cat.shards_of(model_id, [i for i in ids.values() if i is not None])}
    unknown_uris = sorted(u for u, i in ids.items() if i is None)
    not_encoded = sorted(u for u, i in ids.items() if i is not None and i not in encoded)
    keep = {int(i): labelled[u] for u in labelled if (i := ids[u]) is not None and i in encoded}
    if unknown_uris:
        logger.warning("%d URI(s) of %s are not in the catalog, e.g. %s", len(unknown_uris), path, unknown_uris[0])
    if not keep:
        raise _config_error(f"no image of {path} is in the catalog and encoded with {model_id} "
                            f"({len(unknown_uris)} unknown URI(s), {len(not_encoded)} not encoded)")
    cat.set_calibration_images(keep)
    return {"file": str(path), "images": len(keep), "unknown_uris": unknown_uris, "not_encoded": not_encoded}


@dataclass(frozen=True)
class DecisionInputs:
    """The user's part of a run's decisions: pinned thresholds and the labelled set."""

    pinned: dict[str, float]
    labelled: dict[int, list[str]]

    def key(self) -> dict[str, Any]:
        """What identifies these inputs in a run's config (a changed pin or set makes a new run)."""
        digest = short_sha256(json.dumps(sorted(self.labelled.items())))
        return {"pinned": dict(sorted(self.pinned.items())), "labelled": f"{len(self.labelled)}:{digest}"}

    def truth(self, image_ids: list[int], labels: list[str]) -> np.ndarray:
        """Multi-hot ``(len(image_ids), len(labels))`` of the labelled images."""
        col = {n: j for j, n in enumerate(labels)}
        y = np.zeros((len(image_ids), len(labels)), bool)
        for i, image_id in enumerate(image_ids):
            y[i, [col[n] for n in self.labelled[image_id] if n in col]] = True
        return y


def decision_inputs(cat, labels: list[str]) -> DecisionInputs:
    """The pins of ``labels`` and the labelled set, as stored in the catalog."""
    wanted = set(labels)
    pins = {k: v for k, v in cat.pinned_thresholds().items() if k in wanted}
    return DecisionInputs(pins, cat.calibration_images())


def decision_rows(d: Decisions, labelled: set[str]) -> list[dict[str, Any]]:
    """One ``run_thresholds`` row per label (``+inf`` -- never positive -- stored as NULL)."""
    t, cut = d.thresholds(), d.cutoffs()
    rows = []
    for j, name in enumerate(d.labels):
        source = "pinned" if name in d.overrides else "labelled" if name in labelled else "fit"
        sep = d.text_separation[j] if d.text_separation is not None else np.nan
        reason = "threshold pinned by a person" if source == "pinned" else d.reason(j) or None
        rows.append({"label": name, "threshold": None if t[j] == np.inf else float(t[j]),
                     "present": bool(d.present[j]), "source": source, "reason": reason,
                     "text_separation": float(sep) if np.isfinite(sep) else None, "cutoff": float(cut[j]),
                     **{k: float(getattr(d, k)[j]) for k in ("mu0", "sd0", "mu1", "sd1", "prior")}})
    return rows


def decisions_from_rows(rows: list[dict[str, Any]], labels: list[str], cfg: DecisionConfig) -> Decisions:
    """Rebuild a run's Decisions from its stored rows (a resumed run decides as it started: each
    label at its stored cutoff; rows stored before cutoffs were, at ``cfg.cutoff``)."""
    by = {r["label"]: r for r in rows}
    arr = {k: np.asarray([by[n][k] for n in labels], np.float64) for k in ("mu0", "sd0", "mu1", "sd1", "prior")}
    pins = {n: float(by[n]["threshold"]) for n in labels if by[n]["source"] == "pinned"}
    seps = [by[n].get("text_separation") for n in labels]
    return Decisions(list(labels), present=np.asarray([by[n]["present"] for n in labels], bool), cutoff=cfg.cutoff,
                     label_cutoffs=np.asarray([cfg.cutoff if by[n].get("cutoff") is None else by[n]["cutoff"]
                                               for n in labels], np.float64),
                     overrides=pins, reasons=[by[n].get("reason") or "" for n in labels],
                     text_separation=None if any(x is None for x in seps) else np.asarray(seps, np.float64),
                     mu0=arr["mu0"], sd0=arr["sd0"], mu1=arr["mu1"], sd1=arr["sd1"], prior=arr["prior"])


def former_positives(cat, base_run: int, labels: list[str], new: list[str], n: int) -> dict[str, float]:
    """The labels of ``new`` that name what a present label of the base run named (the same label, its
    synonyms only added to, or renamed: :func:`~tagger.catalog.flips.renamed`) -> the positives that
    label had, as a share of the base run's images, times ``n``."""
    from ..catalog.flips import classifier_synonyms, renamed
    run = cat.get_run(base_run)
    rows = {r["label"]: r for r in cat.run_thresholds(base_run)}
    old = classifier_synonyms(cat, run.classifier_id)
    now = {lab.name: set(lab.synonyms or []) for lab in cat.list_labels(include_retired=False)}
    same = {x: x for x in new if x in rows and set(old.get(x, [])) <= now.get(x, set())}
    same.update({x: o for x, o in renamed(list(run.labels or []), labels).items() if x in new and x not in same})
    share = n / max(int(run.n_images or 0), 1)
    return {x: int(rows[o]["positives"]) * share for x, o in same.items()  # fitted there: not pinned, not refit
            if o in rows and rows[o]["present"] and rows[o].get("source", "fit") == "fit"
            and int(rows[o]["positives"]) > 0}


def parents_in(cat, run_id: int) -> set[str]:
    """The labels that had children when run ``run_id`` was tagged, as its classifier's corpus records
    the hierarchy (the active hierarchy now where that corpus is not in the catalog): a positive count
    of theirs there holds their children's images too, so it is no measure of their own rows."""
    from ..text.corpus import corpus_parents
    run = cat.get_run(run_id)
    corpus = cat.classifier_corpus(run.classifier_id) if run is not None else None
    tree = corpus_parents(corpus["config"] or {}) if corpus is not None else cat.active_hierarchy()
    return {p for ps in (tree or {}).values() for p in ps}


def hold_former(d: Decisions, calibrated: np.ndarray, anchors: "TextAnchors", cfg: DecisionConfig,
                named: "np.ndarray | ZeroShotNames | None", former: dict[str, float], skip: set[str], why: str,
                grow: bool = False) -> Decisions:
    """``d`` with each label of ``former`` (its former positives on this sample, :func:`former_positives`)
    not in ``skip`` held to them (:func:`~tagger.method.keep.keep_positives`, absent ones too); held back
    from growing too only with ``grow`` (the sample's images are all the base run's: :func:`same_sample`)."""
    column = {n: j for j, n in enumerate(d.labels)}
    targets = {column[n]: t for n, t in former.items() if n not in skip and n in column}
    if not targets:
        return d
    return keep_positives(d, calibrated, anchors, cfg, targets, named, revive=True, why=why, grow=grow)


def same_sample(root: str | Path, base_run: int, sample_shards: list[str]) -> bool:
    """Whether the base run tagged every shard of the calibration sample: its images are the base run's,
    so a label tagging far more of them than the base run did drifted (new images may show it more)."""
    base = Workspace(Path(root)).run_dir(str(base_run))
    return all(Workspace.tag_file(base, s).is_file() for s in sample_shards)
