"""Heads that learn from labelled images: train one from an annotation file, load whichever head a
classifier directory holds.

Training reads the annotated images' **stored** embeddings (global and raw patches from their
shards; no image is decoded), the CLIP text embedding of every active label ("a photo of a
{label}."), and fits the head (:mod:`tagger.method.heads`). Labels with at least one annotated
image are the seen labels; the others are tagged from their names alone. ``--head comc`` with
annotations is few-shot CoMC: the text-trained classifier of the newest corpus, updated with the
annotated images. The result is recorded like the CoMC classifier (config, labels, model, data
id) with its kind under ``config["head"]``; being the newest classifier of the model, the next tag
run uses it.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from ..ids import short_sha256

if TYPE_CHECKING:
    from ..workspace import Workspace

__all__ = ["HeadModel", "LabelledImages", "fewshot_from_file", "labelled_ids", "labelled_images", "load_model",
           "run_train_head", "save_classifier"]

logger = logging.getLogger(__name__)


@dataclass
class HeadModel:
    """An image-trained head as the tag stage sees a classifier: ``labels``, ``scores(g, p)`` and
    text anchors (none: such a head has no text corpus, so its runs decide by the mixture rule)."""

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
    """The model in a classifier directory: an image-trained head, or a CoMC classifier."""
    from ..method.comc import load_comc
    from ..method.heads import is_head_dir, load_head
    return HeadModel(load_head(directory)) if is_head_dir(directory) else load_comc(directory)


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
    ids = {u: next((known[v] for v in sorted(vs) if v in known), None) for u, vs in variants.items()}
    unknown = sorted(u for u, i in ids.items() if i is None)
    if unknown:
        raise ConfigError(f"annotations {path}: {len(unknown)} image URI(s) not in the catalog "
                          f"(encode them first), e.g. {unknown[0]!r}")
    encoded = {i for i, _ in cat.shards_of(model_id, [int(i) for i in ids.values()])}
    missing = sorted(u for u, i in ids.items() if i not in encoded)
    if missing:
        raise ConfigError(f"annotations {path}: {len(missing)} image(s) not encoded with {model_id}, "
                          f"e.g. {missing[0]!r}")
    return {int(ids[u]): labelled[u] for u in labelled}


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
            raise ConfigError(f"annotations {annotations}: label(s) not in the vocabulary: {', '.join(unknown[:10])}")
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


def save_classifier(workspace: "Workspace", cat, classifier_id: str, save, **record: Any) -> None:
    """Write a classifier directory with ``save(dir)`` (atomically, once) and record it in the catalog."""
    out = workspace.classifier_dir(classifier_id)
    if not out.exists():
        tmp = out.with_name(out.name + ".tmp")
        save(tmp)
        tmp.replace(out)
    cat.add_classifier(classifier_id, path=workspace.relative(out), **record)


def _fewshot_fit(workspace: "Workspace", base_id: str, by_id: dict[int, list[str]]) -> dict[str, Any]:
    """Few-shot CoMC from the text classifier ``base_id`` and labelled images (image id -> labels;
    labels outside the classifier's are dropped). The images and labels are kept beside the result."""
    from ..catalog import Catalog
    from ..method.comc import load_comc, save_comc
    from ..method.heads import FewShotConfig, fit_fewshot
    from .retrain import LABELLED_FILE
    cfg = FewShotConfig()
    with Catalog.for_job(workspace.catalog, "train") as cat:
        rec = cat.get_classifier(base_id)
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


def _fewshot(workspace: "Workspace", model: str, pretrained: str | None, annotations, reviewed: bool,
             corpus_id: str | None) -> dict[str, Any]:
    """Few-shot CoMC: train (or reuse) the text classifier, then update it with the labelled images."""
    from ..catalog import Catalog
    from .train import run_train
    base_id = run_train(workspace, model, pretrained, corpus_id)["classifier_id"]
    with Catalog.for_job(workspace.catalog, "train") as cat:
        rec = cat.get_classifier(base_id)
        by_id = labelled_ids(cat, annotations, reviewed, rec["model_id"], list(rec["labels"]))
    return _fewshot_fit(workspace, base_id, by_id)


def fewshot_from_file(workspace: "Workspace", model: str, pretrained: str | None, labelled_json,
                      corpus_id: str | None) -> dict[str, Any]:
    """Few-shot CoMC on a new corpus from the labelled images a previous one kept (``labelled.json``)."""
    from .train import run_train
    base_id = run_train(workspace, model, pretrained, corpus_id)["classifier_id"]
    images = json.loads(open(labelled_json).read())["images"]
    return _fewshot_fit(workspace, base_id, {int(i): list(v) for i, v in images})


def run_train_head(workspace: "Workspace", model: str, pretrained: str | None = None, head: str = "ovml",
                   annotations: str | os.PathLike[str] | None = None, corpus_id: str | None = None,
                   cfg: Any = None, reviewed: bool = False) -> dict[str, Any]:
    """Train ``head`` on the stored embeddings of the images labelled by ``annotations`` and/or by
    people's reviews (``reviewed``) and record it as the newest classifier."""
    from ..catalog import Catalog
    from ..method.heads import IMAGE_HEADS, fit_head
    from ..method.zeroshot import SINGLE_PROMPT, class_embeddings
    from ..models import load_clip
    if head == "comc":
        if annotations is None and not reviewed:
            from .train import run_train
            return {**run_train(workspace, model, pretrained, corpus_id), "head": "comc"}
        return _fewshot(workspace, model, pretrained, annotations, reviewed, corpus_id)
    if head not in IMAGE_HEADS:
        raise ConfigError(f"unknown head {head!r}; choose from comc, {', '.join(IMAGE_HEADS)}")
    if annotations is None and not reviewed:
        raise ConfigError(f"--head {head} learns from labelled images: give --annotations FILE and/or "
                          f"--reviewed (the images people reviewed)")
    with Catalog.for_job(workspace.catalog, "train") as cat:
        vocab = cat.active_labels()
        if not vocab:
            raise ConfigError("no active labels: add some with `tagger labels add` first")
        clip = load_clip(model, pretrained)
        by_id = labelled_ids(cat, annotations, reviewed, clip.model_id, vocab)
        data = labelled_images(cat, str(workspace.root), by_id, clip.model_id, vocab)
        seen = [int(j) for j in np.flatnonzero(data.labels.any(0))]
        emb = class_embeddings(clip, vocab, SINGLE_PROMPT)
        fitted = fit_head(head, data.global_, data.patches, data.labels[:, seen], emb, seen=seen, labels=vocab,
                          cfg=cfg, data_id=data.data_id)
        cid = short_sha256(json.dumps([clip.model_id, head, data.data_id, vocab, asdict(fitted.config)]))
        save_classifier(workspace, cat, cid, fitted.save, model_id=clip.model_id, labels=vocab, corpus_id=None,
                        config={"head": head, head: asdict(fitted.config), "data_id": data.data_id,
                                "seen": [vocab[j] for j in seen]})
    logger.info("trained %s head %s on %d images (%d seen of %d labels)", head, cid, len(data.image_ids),
                len(seen), len(vocab))
    return {"classifier_id": cid, "head": head, "images": len(data.image_ids), "labels": len(vocab),
            "seen_labels": len(seen), "model_id": clip.model_id}
