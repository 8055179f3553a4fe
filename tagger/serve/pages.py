"""The app's pages (GET): the overview, a label's images page by page, one image with its tags and
neighbours, search by text or by image, the diff of two runs and the review queue. Each reads the
catalog in one short read-only open and renders a jinja2 template; the overview, the label facts and
the card look are the static report's own templates."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from starlette.requests import Request

from ..catalog import browse
from ..catalog import report as q
from ..catalog.diff import run_diff
from ..catalog.flips import decision_flips, previous_tag_run
from ..catalog.runs import head_label
from ..catalog.undo import undoable_decision
from ..catalog.undo import undo_count
from ..errors import ConfigError, TaggerError
from ..report.charts import bar_chart, column_chart, score_histogram

if TYPE_CHECKING:
    from .app import Serve

__all__ = ["diff", "image", "label", "label_url", "overview", "review", "search"]

_PER_IMAGE_BINS = 12


def label_url(label: str) -> str:
    return "/label/" + quote(label, safe="")


def known_id(image_id: int) -> int:
    """``image_id`` when a catalog id can be it (a 64-bit integer), else LookupError (a 404)."""
    if not -(1 << 63) <= image_id < 1 << 63:
        raise LookupError(f"no image {image_id} in the catalog")
    return image_id


def _int(request: Request, name: str, default: int, lo: int = 1, hi: int = 10**9) -> int:
    raw = request.query_params.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _unit(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name, "").strip()
    if raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number between 0 and 1, got {raw!r}") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{name} must be a number between 0 and 1, got {raw!r}")
    return value


def _pager(request: Request, page: int, total: int, size: int) -> dict[str, Any]:
    """Page numbers and the links to the previous and next page (other query parameters kept)."""
    pages = max(1, math.ceil(total / size))
    if page > pages:
        raise LookupError(f"page {page} is past the last page ({pages})")
    params = {k: v for k, v in request.query_params.items() if k != "page"}

    def link(n: int) -> str:
        return request.url.path + "?" + urlencode({**params, "page": n})
    return {"page": page, "pages": pages, "total": total, "first": (page - 1) * size + 1 if total else 0,
            "last": min(total, page * size), "prev": link(page - 1) if page > 1 else None,
            "next": link(page + 1) if page < pages else None}


def overview(app: "Serve", request: Request) -> dict[str, Any]:
    with app.catalog.read() as cat:
        run = app.current(cat)
        labels = q.label_summary(cat, run.run_id)
        totals, per_image = app.run_shape(cat, run.run_id)
        n_errors, errors = q.error_images(cat, 50)
        clf = cat.get_classifier(run.classifier_id) if run.classifier_id else None
        against = previous_tag_run(cat, run.run_id)
        flips = decision_flips(cat, against, run.run_id) if against is not None else []
    for row in labels:
        row["page"] = label_url(row["label"])
    cols = [(str(k), n) for k, n in per_image if k < _PER_IMAGE_BINS - 1]
    rest = sum(n for k, n in per_image if k >= _PER_IMAGE_BINS - 1)
    cols += [(f"{_PER_IMAGE_BINS - 1}+", rest)] if rest else []
    tag_cfg = (run.config or {}).get("tag") or {}
    rule = tag_cfg.get("decision", "standardized")
    rule = f"per-image standardised score >= {tag_cfg.get('threshold', 1.0)}" if rule == "standardized" else \
        f"per-label thresholds ({rule})"
    return {"template": "overview.html", "page": "overview", "title": "Overview", "run": run, "labels": labels,
            "totals": totals, "rule": rule, "reviewed": sum(r["reviewed"] for r in labels),
            "head": f"head {head_label(clf['config'])}, corpus {clf['corpus_id'] or '-'}" if clf else None,
            "n_errors": n_errors, "errors": errors, "flips": flips, "flips_against": against,
            "label_chart": bar_chart([(r["label"], r["positives"], r["page"]) for r in labels], "positives per label"),
            "image_chart": column_chart(cols, "images by number of positive labels")}


def label(app: "Serve", request: Request, name: str) -> dict[str, Any]:
    page = _int(request, "page", 1)
    prov = request.query_params.get("provenance", "") or None
    if prov is not None and prov not in browse.PROVENANCES:
        raise ConfigError(f"provenance must be one of {', '.join(browse.PROVENANCES)}, got {prov!r}")
    filt = browse.LabelFilter(_unit(request, "min_conf"), _unit(request, "max_conf"), prov,
                              request.query_params.get("positive") == "1")
    size = app.cfg.page_size
    with app.catalog.read() as cat:
        run = app.current(cat)
        rows = [r for r in q.label_summary(cat, run.run_id) if r["label"] == name]
        if not rows:
            raise LookupError(f"run {run.run_id} has no label {name!r}")
        total, images = browse.label_page(cat, run.run_id, name, filt, (page - 1) * size, size)
        hist = q.label_histogram(cat, run.run_id, name, 30)
        against = previous_tag_run(cat, run.run_id)
        flips = {f["label"]: f for f in decision_flips(cat, against, run.run_id)} if against is not None else {}
    row = rows[0]
    return {"template": "label_page.html", "page": "label", "title": f"Label {name}", "run": run, "row": row,
            "flip": flips.get(name), "flips_against": against, "images": images, "filter": filt,
            "paging": _pager(request, page, total, size),
            "histogram": score_histogram(hist, row["threshold"], f"scores of {name}") if hist else None}


def image(app: "Serve", request: Request, image_id: int) -> dict[str, Any]:
    known_id(image_id)
    near: list[tuple[int, float]] = []
    why = None
    try:
        near = [h for h in app.searcher.like(image_id, app.cfg.neighbours + 1) if h[0] != image_id]
    except TaggerError as e:  # not encoded (yet), or no index
        why = str(e)
    with app.catalog.read() as cat:
        run = app.current(cat, required=False)
        info = browse.image_info(cat, image_id)
        if info is None:
            raise LookupError(f"no image {image_id} in the catalog")
        tags = browse.image_tags(cat, run.run_id if run else None, image_id)
        undo = undo_count(cat, image_id)
        cards = app.cards(cat, near[:app.cfg.neighbours])
    return {"template": "image.html", "page": "image", "title": info["uri"].rsplit("/", 1)[-1], "run": run,
            "info": info, "tags": tags, "undo": undo, "near": cards, "near_why": why if info["status"] != "error"
            else None, "back": str(request.url.path)}


def search(app: "Serve", request: Request) -> dict[str, Any]:
    text = request.query_params.get("q", "").strip()
    like = request.query_params.get("like", "").strip()
    k = _int(request, "k", app.cfg.page_size, 1, 500)
    hits: list[tuple[int, float]] = []
    query = None
    if like:
        try:
            like_id = known_id(int(like))
        except ValueError:
            raise ConfigError(f"like must be an image id, got {like!r}") from None
        with app.catalog.read() as cat:
            info = browse.image_info(cat, like_id)
        if info is None:
            raise LookupError(f"no image {like_id} in the catalog")
        if info["status"] == "error":
            raise ConfigError(f"image {like_id} could not be read ({info['error'] or 'no reason kept'}): it has no "
                              "embedding to search by")
        hits, query = app.searcher.like(like_id, k), f"images like image {like_id}"
    elif text:
        hits, query = app.searcher.text(text, k), repr(text)
    with app.catalog.read() as cat:
        run = app.current(cat, required=False)
        results = app.cards(cat, hits)
    names = list(run.labels or []) if run and text and not like else []
    labels = [n for n in names if text.lower() in n.lower()]
    return {"template": "search.html", "page": "search", "title": f"Search {query}" if query else "Search",
            "run": run, "text": text, "like": like, "query": query, "results": results,
            "labels": [(n, label_url(n)) for n in labels]}


def diff(app: "Serve", request: Request) -> dict[str, Any]:
    page, size = _int(request, "page", 1), app.cfg.page_size
    only = request.query_params.get("label", "") or None
    with app.catalog.read() as cat:
        run = app.current(cat)
        b = _int(request, "b", run.run_id)
        default_a = previous_tag_run(cat, b)
        a = _int(request, "a", default_a if default_a is not None else b)
        if a == b:  # no earlier run kept (pruned, or the first run): nothing to compare with
            cat.get_run(b)  # an unknown run is still an error
            return {"template": "diff_page.html", "page": "diff", "title": f"Run {b}", "run": run, "diff": None,
                    "a": a, "b": b, "note": f"run {b} against itself: nothing to compare" if "a" in request.query_params
                    else f"no earlier run of run {b} is kept to compare with (the first run, or the runs before it "
                         "were pruned): pick one above"}
        summary = run_diff(cat, a, b)
        total, rows = browse.diff_page(cat, a, b, only, (page - 1) * size, size)
    changed = sorted((r for r in summary["labels"] if r["gained"] or r["lost"]),
                     key=lambda r: (-(r["gained"] + r["lost"]), r["label"]))
    return {"template": "diff_page.html", "page": "diff", "title": f"Run {a} → run {b}", "run": run,
            "diff": summary, "changed": changed, "images": rows, "only": only, "a": a, "b": b,
            "paging": _pager(request, page, total, size)}


def review(app: "Serve", request: Request) -> dict[str, Any]:
    page, size = _int(request, "page", 1), app.cfg.page_size
    params = request.query_params
    note = None
    with app.catalog.read() as cat:
        run = app.current(cat)
        total, rows = browse.review_page(cat, run.run_id, (page - 1) * size, size)
        if params.get("done") in ("accept", "reject") and params.get("image", "").isdigit() and params.get("label"):
            image_id, label = int(params["image"]), params["label"]
            note = {"decision": params["done"], "image_id": image_id, "label": label}
            if undoable_decision(cat, image_id, label) != params["done"]:
                note = None  # an address cannot claim a decision the app did not make (nor offer its undo)
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return {"template": "queue.html", "page": "review", "title": "Needs review", "run": run, "queue": rows,
            "paging": _pager(request, page, total, size), "back": back, "note": note}
