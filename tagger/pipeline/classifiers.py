"""The classifier folders of a workspace and their catalog records: load whichever model a folder holds
(a CoMC classifier, a guarded head, an unguarded image head), save one atomically, and the head in use
(the model's newest classifier, which the next tag run uses). Below both the tag stage, which loads
and scores a classifier, and the stages that train one (:mod:`.train`, :mod:`.heads`, :mod:`.retrain`).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import atomic_dir
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..workspace import Workspace

__all__ = ["LABELLED_FILE", "HeadModel", "classifier_record", "head_decision_inputs", "head_in_use", "load_model",
           "make_newest", "save_classifier", "use_head"]

logger = logging.getLogger(__name__)

LABELLED_FILE = "labelled.json"  # image ids and label names a few-shot classifier learnt from


def head_in_use(cat, model_id: str) -> dict[str, Any] | None:
    """The classifier record the workspace tags with: the model's newest (None before any)."""
    try:
        return cat.latest_classifier(model_id)
    except ConfigError:
        return None


@dataclass
class HeadModel:
    """An image-trained head saved without the guard (by an earlier version) as the tag stage sees a
    classifier: ``labels``, ``scores(g, p)`` and no text anchors (its runs decide by the mixture rule)."""

    head: Any
    anchors: None = None

    @property
    def labels(self) -> list[str]:
        return self.head.labels

    @property
    def classifier(self) -> "HeadModel":
        return self

    def scores(self, g: np.ndarray, p: np.ndarray | None) -> np.ndarray:
        return self.head.scores(g, p)


def load_model(directory: str | os.PathLike[str]):
    """The model in a classifier directory: a guarded head (its text model is the sibling classifier
    directory it names), an unguarded image-trained head, or a CoMC classifier."""
    from ..method.comc import load_comc
    from ..method.extend import ExtendedModel, is_extended_dir
    from ..method.heads import is_head_dir, load_head
    from ..method.heads.guarded import is_guarded_dir, load_guarded
    d = Path(directory)
    if is_extended_dir(d):  # a CoMC model extended by the incremental nightly
        return ExtendedModel.load(d, load_model)
    if is_guarded_dir(d):
        return load_guarded(d, lambda ref: load_comc(d.parent / ref))
    return HeadModel(load_head(d)) if is_head_dir(d) else load_comc(d)


def classifier_record(cat, classifier_id: str) -> dict[str, Any]:
    """The catalog record of ``classifier_id``; ConfigError when there is none."""
    rec = cat.get_classifier(classifier_id)
    if rec is None:
        raise ConfigError(f"unknown classifier {classifier_id!r}")
    return rec


def save_classifier(workspace: "Workspace", cat, classifier_id: str, save, **record: Any) -> None:
    """Write a classifier directory with ``save(dir)`` (atomically, once) and record it in the catalog."""
    out = workspace.classifier_dir(classifier_id)
    if not out.exists():
        with atomic_dir(out, replace=False) as tmp:  # a concurrent save of the same id keeps its own
            save(tmp)
    cat.add_classifier(classifier_id, path=workspace.relative(out), **record)


def make_newest(cat, rec: dict[str, Any]) -> None:
    """Record classifier ``rec`` again, so that it is the newest of its model (the next tag run uses it)."""
    cat.add_classifier(rec["classifier_id"], model_id=rec["model_id"], labels=rec["labels"], corpus_id=rec["corpus_id"],
                       config=rec["config"], metrics=rec["metrics"], path=rec["path"])


def use_head(workspace: "Workspace", model_id: str, which: str) -> dict[str, Any]:
    """Make classifier ``which`` (an id, or ``text``: the newest text-only classifier) the newest of
    ``model_id``, so that the next tag run (and the nightly job) uses it."""
    from ..catalog import Catalog
    with Catalog.for_job(workspace.catalog, "train") as cat:
        mine = [c for c in cat.classifiers() if c["model_id"] == model_id]
        rec: dict[str, Any] | None
        if which == "text":
            found = [c for c in mine if not (c["config"] or {}).get("head")]
            if not found:
                raise ConfigError(f"no text-only classifier for {model_id}: run `tagger train` first")
            rec = found[-1]
        else:
            rec = next((c for c in mine if c["classifier_id"] == which), None)
            if rec is None:
                known = ", ".join(c["classifier_id"] for c in mine[-5:]) or "none"
                raise ConfigError(f"unknown classifier {which!r} for {model_id} (known: {known})")
        make_newest(cat, rec)
    return {"classifier_id": rec["classifier_id"], "head": (rec["config"] or {}).get("head") or "comc",
            "model_id": model_id}


def head_decision_inputs(workspace: "Workspace", clf: dict[str, Any], inputs):
    """A tag run's decision inputs with the held-out images of a guarded head added to the labelled
    set (labels among the head's own only): its labels are decided from them."""
    from dataclasses import replace

    from ..method.heads.guarded import GUARD_FILE
    path = workspace.classifier_dir(clf["classifier_id"]) / GUARD_FILE
    if inputs is None or not path.is_file():
        return inputs
    meta = json.loads(path.read_text())
    mine = set(meta["image_labels"])
    labelled = {int(i): list(v) for i, v in inputs.labelled.items()}
    for i, names in meta["heldout"]:
        labelled[int(i)] = sorted(set(labelled.get(int(i), [])) | (set(names) & mine))
    return replace(inputs, labelled=labelled)
