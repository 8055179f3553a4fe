"""Heads that learn from labelled images: train one from annotations behind the guard (loading and
saving a classifier folder, and the head in use, are :mod:`.classifiers`').

Training reads the annotated images' **stored** embeddings (global and raw patches from their
shards; no image is decoded). Every head goes through the same guard (:mod:`.guard`): the text-only
CoMC classifier of the newest corpus is trained (or reused) first; a seeded, stratified part of the
annotations is held out; the head (OVML, MKT, CLIP-Decoder over the CLIP text embeddings of the
text classifier's labels, or few-shot CoMC: the text classifier updated with the images) is fitted
on the rest and wrapped with the text-only head
(:class:`~tagger.method.heads.guarded.GuardedModel`): it scores only the labels the held-out images
can judge, every other label keeps the text head's column and anchors. The wrapped model is
validated against the text-only head on the held-out images, recorded, and kept (made the newest
classifier of the model, which the next tag run uses) only when it validates better, unless
``force``; otherwise the text-only classifier stays the newest. The fitted head is kept as it is
(not refitted on every annotation): its held-out images are what its labels are decided from.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import atomic_dir
from ..errors import ConfigError
from ..ids import short_sha256
from .classifiers import LABELLED_FILE, classifier_record, head_in_use, make_newest, save_classifier

if TYPE_CHECKING:
    from ..workspace import Workspace

__all__ = ["LabelledImages", "fewshot_from_file", "labelled_ids", "labelled_images", "run_train_head"]

logger = logging.getLogger(__name__)


@dataclass
class LabelledImages:
    """Stored embeddings of annotated images and their labels over a vocabulary."""

    image_ids: list[int]
    global_: np.ndarray  # (n, d)
    patches: np.ndarray | None  # (n, P, d)
    labels: np.ndarray  # (n, L) bool
    data_id: str


def _resolve(cat, path, labelled: dict[str, list[str]], model_id: str) -> dict[int, list[str]]:
    """image_id -> labels of the annotated URIs; ConfigError naming unknown or unencoded URIs."""
    variants = {u: {u, os.path.abspath(os.path.expanduser(u))} for u in labelled}
    known = cat.image_ids(sorted({v for vs in variants.values() for v in vs}))
    found = {u: next((known[v] for v in sorted(vs) if v in known), None) for u, vs in variants.items()}
    unknown = sorted(u for u, i in found.items() if i is None)
    if unknown:
        raise ConfigError(f"annotations {path}: {len(unknown)} image URI(s) not in the catalog "
                          f"(encode them first), e.g. {unknown[0]!r}")
    ids = {u: int(i) for u, i in found.items() if i is not None}
    encoded = {i for i, _ in cat.shards_of(model_id, list(ids.values()))}
    missing = sorted(u for u, i in ids.items() if i not in encoded)
    if missing:
        raise ConfigError(f"annotations {path}: {len(missing)} image(s) not encoded with {model_id}, "
                          f"e.g. {missing[0]!r}")
    return {ids[u]: labelled[u] for u in labelled}


def _embeddings(cat, root: str, model_id: str, image_ids: list[int],
                patches: bool = True) -> tuple[list[int], np.ndarray, np.ndarray | None]:
    """Global and (unless ``patches`` is False) patch embeddings of ``image_ids`` from their shards
    (the patch store where a shard keeps none)."""
    from ..store import PatchStore, index_paths, load_shard, model_dir
    by_shard: dict[str, list[int]] = {}
    for image_id, shard in cat.shards_of(model_id, image_ids):
        by_shard.setdefault(shard, []).append(image_id)
    ids, gs, ps = [], [], []
    store = None
    for name in sorted(by_shard):
        shard = load_shard(model_dir(root, model_id) / name)
        where = {int(i): k for k, i in enumerate(np.asarray(shard.ids))}
        rows = [where[i] for i in by_shard[name] if i in where]
        ids += [int(shard.ids[k]) for k in rows]
        gs.append(np.asarray(shard.global_vecs[rows], np.float32))
        if not patches:
            continue
        if shard.patches is not None:
            ps.append(np.asarray(shard.patches[rows], np.float32))
        else:
            store = store or PatchStore.load(index_paths(root, model_id)[1], mmap=True)
            ps.append(store.decode(np.asarray([int(shard.ids[k]) for k in rows])))
    return ids, np.concatenate(gs), np.concatenate(ps) if ps else None


def labelled_ids(cat, annotations, reviewed: bool, model_id: str, vocabulary: list[str]) -> dict[int, list[str]]:
    """image_id -> labels from an annotation file and/or the images people reviewed in the catalog
    (:meth:`~tagger.catalog.review.ReviewMixin.reviewed_labels`; a file's labels win for an image in
    both). ConfigError for a label outside ``vocabulary``, a URI not in the catalog or not encoded
    with ``model_id``, or no labelled image at all."""
    from .calibration import read_labelled_file
    by_id: dict[int, list[str]] = {}
    if reviewed:
        reviewed_by_id = cat.reviewed_labels()
        encoded = {i for i, _ in cat.shards_of(model_id, list(reviewed_by_id))}
        by_id = {i: [n for n in v if n in vocabulary] for i, v in reviewed_by_id.items() if i in encoded}
    if annotations is not None:
        labelled = read_labelled_file(annotations)
        unknown = sorted({n for v in labelled.values() for n in v} - set(vocabulary))
        if unknown:
            active = set(cat.active_labels())
            later = [n for n in unknown if n in active]
            why = (f"; {', '.join(later[:10])} added since the text classifier was trained: run `tagger nightly` "
                   "(or generate-text and train) first") if later else ""
            retired = [lab.name for lab in cat.list_labels(include_retired=True)
                       if lab.name in unknown and lab.name not in active]
            why += (f"; {', '.join(retired[:10])} retired: drop it from the file, or bring it back with "
                    f"`tagger labels add {shlex.quote(retired[0])}`") if retired else ""
            raise ConfigError(f"annotations {annotations}: label(s) not in the classifier's vocabulary: "
                              f"{', '.join(unknown[:10])}{why}")
        by_id.update(_resolve(cat, annotations, labelled, model_id))
    if not by_id:
        raise ConfigError("no labelled image: give --annotations FILE, or review some tags first "
                          "(`tagger review accept|reject`, `tagger review import`) and use --reviewed")
    return by_id


def labelled_images(cat, root: str, by_id: dict[int, list[str]], model_id: str,
                    vocabulary: list[str], patches: bool = True) -> LabelledImages:
    """The stored embeddings of labelled images (image_id -> labels) and their label matrix."""
    ids, g, p = _embeddings(cat, root, model_id, sorted(by_id), patches)
    col = {n: j for j, n in enumerate(vocabulary)}
    y = np.zeros((len(ids), len(vocabulary)), bool)
    for r, image_id in enumerate(ids):
        y[r, [col[n] for n in by_id[image_id]]] = True
    data_id = short_sha256(json.dumps([model_id, sorted((i, sorted(by_id[i])) for i in ids)]))
    return LabelledImages(ids, g, p, y, data_id)


def _fewshot_fit(workspace: "Workspace", base_id: str, by_id: dict[int, list[str]]) -> dict[str, Any]:
    """Few-shot CoMC from the text classifier ``base_id`` and labelled images (image id -> labels;
    labels outside the classifier's are dropped). The images and labels are kept beside the result."""
    from ..catalog import Catalog
    from ..method.comc import load_comc, save_comc
    from ..method.heads import FewShotConfig, fit_fewshot
    cfg = FewShotConfig()
    with Catalog.for_job(workspace.catalog, "train") as cat:
        rec = classifier_record(cat, base_id)
        base = load_comc(workspace.classifier_dir(base_id))
        known = set(base.labels)
        by_id = {i: sorted(set(v) & known) for i, v in by_id.items()}
        data = labelled_images(cat, str(workspace.root), by_id, rec["model_id"], base.labels, patches=False)
        cid = short_sha256(json.dumps([base_id, data.data_id, asdict(cfg)]))
        model_ = fit_fewshot(base, data.global_, data.labels, cfg)
        labelled = json.dumps({"images": [[i, by_id[i]] for i in data.image_ids]})

        def save(d) -> None:
            save_comc(model_, d)
            (d / LABELLED_FILE).write_text(labelled)
        save_classifier(workspace, cat, cid, save, model_id=rec["model_id"], labels=base.labels,
                        corpus_id=rec["corpus_id"], config={**(rec["config"] or {}), "head": "comc-fewshot",
                                                            "base": base_id, "data_id": data.data_id,
                                                            "fewshot": asdict(cfg)})
    return {"classifier_id": cid, "head": "comc", "base_classifier_id": base_id, "images": len(data.image_ids),
            "labels": len(base.labels), "model_id": rec["model_id"]}


def fewshot_from_file(workspace: "Workspace", model: str, pretrained: str | None, labelled_json,
                      corpus_id: str | None) -> dict[str, Any]:
    """Few-shot CoMC (unguarded, as an earlier version trained it) on a new corpus from the labelled
    images a previous one kept (``labelled.json``)."""
    from .train import run_train
    base_id = run_train(workspace, model, pretrained, corpus_id)["classifier_id"]
    images = json.loads(open(labelled_json).read())["images"]
    return _fewshot_fit(workspace, base_id, {int(i): list(v) for i, v in images})


def _fit(kind: str, base, clip, labels: list[str], data: LabelledImages, rows: np.ndarray, cfg: Any):
    """The head of ``kind`` fitted on the labelled images ``rows`` (few-shot: ``base`` updated)."""
    from ..method.heads import FewShotConfig, fit_fewshot, fit_head
    from ..method.zeroshot import SINGLE_PROMPT, class_embeddings
    y = data.labels[rows]
    if kind == "comc-fewshot":
        return fit_fewshot(base, data.global_[rows], y, cfg or FewShotConfig())
    seen = [int(j) for j in np.flatnonzero(y.any(0))]
    if not seen:
        raise ConfigError("no annotated label left to train on after holding out the validation images")
    emb = class_embeddings(clip, labels, SINGLE_PROMPT)
    return fit_head(kind, data.global_[rows], None if data.patches is None else data.patches[rows], y[:, seen], emb,
                    seen=seen, labels=labels, cfg=cfg, data_id=data.data_id)


def _check_head(head: str, annotations, reviewed: bool) -> str:
    """The guarded kind of ``head`` (``comc`` with images is few-shot CoMC); ConfigError when unusable."""
    from ..method.headkinds import FEWSHOT_HEAD, TEXT_HEAD, train_heads
    if head not in train_heads():
        raise ConfigError(f"unknown head {head!r}; choose from {', '.join(train_heads())}")
    if head != TEXT_HEAD and annotations is None and not reviewed:
        raise ConfigError(f"--head {head} learns from labelled images: give --annotations FILE and/or "
                          f"--reviewed (the images people reviewed)")
    return FEWSHOT_HEAD if head == TEXT_HEAD else head


def run_train_head(workspace: "Workspace", model: str, pretrained: str | None = None, head: str = "comc",
                   annotations: str | os.PathLike[str] | None = None, corpus_id: str | None = None,
                   cfg: Any = None, reviewed: bool = False, force: bool = False,
                   guard: Any = None) -> dict[str, Any]:
    """Train ``head`` on the stored embeddings of the images labelled by ``annotations`` and/or by
    people's reviews (``reviewed``) behind the guard (module doc); ``comc`` without either trains the
    text-only classifier. Returns the summary with the validation table and the verdict. A failure
    (a bad annotation file, say) leaves the classifier the next tag run uses as it was."""
    from ..catalog import Catalog
    from ..method.heads.guarded import GuardConfig
    from ..models.registry import model_id_for
    from .train import run_train
    if head == "comc" and annotations is None and not reviewed:
        return {**run_train(workspace, model, pretrained, corpus_id), "head": "comc"}
    kind, gcfg = _check_head(head, annotations, reviewed), guard or GuardConfig()
    with Catalog.for_job(workspace.catalog, "train") as cat:
        before = head_in_use(cat, model_id_for(model, pretrained))
    try:
        return _train_guarded(workspace, model, pretrained, kind, annotations, reviewed, corpus_id, cfg, force, gcfg,
                              before)
    except Exception:
        if before is not None:
            with Catalog.for_job(workspace.catalog, "train") as cat:
                make_newest(cat, before)
        raise


def _train_guarded(workspace: "Workspace", model: str, pretrained: str | None, kind: str, annotations, reviewed: bool,
                   corpus_id: str | None, cfg: Any, force: bool, gcfg, in_use: dict[str, Any] | None) -> dict[str, Any]:
    """:func:`run_train_head` for a head of ``kind`` (steps in the module doc); a head not kept leaves
    ``in_use`` (an earlier head kept, or one picked by `heads use`) in use, else the text-only head."""
    from ..catalog import Catalog
    from ..method.comc import load_comc
    from ..method.heads.guarded import GuardedModel, heldout_split, image_columns
    from ..models import load_clip
    from .guard import validate_in_workspace, verdict
    from .train import run_train
    base_id = run_train(workspace, model, pretrained, corpus_id)["classifier_id"]
    other = in_use if in_use is not None and in_use["classifier_id"] != base_id else None
    with Catalog.for_job(workspace.catalog, "train") as cat:
        rec = classifier_record(cat, base_id)
        labels, base = list(rec["labels"]), load_comc(workspace.classifier_dir(base_id))
        by_id = labelled_ids(cat, annotations, reviewed, rec["model_id"], labels)
        data = labelled_images(cat, str(workspace.root), by_id, rec["model_id"], labels, patches=kind != "comc-fewshot")
        train, held = heldout_split(data.labels, gcfg.heldout, gcfg.seed)
        clip = load_clip(model, pretrained) if kind != "comc-fewshot" else None
        fitted = _fit(kind, base, clip, labels, data, train, cfg)
        heldout = {data.image_ids[i]: sorted(by_id[data.image_ids[i]]) for i in held}
        meta = {"train": [[data.image_ids[i], sorted(by_id[data.image_ids[i]])] for i in train]}
        cands = [labels[j] for j in image_columns(data.labels[train], data.labels[held], gcfg.min_positives)]
        head_cfg = asdict(fitted.config) if kind != "comc-fewshot" else asdict(cfg or _fewshot_cfg())
        cid = short_sha256(json.dumps([base_id, kind, data.data_id, head_cfg, gcfg.to_dict()]))
        out = workspace.classifier_dir(cid)
        with atomic_dir(out, replace=False) as tmp:  # trained before from the same inputs: the same model
            GuardedModel(kind, base, fitted, cands, heldout, meta).save(tmp, base_id)  # every candidate label
            table = validate_in_workspace(workspace, cat, rec["model_id"], workspace.classifier_dir(base_id), tmp,
                                          heldout, [n for j, n in enumerate(labels) if data.labels[:, j].any()],
                                          ("text-only comc", f"{kind} (guarded)"), gcfg) if cands else None
            guarded = GuardedModel(kind, base, fitted, [labels[j] for j in (table or {}).get("head_labels", [])],
                                   heldout, meta)
            guarded.save(tmp, base_id)  # the labels the head scores better than the text head
        table = table if len(held) >= gcfg.min_heldout_images else None
        keep, why = verdict(table, force, gcfg.min_heldout_images,
                            f"the head in use ({other['classifier_id']})" if other else "text-only head")
        config = {"head": kind, kind: head_cfg, "data_id": data.data_id, "seen": guarded.image_labels,
                  "guard": {"text": base_id, "config": gcfg.to_dict(), "validation": table, "kept": keep,
                            "verdict": why, "heldout_images": len(held), "train_images": len(train)}}
        cat.add_classifier(cid, model_id=rec["model_id"], labels=labels, corpus_id=rec["corpus_id"], config=config,
                           path=workspace.relative(out))
        if not keep:
            make_newest(cat, other or rec)
    logger.info("%s head %s on %d images (%d held out): %s", kind, cid, len(data.image_ids), len(held), why)
    return {"classifier_id": cid, "head": kind, "kept": keep, "classifier_in_use": cid if keep else (other or rec)["classifier_id"],
            "text_classifier_id": base_id, "images": len(data.image_ids), "heldout_images": len(held),
            "labels": len(labels), "head_labels": len(guarded.image_cols), "model_id": rec["model_id"],
            "validation": table, "verdict": why}


def _fewshot_cfg():
    from ..method.heads import FewShotConfig
    return FewShotConfig()


