"""Build the static report of a tag run: ``index.html`` (overview), a page per label, ``review.html``
(the needs-review queue) and, against an older run, ``diff.html``; pages are jinja2 templates, charts
inline SVG, thumbnails small JPEGs copied from the workspace's cache. Every page is opened from disk."""
from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from ..catalog import report as q
from ..catalog.diff import run_diff
from ..catalog.flips import decision_flips, previous_tag_run
from ..catalog.runs import head_label
from ..atomic import atomic_dir
from ..errors import ConfigError
from ..workspace import Workspace
from .charts import bar_chart, column_chart, score_histogram
from .review_file import FILE_FORMAT
from .thumbs import ThumbnailCache

if TYPE_CHECKING:
    from ..catalog import Catalog, Run

__all__ = ["MARKER", "ReportConfig", "build_report"]

logger = logging.getLogger(__name__)

#: The file that marks a folder as a report (a rebuild replaces such a folder, and no other).
MARKER = ".tagger-report"
#: The marker's first line; the files the report wrote follow, one per line.
MARKER_TEXT = "a tagger report: `tagger report` replaces this folder (files it wrote below)\n"
_PER_IMAGE_BINS = 12  # positives-per-image columns; the last gathers the rest


@dataclass(frozen=True)
class ReportConfig:
    """Size knobs: thumbnails per page, score histogram bins, error rows listed."""

    max_images: int = 24
    bins: int = 30
    max_errors: int = 50

    def __post_init__(self) -> None:
        if self.max_images < 1 or self.bins < 1 or self.max_errors < 0:
            raise ConfigError("report sizes must be positive (max_images >= 1)")


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:40] or "label"


def _check_out(out: Path) -> Path:
    """``out`` once a report may go there: new, empty or an earlier report (any other content is
    refused), in a folder where the new one can be built beside it and renamed into place."""
    marked = (out / MARKER).is_file()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not marked)):
        raise ConfigError(f"--out {out} exists and is not a tagger report: give a new or empty folder")
    foreign = _foreign(out) if marked else []
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise ConfigError(f"--out {out} is an earlier report holding files it did not write ("
                          f"{', '.join(foreign[:3])}{more}): a new report replaces the whole folder; move "
                          "them out, or give another folder")
    if out.parent.is_dir() and not os.access(out.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the report to {out}: its folder {out.parent} is not writable")
    return out


def _files(site: Path) -> list[str]:
    """Every file under ``site`` but the marker, as relative POSIX paths, sorted."""
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file() and p.name != MARKER)


def _foreign(out: Path) -> list[str]:
    """Files of the earlier report ``out`` that it did not write (its marker lists what it wrote; a
    marker without a list, from an older version: pages at the top, thumbs/ and assets/)."""
    try:
        listed = set((out / MARKER).read_text(encoding="utf-8", errors="surrogateescape").split("\n")[1:]) - {""}
    except OSError as e:
        raise ConfigError(f"cannot read the earlier report's marker {out / MARKER}: {e.strerror or e}") from e
    ours = (lambda f: f in listed) if listed else \
        (lambda f: (f.endswith(".html") and "/" not in f) or f.split("/")[0] in ("thumbs", "assets"))
    return [f for f in _files(out) if not ours(f)]


def _prepare(site: Path) -> Path:
    """The site's sub-folders and marker, in the (temp) folder ``site`` the report is built in."""
    try:
        (site / "thumbs").mkdir()
        (site / "assets").mkdir()
        (site / MARKER).write_text(MARKER_TEXT)
    except OSError as e:
        raise ConfigError(f"cannot write the report to {site}: {e.strerror or e}") from e
    return site


def _cache_dir(ws_root: Path, site: Path) -> Path:
    """The workspace's thumbnail cache, or the site's own folder where the workspace is read-only."""
    cache = Workspace(Path(ws_root)).thumbnails_dir
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        return site / "thumbs"
    return cache if os.access(cache, os.W_OK) else site / "thumbs"


@dataclass
class _Site:
    """What the pages share while the report is built: templates, thumbnails and the search index."""

    cat: "Catalog"
    run: "Run"
    out: Path
    cfg: ReportConfig
    cache: ThumbnailCache
    env: Environment
    common: dict[str, Any]
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    pages: list[str] = field(default_factory=list)
    flips: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> its flip from the run before

    def card(self, row: dict[str, Any], page: str, title: str) -> dict[str, Any]:
        """An image row as a page shows it, its thumbnail placed in the site and indexed for search."""
        name = PurePosixPath(str(row["uri"])).name or str(row["uri"])
        thumb = self.cache.place(row["uri"], row["content_hash"], self.out / "thumbs")
        entry = self.files.setdefault(row["uri"], {"name": name, "pages": {}})
        entry["pages"].setdefault(page, title)
        return {**row, "name": name, "thumb": f"thumbs/{thumb}" if thumb else None}

    def render(self, template: str, page: str, name: str, title: str, **ctx: Any) -> None:
        html = self.env.get_template(template).render(title=title, page=page, **self.common, **ctx)
        (self.out / name).write_text(html, encoding="utf-8")
        self.pages.append(name)


def _overview(site: _Site, labels: list[dict[str, Any]]) -> None:
    cat, run = site.cat, site.run
    totals, per_image = q.run_shape(cat, run.run_id)  # one pass over the run's tags for both
    n_errors, errors = q.error_images(cat, site.cfg.max_errors)
    cols = [(str(k), n) for k, n in per_image if k < _PER_IMAGE_BINS - 1]
    rest = sum(n for k, n in per_image if k >= _PER_IMAGE_BINS - 1)
    if rest:
        cols.append((f"{_PER_IMAGE_BINS - 1}+", rest))
    clf = cat.get_classifier(run.classifier_id) if run.classifier_id else None
    tag_cfg = (run.config or {}).get("tag") or {}
    rule = tag_cfg.get("decision", "standardized")
    rule = f"per-image standardised score >= {tag_cfg.get('threshold', 1.0)}" if rule == "standardized" else \
        f"per-label thresholds ({rule})"
    site.render("overview.html", "overview", "index.html", "Overview", labels=labels, totals=totals, rule=rule,
                head=f"head {head_label(clf['config'])}, corpus {clf['corpus_id'] or '-'}" if clf else None,
                reviewed=sum(r["reviewed"] for r in labels), n_errors=n_errors, errors=errors,
                label_chart=bar_chart([(r["label"], r["positives"], r["page"]) for r in labels], "positives per label"),
                image_chart=column_chart(cols, "images by number of positive labels"))


def _label_page(site: _Site, row: dict[str, Any]) -> None:
    cat, run_id, n = site.cat, site.run.run_id, site.cfg.max_images
    near = n // 4 if row["threshold"] is not None else 0
    title = f"Label {row['label']}"

    def cards(which: str, limit: int) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        rows = q.label_images(cat, run_id, row["label"], which, limit, row["threshold"])
        return [site.card(r, row["page"], title) for r in rows]
    hist = q.label_histogram(cat, run_id, row["label"], site.cfg.bins)
    site.render("label.html", "label", row["page"], title, row=row, flip=site.flips.get(row["label"]),
                histogram=score_histogram(hist, row["threshold"], f"scores of {row['label']}") if hist else None,
                top=cards("top", n - 2 * near), above=cards("above", near), below=cards("below", near))


def _review_page(site: _Site) -> None:
    rows = q.review_queue(site.cat, site.run.run_id, site.cfg.max_images)
    order = "confidence nearest 0.5; without a confidence, score nearest the label's threshold"
    site.render("review.html", "review", "review.html", "Needs review", order=order, file_format=FILE_FORMAT,
                queue=[site.card(r, "review.html", "Needs review") for r in rows])


def _share(budget: int, keys: list[tuple[str, str]], rows: dict[tuple[str, str], list[Any]]) -> dict[Any, int]:
    """Split ``budget`` thumbnails over the lists ``keys`` of ``rows`` in turn (one each per round)."""
    take = {k: 0 for k in keys}
    while budget > 0:
        grown = False
        for k in keys:
            if budget > 0 and take[k] < len(rows.get(k, ())):
                take[k] += 1
                budget -= 1
                grown = True
        if not grown:
            break
    return take


def _diff_page(site: _Site, against: int, pages: dict[str, str]) -> None:
    diff = run_diff(site.cat, against, site.run.run_id)
    changed = sorted((r for r in diff["labels"] if r["gained"] or r["lost"]),
                     key=lambda r: (-(r["gained"] + r["lost"]), r["label"]))
    shown: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in q.diff_images(site.cat, against, site.run.run_id, site.cfg.max_images):
        shown.setdefault((r["label"], r["change"]), []).append(r)
    take = _share(site.cfg.max_images, [(row["label"], c) for row in changed for c in ("gained", "lost")], shown)
    out = []
    for row in changed:
        lists = {f"{c}_images": [site.card(r, "diff.html", f"Diff with run {against}")
                                 for r in shown.get((row["label"], c), [])[:take[row["label"], c]]]
                 for c in ("gained", "lost")}
        out.append({**row, "page": pages.get(row["label"]), **lists})
    site.render("diff.html", "diff", "diff.html", f"Run {against} → run {site.run.run_id}", diff=diff, changed=out)


def _write_assets(site: _Site, labels: list[dict[str, Any]]) -> None:
    folder = resources.files("tagger.report") / "templates" / "assets"
    for name in ("style.css", "report.js"):
        (site.out / "assets" / name).write_text((folder / name).read_text(encoding="utf-8"), encoding="utf-8")
    index = {"labels": [[r["label"], r["page"], r["positives"]] for r in labels],
             "files": [[f["name"], uri, sorted(f["pages"].items())] for uri, f in sorted(site.files.items())]}
    text = json.dumps(index, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    (site.out / "assets" / "search-index.js").write_text(f"window.TAGGER_INDEX = {text};\n", encoding="utf-8")


def build_report(cat: "Catalog", ws_root: str | os.PathLike, out: str | os.PathLike, *, run_id: int | None = None,
                 against: int | None = None, cfg: ReportConfig | None = None) -> dict[str, Any]:
    """Write the report of run ``run_id`` (default: the current one) into ``out``, with a diff page
    against run ``against``; thumbnails are cached under ``<ws_root>/thumbnails``. Returns a summary.

    The site is built beside ``out`` and renamed into place once complete: an earlier report there
    stays whole until then, and a failed build leaves it as it was."""
    t0, cfg = time.time(), cfg or ReportConfig()
    run = cat.tag_run(run_id)
    if against is not None:
        cat.tag_run(against)  # unknown or pruned: refused before anything is written
    out = _check_out(Path(out))
    with atomic_dir(out) as tmp:
        pages, made, failed = _build(cat, run, _prepare(tmp), Path(ws_root), against, cfg)
        (tmp / MARKER).write_text(MARKER_TEXT + "".join(f + "\n" for f in _files(tmp)),  # what it wrote
                                  encoding="utf-8", errors="surrogateescape")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    logger.info("report of run %d in %s: %d pages, %d bytes", run.run_id, out, pages, size)
    return {"run": run.run_id, "against": against, "out": str(out), "pages": pages,
            "thumbnails": len(list((out / "thumbs").iterdir())), "thumbnails_made": made,
            "no_preview": failed, "bytes": size, "seconds": round(time.time() - t0, 2)}


def _build(cat: "Catalog", run: "Run", site_dir: Path, ws_root: Path, against: int | None,
           cfg: ReportConfig) -> tuple[int, int, int]:
    """Fill ``site_dir`` with the pages of ``run``; returns (pages, thumbnails made, without preview)."""
    env = Environment(loader=PackageLoader("tagger.report", "templates"), undefined=StrictUndefined,
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = lambda t: t.strftime("%Y-%m-%d %H:%M:%S UTC") if t is not None else "-"
    common = {"run": run, "against": against, "diff_page": against is not None, "max_images": cfg.max_images,
              "built": time.strftime("%Y-%m-%d %H:%M")}
    site = _Site(cat, run, site_dir, cfg, ThumbnailCache(_cache_dir(ws_root, site_dir)), env, common)
    flips_against = against if against is not None else previous_tag_run(cat, run.run_id)
    flips = decision_flips(cat, flips_against, run.run_id) if flips_against is not None else []
    site.common.update(flips=flips, flips_against=flips_against)
    site.flips = {f["label"]: f for f in flips}
    labels = q.label_summary(cat, run.run_id)
    for k, row in enumerate(labels):
        row["page"] = f"label-{k:03d}-{_slug(row['label'])}.html"
    _overview(site, labels)
    for row in labels:
        _label_page(site, row)
    _review_page(site)
    if against is not None:
        _diff_page(site, against, {r["label"]: r["page"] for r in labels})
    _write_assets(site, labels)
    return len(site.pages), site.cache.made, site.cache.failed
