"""Readers for the evaluation datasets: VOC2007, COCO-2014, NUS-WIDE and the toy world.

Every reader returns an :class:`EvalDataset` with a dense ``(n_images, n_classes)`` uint8 label
matrix in which only 1 is positive. A wrong directory layout raises
:class:`tagger.errors.DatasetError` naming the file or folder that is missing.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DatasetError
from ..toyworld import LABELS as TOY_LABELS
from ..toyworld import SceneConfig, make_scene

logger = logging.getLogger(__name__)

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

# every object small: box area (2 * 0.085)^2 = 0.0289 of the image, below toyworld.SMALL_AREA
SMALL_OBJECTS = SceneConfig(min_radius=0.07, max_radius=0.085)

TOY_PREFIX = "toy"


@dataclass
class EvalDataset:
    """Images (paths or toy ids) with their multi-hot labels over ``class_names``."""

    name: str
    class_names: list[str]
    items: list[str]
    labels: np.ndarray
    scene_config: SceneConfig | None = None  # used by toy items only
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.uint8)
        expected = (len(self.items), len(self.class_names))
        if self.labels.shape != expected:
            raise DatasetError(f"{self.name}: labels have shape {self.labels.shape}, expected {expected}")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def load_image(self, i: int) -> Image.Image:
        """Image ``i`` as an RGB PIL image (toy items are rendered on the fly)."""
        item = self.items[i]
        if item.startswith(TOY_PREFIX + ":"):
            _, split, index = item.split(":")
            return make_scene(int(index), split, self.scene_config).image.convert("RGB")
        try:
            with Image.open(item) as img:
                return img.convert("RGB")
        except FileNotFoundError as e:
            raise DatasetError(f"{self.name}: image file not found: {item}") from e
        except OSError as e:
            raise DatasetError(f"{self.name}: cannot read image {item}: {e}") from e

    def subset(self, indices: list[int] | np.ndarray) -> EvalDataset:
        """A new dataset holding only the given rows."""
        idx = np.asarray(indices, dtype=np.int64)
        return EvalDataset(self.name, list(self.class_names), [self.items[i] for i in idx],
                           self.labels[idx], self.scene_config, dict(self.info))


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetError(f"{what}: expected {path} but it does not exist")
    return path


def _read_lines(path: Path, what: str) -> list[str]:
    _require(path, what)
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


# ---------------------------------------------------------------- VOC 2007

def _voc_dir(root: Path) -> Path:
    """Accept ``root`` pointing at VOCdevkit (holding VOC2007/) or at VOC2007 itself."""
    if (root / "VOC2007" / "ImageSets").is_dir():
        return root / "VOC2007"
    if (root / "ImageSets").is_dir():
        return root
    raise DatasetError(f"voc2007: neither {root / 'VOC2007' / 'ImageSets'} nor {root / 'ImageSets'} exists; "
                       "point root at VOCdevkit or VOCdevkit/VOC2007")


def _read_voc_class_file(path: Path) -> dict[str, int]:
    values: dict[str, int] = {}
    for n, line in enumerate(_read_lines(path, "voc2007"), 1):
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("-1", "0", "1"):
            raise DatasetError(f"voc2007: {path}:{n}: expected '<image id> <-1|0|1>', got {line!r}")
        values[parts[0]] = int(parts[1])
    return values


def read_voc2007(root: str | Path, split: str = "test") -> EvalDataset:
    """PASCAL VOC 2007 ``split`` with labels from ``ImageSets/Main/<cls>_<split>.txt``.

    Only 1 is positive: difficult (0) and absent (-1) are both negative. Image order follows
    the first class file.
    """
    voc = _voc_dir(Path(root))
    main = voc / "ImageSets" / "Main"
    img_dir = _require(voc / "JPEGImages", "voc2007")
    per_class = [_read_voc_class_file(main / f"{cls}_{split}.txt") for cls in VOC_CLASSES]
    ids = list(per_class[0])
    id_set = set(ids)
    labels = np.zeros((len(ids), len(VOC_CLASSES)), np.uint8)
    row = {img_id: r for r, img_id in enumerate(ids)}
    for c, (cls, values) in enumerate(zip(VOC_CLASSES, per_class)):
        if set(values) != id_set:
            raise DatasetError(f"voc2007: {main / f'{cls}_{split}.txt'} lists different image ids "
                               f"than {main / f'{VOC_CLASSES[0]}_{split}.txt'}")
        for img_id, v in values.items():
            if v == 1:
                labels[row[img_id], c] = 1
    items = [str(img_dir / f"{img_id}.jpg") for img_id in ids]
    logger.info("voc2007 %s: %d images", split, len(items))
    return EvalDataset("voc2007", list(VOC_CLASSES), items, labels, info={"split": split, "root": str(voc)})


# ---------------------------------------------------------------- COCO 2014

def read_coco2014(root: str | Path, split: str = "val") -> EvalDataset:
    """COCO-2014 ``split``: every image id in ``instances_<split>2014.json`` (also those without
    objects), classes ordered by category id, labels from the instance annotations."""
    root = Path(root)
    ann_path = _require(root / "annotations" / f"instances_{split}2014.json", "coco2014")
    img_dir = _require(root / f"{split}2014", "coco2014")
    try:
        with open(ann_path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"coco2014: {ann_path} is not valid JSON: {e}") from e
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DatasetError(f"coco2014: {ann_path} has no {key!r} field")
    cats = sorted(data["categories"], key=lambda c: int(c["id"]))
    col = {int(c["id"]): j for j, c in enumerate(cats)}
    images = sorted(data["images"], key=lambda im: int(im["id"]))
    row = {int(im["id"]): r for r, im in enumerate(images)}
    labels = np.zeros((len(images), len(cats)), np.uint8)
    for ann in data["annotations"]:
        img_id, cat_id = int(ann["image_id"]), int(ann["category_id"])
        if img_id not in row or cat_id not in col:
            raise DatasetError(f"coco2014: annotation {ann.get('id')} in {ann_path} refers to unknown "
                               f"image {img_id} or category {cat_id}")
        labels[row[img_id], col[cat_id]] = 1
    items = [str(img_dir / im["file_name"]) for im in images]
    n_empty = int((labels.sum(axis=1) == 0).sum())
    logger.info("coco2014 %s: %d images (%d without objects), %d classes", split, len(items), n_empty, len(cats))
    return EvalDataset("coco2014", [str(c["name"]) for c in cats], items, labels,
                       info={"split": split, "root": str(root), "n_without_objects": n_empty})


# ---------------------------------------------------------------- NUS-WIDE

def _read_nus_labels(path: Path, n_images: int) -> np.ndarray:
    lines = _read_lines(path, "nuswide")
    if len(lines) != n_images:
        raise DatasetError(f"nuswide: {path} has {len(lines)} lines but the image list has {n_images}")
    try:
        values = np.array([int(v) for v in lines], dtype=np.int64)
    except ValueError as e:
        raise DatasetError(f"nuswide: {path} holds a non-integer label: {e}") from e
    return (values == 1).astype(np.uint8)


def read_nuswide(root: str | Path) -> EvalDataset:
    """NUS-WIDE test set over the concepts listed in ``Concepts81.txt``.

    Labels come from ``TrainTestLabels/Labels_<concept>_Test.txt`` aligned with
    ``ImageList/TestImagelist.txt``; images are ``Flickr/<path>``. Images missing on disk are
    dropped (logged and counted in ``info["n_missing"]``).
    """
    root = Path(root)
    concepts = _read_lines(root / "Concepts81.txt", "nuswide")
    rel_paths = _read_lines(root / "ImageList" / "TestImagelist.txt", "nuswide")
    flickr = _require(root / "Flickr", "nuswide")
    label_dir = root / "TrainTestLabels"
    columns = [_read_nus_labels(label_dir / f"Labels_{c}_Test.txt", len(rel_paths)) for c in concepts]
    labels = np.stack(columns, axis=1) if columns else np.zeros((len(rel_paths), 0), np.uint8)
    paths = [flickr / p.replace("\\", "/") for p in rel_paths]
    keep = np.array([p.is_file() for p in paths], dtype=bool)
    n_missing = int((~keep).sum())
    if n_missing:
        example = next(str(p) for p, k in zip(paths, keep) if not k)
        logger.warning("nuswide: %d of %d test images are missing on disk and were dropped (e.g. %s)",
                       n_missing, len(paths), example)
    items = [str(p) for p, k in zip(paths, keep) if k]
    logger.info("nuswide: %d images, %d concepts", len(items), len(concepts))
    return EvalDataset("nuswide", concepts, items, labels[keep],
                       info={"root": str(root), "n_listed": len(paths), "n_missing": n_missing})


def _image_key(path: str) -> str:
    """``<folder>/<file>`` of a NUS-WIDE image path (lists differ in their prefix and separator)."""
    parts = path.replace("\\", "/").split("/")
    return "/".join(parts[-2:]).lower()


def _nus_tag_rows(path: Path, rows: list[int], n_tags: int) -> np.ndarray:
    """The requested rows of ``AllTags1k.txt`` (one 0/1 row of the tag list per image)."""
    wanted = {r: k for k, r in enumerate(rows)}
    out = np.zeros((len(rows), n_tags), np.uint8)
    for r, line in enumerate(_read_lines(path, "nuswide")):
        if r in wanted:
            values = line.split()
            if len(values) != n_tags:
                raise DatasetError(f"nuswide: {path}:{r + 1} has {len(values)} values, the tag list {n_tags}")
            out[wanted[r]] = np.asarray(values, np.int64) == 1
    return out


def read_nuswide_zsl(root: str | Path, split: str = "test") -> EvalDataset:
    """NUS-WIDE in the zero-shot layout: the tags of ``NUS_WID_Tags/TagList1k.txt`` that are not
    among the 81 concepts of ``Concepts81.txt`` are the seen labels (925 for the released files),
    the 81 concepts are the unseen ones.

    Seen labels come from ``NUS_WID_Tags/AllTags1k.txt`` (rows aligned with
    ``ImageList/Imagelist.txt``), unseen ones from ``TrainTestLabels/Labels_<c>_<Split>.txt``
    (aligned with ``ImageList/<Split>Imagelist.txt``). Columns are seen then unseen;
    ``info["label_split"]`` is the :class:`~tagger.evaluate.splits.LabelSplit`. Images missing on
    disk are dropped, as in :func:`read_nuswide`.
    """
    from .splits import LabelSplit
    if split not in ("train", "test"):
        raise DatasetError(f"nuswide: split must be train or test, got {split!r}")
    root, cap = Path(root), split.capitalize()
    concepts = _read_lines(root / "Concepts81.txt", "nuswide")
    tags = _read_lines(root / "NUS_WID_Tags" / "TagList1k.txt", "nuswide")
    seen = [t for t in tags if t not in set(concepts)]
    rel_paths = _read_lines(root / "ImageList" / f"{cap}Imagelist.txt", "nuswide")
    row_of = {_image_key(p): r for r, p in enumerate(_read_lines(root / "ImageList" / "Imagelist.txt", "nuswide"))}
    missing = [p for p in rel_paths if _image_key(p) not in row_of]
    if missing:
        raise DatasetError(f"nuswide: {len(missing)} images of {cap}Imagelist.txt are not in Imagelist.txt, "
                           f"e.g. {missing[0]}")
    all_tags = _nus_tag_rows(root / "NUS_WID_Tags" / "AllTags1k.txt", [row_of[_image_key(p)] for p in rel_paths],
                             len(tags))
    seen_y = all_tags[:, [tags.index(t) for t in seen]]
    label_dir = root / "TrainTestLabels"
    unseen_y = [_read_nus_labels(label_dir / f"Labels_{c}_{cap}.txt", len(rel_paths)) for c in concepts]
    labels = np.concatenate([seen_y, np.stack(unseen_y, 1) if unseen_y else seen_y[:, :0]], axis=1)
    flickr = _require(root / "Flickr", "nuswide")
    paths = [flickr / p.replace("\\", "/") for p in rel_paths]
    keep = np.array([q.is_file() for q in paths], dtype=bool)
    if (~keep).any():
        logger.warning("nuswide: %d of %d %s images are missing on disk and were dropped", int((~keep).sum()),
                       len(paths), split)
    label_split = LabelSplit(seen=tuple(range(len(seen))), unseen=tuple(range(len(seen), len(seen) + len(concepts))))
    logger.info("nuswide zsl %s: %d images, %d seen + %d unseen labels", split, int(keep.sum()), len(seen),
                len(concepts))
    return EvalDataset("nuswide-zsl", seen + concepts, [str(q) for q, k in zip(paths, keep) if k], labels[keep],
                       info={"root": str(root), "split": split, "label_split": label_split,
                             "n_listed": len(paths), "n_missing": int((~keep).sum())})


# ---------------------------------------------------------------- toy world

TOY_VOCABS: tuple[str, ...] = ("toy", "large")


def read_toy(n: int = 2000, split: str = "test", small_only: bool = False, start: int = 0,
             vocab: str = "toy") -> EvalDataset:
    """Scenes ``start .. start+n-1`` of toy-world ``split``; ``small_only`` uses :data:`SMALL_OBJECTS`.

    ``vocab="toy"`` labels the 20 objects; ``"large"`` the 305 labels with truth of
    :mod:`tagger.toyworld.large` (objects, backgrounds, colour- and size-object compounds). The
    images, and so their cached embeddings, are the same for both.
    """
    if n < 0 or start < 0:
        raise DatasetError(f"toy: n and start must be non-negative, got n={n}, start={start}")
    if vocab not in TOY_VOCABS:
        raise DatasetError(f"toy: unknown vocabulary {vocab!r}; expected one of {', '.join(TOY_VOCABS)}")
    from ..toyworld.large import large_truth, truth_labels
    class_names = list(TOY_LABELS) if vocab == "toy" else list(truth_labels()[0])
    truth = (lambda s: s.labels) if vocab == "toy" else large_truth
    cfg = SMALL_OBJECTS if small_only else SceneConfig()
    indices = range(start, start + n)
    try:
        labels = np.stack([truth(make_scene(i, split, cfg)) for i in indices]) if n else \
            np.zeros((0, len(class_names)), np.uint8)
    except ValueError as e:  # unknown split
        raise DatasetError(f"toy: {e}") from e
    items = [f"{TOY_PREFIX}:{split}:{i}" for i in indices]
    name = "toy-small" if small_only else "toy"
    info: dict[str, Any] = {"split": split, "start": start}
    if vocab != "toy":
        info["vocab"] = vocab
    return EvalDataset(name, class_names, items, labels, scene_config=cfg, info=info)


# ---------------------------------------------------------------- dispatch

DATASETS: tuple[str, ...] = ("voc2007", "coco2014", "nuswide", "nuswide-zsl", "toy", "toy-small")


def open_dataset(name: str, root: str | Path | None = None, **kw: Any) -> EvalDataset:
    """Open dataset ``name`` (one of :data:`DATASETS`); the real datasets need ``root``."""
    if name in ("toy", "toy-small"):
        if root is not None:
            logger.debug("%s: ignoring root=%s", name, root)
        return read_toy(small_only=(name == "toy-small"), **kw)
    readers = {"voc2007": read_voc2007, "coco2014": read_coco2014, "nuswide": read_nuswide,
               "nuswide-zsl": read_nuswide_zsl}
    if name not in readers:
        raise DatasetError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if root is None:
        raise DatasetError(f"{name}: a root directory is required")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{name}: root directory {root} " + ("is a file, not a folder" if root.exists() else
                                                               "does not exist"))
    return readers[name](root, **kw)
