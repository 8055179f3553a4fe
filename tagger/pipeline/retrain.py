"""The nightly job's train step: keep whichever kind of head the workspace tags with.

- A text-trained CoMC classifier (or none yet): train CoMC on the new corpus (:func:`run_train`).
- A guarded head (every head ``tagger train`` fits now): the text-only classifier is trained on the
  new corpus and the head is carried over onto its labels: an image-trained head relabelled (below),
  few-shot CoMC updated again from the base of the new corpus with the images it learnt from. The
  head keeps scoring its own labels that are still active, decided from the same held-out images;
  every other label, added ones included, is scored by the new text classifier. The head is not
  validated again.
- An image-trained head saved without the guard (OVML, MKT, CLIP-Decoder): the head scores any label through its text
  embedding, so the same module is kept and only its label set changes: the active vocabulary's
  text embeddings replace the old ones (added labels are tagged by name, retired ones dropped).
  No image is read and nothing is retrained; the result is a new classifier id.
- Few-shot CoMC: the text classifier is trained on the new corpus, then updated again with the
  labelled images the previous few-shot classifier learnt from (kept in its directory as
  ``labelled.json``), their retired labels dropped.
The head in use is the model's newest classifier: the one the next ``tagger tag`` uses (``tagger heads
use`` changes it).
"""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from ..atomic import atomic_dir
from ..ids import short_sha256
from .classifiers import LABELLED_FILE, head_in_use

if TYPE_CHECKING:
    from ..workspace import Workspace

__all__ = ["LABELLED_FILE", "head_in_use", "run_nightly_train"]

logger = logging.getLogger(__name__)



def _relabel(workspace: "Workspace", rec: dict[str, Any], model: str, pretrained: str | None) -> dict[str, Any]:
    """The image-trained head of ``rec`` over the active vocabulary, as a new classifier."""
    from ..catalog import Catalog
    from ..method.heads import ImageHead, load_head
    from ..method.zeroshot import SINGLE_PROMPT, class_embeddings
    from ..models import load_clip
    from .classifiers import save_classifier
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
    from ..method.headkinds import image_heads
    from ..models.registry import model_id_for
    from .heads import fewshot_from_file
    from .train import run_train
    with Catalog.for_job(workspace.catalog, "train") as cat:
        rec = head_in_use(cat, model_id_for(model, pretrained))
    kind = ((rec or {}).get("config") or {}).get("head", "comc")
    if rec is not None and (rec["config"] or {}).get("guard"):
        return _carry_guarded(workspace, rec, model, pretrained, corpus_id)
    if rec is not None and kind in image_heads():
        return _relabel(workspace, rec, model, pretrained)
    labelled = workspace.classifier_dir(rec["classifier_id"]) / LABELLED_FILE if rec else None
    if kind == "comc-fewshot" and labelled is not None and labelled.is_file():
        return fewshot_from_file(workspace, model, pretrained, labelled, corpus_id)
    return {**run_train(workspace, model, pretrained, corpus_id), "head": "comc"}


def _carried_head(workspace: "Workspace", cat, old, base, model: str, pretrained: str | None):
    """The head of the guarded model ``old`` over the labels of the text model ``base``."""
    from ..method.heads import ImageHead, fit_fewshot
    from ..method.zeroshot import SINGLE_PROMPT, class_embeddings
    from ..models import load_clip
    from .heads import labelled_images
    labels = base.labels
    if isinstance(old.head, ImageHead):
        h = old.head
        emb = class_embeddings(load_clip(model, pretrained), labels, SINGLE_PROMPT)
        return ImageHead(h.kind, h.config, h.module, labels, emb, [s for s in h.seen if s in labels], h.data_id,
                         h.metrics)
    by_id = {int(i): [n for n in v if n in set(labels)] for i, v in old.meta.get("train", [])}
    data = labelled_images(cat, str(workspace.root), by_id, base.classifier.model_id, labels, patches=False)
    return fit_fewshot(base, data.global_, data.labels)


def _carry_guarded(workspace: "Workspace", rec: dict[str, Any], model: str, pretrained: str | None,
                   corpus_id: str) -> dict[str, Any]:
    """The guarded head of ``rec`` over the text classifier trained on ``corpus_id``, as a new classifier."""
    from ..catalog import Catalog
    from ..method.comc import load_comc
    from ..method.heads.guarded import GuardedModel
    from .classifiers import load_model
    from .train import run_train
    base_id = run_train(workspace, model, pretrained, corpus_id)["classifier_id"]
    with Catalog.for_job(workspace.catalog, "train") as cat:
        base_rec = cat.get_classifier(base_id) or {}
        base = load_comc(workspace.classifier_dir(base_id))
        old = load_model(workspace.classifier_dir(rec["classifier_id"]))
        labels = set(base.labels)
        cid = short_sha256(json.dumps([rec["classifier_id"], base_id]))
        out = workspace.classifier_dir(cid)
        kept = [n for n in old.image_labels if n in labels]
        if not out.exists():
            head = _carried_head(workspace, cat, old, base, model, pretrained)
            heldout = {i: [n for n in v if n in labels] for i, v in old.heldout.items()}
            meta = {k: v for k, v in old.meta.items() if k != "text"}
            with atomic_dir(out, replace=False) as tmp:
                GuardedModel(old.kind, base, head, kept, heldout, meta).save(tmp, base_id)
        config = {**rec["config"], "seen": kept, "relabelled_from": rec["classifier_id"],
                  "guard": {**rec["config"]["guard"], "text": base_id}}
        cat.add_classifier(cid, model_id=rec["model_id"], labels=list(base.labels), corpus_id=base_rec.get("corpus_id"),
                           config=config, path=workspace.relative(out))
    logger.info("nightly: %s head %s carried over onto text classifier %s as %s (%d labels scored by the head)",
                old.kind, rec["classifier_id"], base_id, cid, len(kept))
    return {"classifier_id": cid, "head": old.kind}
