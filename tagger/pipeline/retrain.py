"""The nightly job's train step: keep whichever kind of head the workspace tags with.

- A text-trained CoMC classifier (or none yet): train CoMC on the new corpus (:func:`run_train`).
- An image-trained head (OVML, MKT, CLIP-Decoder): the head scores any label through its text
  embedding, so the same module is kept and only its label set changes: the active vocabulary's
  text embeddings replace the old ones (added labels are tagged by name, retired ones dropped).
  No image is read and nothing is retrained; the result is a new classifier id.
- Few-shot CoMC: the text classifier is trained on the new corpus, then updated again with the
  labelled images the previous few-shot classifier learnt from (kept in its directory as
  ``labelled.json``), their retired labels dropped.
The head in use is the current run's classifier (the newest of the model when there is no run).
"""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..ids import short_sha256

if TYPE_CHECKING:
    from ..workspace import Workspace

__all__ = ["LABELLED_FILE", "head_in_use", "run_nightly_train"]

logger = logging.getLogger(__name__)

LABELLED_FILE = "labelled.json"  # image ids and label names a few-shot classifier learnt from


def head_in_use(cat, model_id: str) -> dict[str, Any] | None:
    """The classifier record the workspace tags with: the current run's, else the model's newest."""
    current = cat.current_run()
    run = cat.get_run(current) if current is not None else None
    if run is not None and run.classifier_id:
        rec = cat.get_classifier(run.classifier_id)
        if rec is not None and rec["model_id"] == model_id:
            return rec
    try:
        return cat.latest_classifier(model_id)
    except ConfigError:
        return None


def _relabel(workspace: "Workspace", rec: dict[str, Any], model: str, pretrained: str | None) -> dict[str, Any]:
    """The image-trained head of ``rec`` over the active vocabulary, as a new classifier."""
    from ..catalog import Catalog
    from ..method.heads import ImageHead, load_head
    from ..method.zeroshot import SINGLE_PROMPT, class_embeddings
    from ..models import load_clip
    from .heads import save_classifier
    old = load_head(workspace.classifier_dir(rec["classifier_id"]))
    with Catalog.for_job(workspace.catalog, "train") as cat:
        vocab = cat.active_labels()
        cid = short_sha256(json.dumps([rec["classifier_id"], vocab]))
        if cid != rec["classifier_id"] and cat.get_classifier(cid) is None:
            emb = class_embeddings(load_clip(model, pretrained), vocab, SINGLE_PROMPT)
            head = ImageHead(old.kind, old.config, old.module, vocab, emb, [s for s in old.seen if s in vocab],
                             old.data_id, old.metrics)
            config = {**(rec["config"] or {}), "relabelled_from": rec["classifier_id"], "seen": head.seen}
            save_classifier(workspace, cat, cid, head.save, model_id=rec["model_id"], labels=vocab,
                            corpus_id=None, config=config)
    logger.info("nightly: %s head %s kept, relabelled to %d labels as %s", old.kind, rec["classifier_id"],
                len(vocab), cid)
    return {"classifier_id": cid, "head": old.kind}


def run_nightly_train(workspace: "Workspace", model: str, pretrained: str | None, corpus_id: str) -> dict[str, Any]:
    """Train (or relabel) the kind of head the workspace tags with, on the corpus ``corpus_id``."""
    from ..catalog import Catalog
    from ..models.registry import model_id_for
    from .heads import fewshot_from_file
    from .train import run_train
    with Catalog.for_job(workspace.catalog, "train") as cat:
        rec = head_in_use(cat, model_id_for(model, pretrained))
    kind = ((rec or {}).get("config") or {}).get("head", "comc")
    if kind in ("ovml", "mkt", "clip-decoder"):
        return _relabel(workspace, rec, model, pretrained)
    labelled = workspace.classifier_dir(rec["classifier_id"]) / LABELLED_FILE if rec else None
    if kind == "comc-fewshot" and labelled is not None and labelled.is_file():
        return fewshot_from_file(workspace, model, pretrained, labelled, corpus_id)
    return {**run_train(workspace, model, pretrained, corpus_id), "head": "comc"}
