"""A label renamed in an incremental nightly (retired, and added under a name that names the same
thing, with the same synonyms) keeps the row and text anchors it had instead of a new row; a label
added again after an earlier nightly retired it takes back the row an earlier classifier had."""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..workspace import Workspace

__all__ = ["LOOK_BACK", "moved_anchors", "regrouped_rows", "renamed_rows", "restored_rows", "row_sources"]

#: Classifiers searched, newest first, for a label added again (each a catalog record; only those
#: holding the label are opened).
LOOK_BACK = 50


def _terms(synonyms: dict, label: str) -> set[str]:
    from ..method.names import fold
    return {fold(t) for t in synonyms.get(label, ())}


def _synonyms(workspace: "Workspace", corpus_id: str) -> dict | None:
    """The synonyms a corpus recorded (None: the corpus is gone)."""
    from ..errors import DatasetError
    from ..text import TextCorpus
    try:
        return TextCorpus.load(workspace.text_dir(corpus_id)).synonyms
    except DatasetError:
        return None


def renamed_rows(workspace: "Workspace", base, corpus, new: list[str]) -> dict[str, str]:
    """The new labels that only rename a label of ``base`` no longer in the corpus (``stars`` for
    ``star``: :func:`~tagger.catalog.flips.renamed`) with the same synonyms -> that label: their rows
    are the base's, not trained again (a new row ranked the images as well but placed them lower on
    its text scale, and the label kept two thirds of them)."""
    from ..catalog.flips import renamed
    present = set(corpus.class_names)
    pairs = renamed([n for n in base.labels if n not in present], new)
    if not pairs:
        return {}
    was = _synonyms(workspace, base.classifier.corpus_id)
    if was is None:  # the base's corpus is gone: the renamed labels are trained as new ones
        return {}
    now = corpus.synonyms
    return {n: o for n, o in pairs.items() if _terms(now, n) == _terms(was, o)}


def regrouped_rows(workspace: "Workspace", base, corpus, new: list[str]) -> dict[str, str]:
    """The new labels ``base`` holds under the same name with the same synonyms -> themselves: trained
    again only because the label hierarchy moved around them (a child put under one, an ancestor of a
    re-worded label). A child's sentences are in no pair of its ancestors' rows (:mod:`tagger.method.ranking`):
    their own sentences, unchanged, are what their rows learn, so theirs are the base's."""
    held = [n for n in new if n in base.labels]
    was = _synonyms(workspace, base.classifier.corpus_id) if held else None
    if was is None:
        return {}
    now = corpus.synonyms
    return {n: n for n in held if _terms(now, n) == _terms(was, n)}


def restored_rows(workspace: "Workspace", cat, base, corpus, new: list[str], skip: set[str],
                  look_back: int = LOOK_BACK) -> dict[str, tuple[str, str]]:
    """The new labels (not in ``skip``) that an earlier classifier of the same text model held with the
    same synonyms, under the same name or one it renames (a label retired, then added again in a
    later nightly) -> (that classifier's id, its label): the row it had is taken back, with its text
    anchors, instead of a new one. The newest ``look_back`` classifiers are searched, newest first."""
    from ..catalog.flips import renamed
    from ..text.incremental import corpus_synonyms
    wanted = [n for n in new if n not in skip and n not in base.labels]
    if not wanted:
        return {}
    model_id = base.classifier.model_id
    configs = {c["corpus_id"]: c.get("config") or {} for c in cat.corpora()}  # synonyms as each corpus recorded them
    now = {n: _terms(corpus.synonyms, n) for n in wanted}
    out: dict[str, tuple[str, str]] = {}
    for rec in reversed(cat.classifiers()[-look_back:]):
        left = [n for n in wanted if n not in out]
        if not left:
            break
        if rec["model_id"] != model_id or ((rec.get("config") or {}).get("head") or "comc") != "comc" \
                or (rec.get("config") or {}).get("guard"):
            continue
        held = list(rec.get("labels") or [])
        match = {n: n for n in left if n in held}
        match.update({n: o for n, o in renamed([x for x in held if x not in left], left).items() if n not in match})
        syn = corpus_synonyms(configs.get(rec["corpus_id"]) or {}) if match else None
        if syn is None or not workspace.text_dir(rec["corpus_id"]).is_dir() \
                or not workspace.classifier_dir(rec["classifier_id"]).is_dir():
            continue
        out.update({n: (rec["classifier_id"], o) for n, o in match.items() if _terms(syn, o) == now[n]})
    return out


def moved_anchors(anchors, trained: list[str], moved: dict[str, tuple[Any, str]]):
    """``anchors`` of the ``trained`` rows with each moved label's taken from its old label in the model
    it came from (``moved``: label -> (model, old label)): its row is the old one, and the corpus's
    sentences that still name it by its old name would count against it here."""
    if not moved:
        return anchors
    out = {}
    for name in ("neg_mean", "pos_mean", "neg_sd", "pos_sd", "robust_separation"):
        mine = getattr(anchors, name)
        if mine is None:
            continue
        mine = np.array(mine, copy=True)
        for n, (model, o) in moved.items():
            src = getattr(model.classifier, "anchors", None)
            theirs = getattr(src, name, None) if src is not None else None
            if theirs is not None:
                mine[trained.index(n)] = theirs[list(model.labels).index(o)]
        out[name] = mine
    return replace(anchors, **out)


def row_sources(workspace: "Workspace", cat, base, corpus, new: list[str]
                ) -> tuple[dict[str, tuple[Any, str]], dict[str, Any], dict[str, Any]]:
    """The new labels whose row is taken, not trained: renamed in this nightly or only regrouped by the
    hierarchy (from ``base``), or added
    again after an earlier one retired them (from the newest classifier that held them,
    :func:`restored_rows`) -> (the model, its label); what the classifier's
    id records of it, and its metrics (``renamed_rows``, ``restored_rows``)."""
    from .classifiers import load_model
    renamed = renamed_rows(workspace, base, corpus, new)
    regrouped = regrouped_rows(workspace, base, corpus, new)
    restored = restored_rows(workspace, cat, base, corpus, new, set(renamed))
    models = {cid: load_model(workspace.classifier_dir(cid)) for cid in sorted({c for c, _ in restored.values()})}
    moved = {**{n: (base, o) for n, o in {**renamed, **regrouped}.items()},
             **{n: (models[c], o) for n, (c, o) in restored.items()}}
    key = {**({"renamed": sorted(renamed.items())} if renamed else {}),
           **({"regrouped": sorted(regrouped)} if regrouped else {}),
           **({"restored": sorted((n, *v) for n, v in restored.items())} if restored else {})}
    return moved, key, {"renamed_rows": renamed, "regrouped_rows": regrouped,
                        "restored_rows": {n: list(v) for n, v in sorted(restored.items())}}
