"""A label renamed in an incremental nightly (retired, and added under a name that names the same
thing, with the same synonyms) keeps the row and text anchors it had instead of a new row."""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..workspace import Workspace

__all__ = ["moved_anchors", "renamed_rows"]


def renamed_rows(workspace: "Workspace", base, corpus, new: list[str]) -> dict[str, str]:
    """The new labels that only rename a label of ``base`` no longer in the corpus (``stars`` for
    ``star``: :func:`~tagger.catalog.flips.renamed`) with the same synonyms -> that label: their rows
    are the base's, not trained again (a new row ranked the images as well but placed them lower on
    its text scale, and the label kept two thirds of them)."""
    from ..catalog.flips import renamed
    from ..errors import DatasetError
    from ..method.names import fold
    from ..text import TextCorpus
    present = set(corpus.class_names)
    pairs = renamed([n for n in base.labels if n not in present], new)
    if not pairs:
        return {}
    try:
        was = TextCorpus.load(workspace.text_dir(base.classifier.corpus_id)).synonyms
    except DatasetError:  # the base's corpus is gone: the renamed labels are trained as new ones
        return {}

    def terms(syn: dict, label: str) -> set[str]:
        return {fold(t) for t in syn.get(label, ())}
    now = corpus.synonyms
    return {n: o for n, o in pairs.items() if terms(now, n) == terms(was, o)}


def moved_anchors(anchors, trained: list[str], moved: dict[str, str], base):
    """``anchors`` of the ``trained`` rows with each renamed label's taken from its old label in
    ``base``: its row is the old one, and the corpus's sentences that still name it by its old name
    would count against it here."""
    src = base.classifier.anchors
    if not moved or src is None:
        return anchors
    where = {n: j for j, n in enumerate(base.labels)}
    out = {}
    for name in ("neg_mean", "pos_mean", "neg_sd", "pos_sd", "robust_separation"):
        mine, theirs = getattr(anchors, name), getattr(src, name)
        if mine is None or theirs is None:
            continue
        mine = np.array(mine, copy=True)
        for n, o in moved.items():
            mine[trained.index(n)] = theirs[where[o]]
        out[name] = mine
    return replace(anchors, **out)
