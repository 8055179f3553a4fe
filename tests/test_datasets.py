"""Dataset readers on tiny fixture trees written into tmp_path."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagger.errors import DatasetError
from tagger.evaluate.datasets import (
    VOC_CLASSES, open_dataset, read_coco2014, read_nuswide, read_toy, read_voc2007,
)


def _jpeg(path: Path, colour: tuple[int, int, int] = (200, 30, 30), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (8, 6), colour if mode == "RGB" else 128).save(path, "JPEG")


# ---------------------------------------------------------------- VOC

VOC_IDS = ["000001", "000004", "000009"]
# (image, class) -> value; every other pair is -1
VOC_MARKS = {("000001", "dog"): 1, ("000001", "person"): 0, ("000004", "person"): 1,
             ("000009", "car"): 1, ("000009", "dog"): 0}


def _voc_tree(root: Path, skip_class: str | None = None) -> Path:
    voc = root / "VOCdevkit" / "VOC2007"
    main = voc / "ImageSets" / "Main"
    main.mkdir(parents=True)
    for cls in VOC_CLASSES:
        if cls == skip_class:
            continue
        lines = [f"{i} {VOC_MARKS.get((i, cls), -1):>2}" for i in VOC_IDS]
        (main / f"{cls}_test.txt").write_text("\n".join(lines) + "\n")
    for i in VOC_IDS:
        _jpeg(voc / "JPEGImages" / f"{i}.jpg")
    return root / "VOCdevkit"


@pytest.mark.parametrize("point_at_voc2007", [False, True])
def test_voc_labels_and_difficult_is_negative(tmp_path: Path, point_at_voc2007: bool) -> None:
    devkit = _voc_tree(tmp_path)
    ds = read_voc2007(devkit / "VOC2007" if point_at_voc2007 else devkit)
    assert ds.class_names == list(VOC_CLASSES) and len(VOC_CLASSES) == 20
    assert [Path(p).stem for p in ds.items] == VOC_IDS
    expected = np.zeros((3, 20), np.uint8)
    for (img, cls), v in VOC_MARKS.items():
        expected[VOC_IDS.index(img), VOC_CLASSES.index(cls)] = int(v == 1)
    np.testing.assert_array_equal(ds.labels, expected)
    assert ds.labels[0, VOC_CLASSES.index("person")] == 0  # difficult
    img = ds.load_image(1)
    assert img.mode == "RGB" and img.size == (8, 6)


def test_voc_missing_class_file_is_named(tmp_path: Path) -> None:
    devkit = _voc_tree(tmp_path, skip_class="sheep")
    with pytest.raises(DatasetError, match="sheep_test.txt"):
        read_voc2007(devkit)


def test_voc_wrong_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="ImageSets"):
        read_voc2007(tmp_path)


# ---------------------------------------------------------------- COCO

def _coco_tree(root: Path) -> Path:
    data = {
        "images": [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg"},
                   {"id": 7, "file_name": "COCO_val2014_000000000007.jpg"},
                   {"id": 99, "file_name": "COCO_val2014_000000000099.jpg"}],
        # category ids out of order in the file: classes must come out ordered by id
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 1},
                        {"id": 2, "image_id": 7, "category_id": 1},
                        {"id": 3, "image_id": 7, "category_id": 18},
                        {"id": 4, "image_id": 42, "category_id": 3}],
    }
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(data))
    for im in data["images"]:
        _jpeg(root / "val2014" / im["file_name"], mode="L")
    return root


def test_coco_labels_all_images_and_category_order(tmp_path: Path) -> None:
    ds = read_coco2014(_coco_tree(tmp_path))
    assert ds.class_names == ["person", "car", "dog"]
    names = [Path(p).name for p in ds.items]
    assert sorted(names) == sorted(f"COCO_val2014_{i:012d}.jpg" for i in (7, 42, 99))
    by_name = dict(zip(names, ds.labels.tolist()))
    assert by_name["COCO_val2014_000000000007.jpg"] == [1, 0, 1]
    assert by_name["COCO_val2014_000000000042.jpg"] == [0, 1, 0]
    assert by_name["COCO_val2014_000000000099.jpg"] == [0, 0, 0]  # kept although it has no objects
    assert ds.load_image(0).mode == "RGB"  # grayscale file converted


def test_coco_missing_annotation_file(tmp_path: Path) -> None:
    (tmp_path / "val2014").mkdir()
    with pytest.raises(DatasetError, match="instances_val2014.json"):
        read_coco2014(tmp_path)


# ---------------------------------------------------------------- NUS-WIDE

NUS_CONCEPTS = ["animal", "sky", "water"]
NUS_LIST = ["actor\\0001_1.jpg", "actor\\0002_2.jpg", "sky\\0003_3.jpg", "zoo\\0004_4.jpg"]
NUS_LABELS = {"animal": [1, 0, 0, 1], "sky": [0, 1, 1, 1], "water": [0, 0, 1, 0]}


def _nus_tree(root: Path, missing: tuple[int, ...] = (), skip_labels: str | None = None) -> Path:
    (root / "Concepts81.txt").write_text("\n".join(NUS_CONCEPTS) + "\n")
    (root / "ImageList").mkdir()
    (root / "ImageList" / "TestImagelist.txt").write_text("\r\n".join(NUS_LIST) + "\r\n")
    (root / "TrainTestLabels").mkdir()
    for c in NUS_CONCEPTS:
        if c != skip_labels:
            (root / "TrainTestLabels" / f"Labels_{c}_Test.txt").write_text("\n".join(map(str, NUS_LABELS[c])))
    (root / "Flickr").mkdir()
    for i, rel in enumerate(NUS_LIST):
        if i not in missing:
            _jpeg(root / "Flickr" / rel.replace("\\", "/"))
    return root


def test_nuswide_labels(tmp_path: Path) -> None:
    ds = read_nuswide(_nus_tree(tmp_path))
    assert ds.class_names == NUS_CONCEPTS and len(ds) == 4
    expected = np.array([NUS_LABELS[c] for c in NUS_CONCEPTS], np.uint8).T
    np.testing.assert_array_equal(ds.labels, expected)
    assert Path(ds.items[2]).relative_to(tmp_path / "Flickr").as_posix() == "sky/0003_3.jpg"
    assert ds.info["n_missing"] == 0 and ds.load_image(3).mode == "RGB"


def test_nuswide_drops_missing_images(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _nus_tree(tmp_path, missing=(1, 3))
    with caplog.at_level(logging.WARNING):
        ds = read_nuswide(root)
    assert ds.info["n_missing"] == 2 and len(ds) == 2
    assert [Path(p).name for p in ds.items] == ["0001_1.jpg", "0003_3.jpg"]
    expected = np.array([NUS_LABELS[c] for c in NUS_CONCEPTS], np.uint8).T[[0, 2]]
    np.testing.assert_array_equal(ds.labels, expected)
    assert any("missing" in r.getMessage() for r in caplog.records)


def test_nuswide_missing_label_file(tmp_path: Path) -> None:
    root = _nus_tree(tmp_path, skip_labels="sky")
    with pytest.raises(DatasetError, match="Labels_sky_Test.txt"):
        read_nuswide(root)


def test_nuswide_misaligned_label_file(tmp_path: Path) -> None:
    root = _nus_tree(tmp_path)
    (root / "TrainTestLabels" / "Labels_water_Test.txt").write_text("0\n1\n")
    with pytest.raises(DatasetError, match="Labels_water_Test.txt"):
        read_nuswide(root)


# ---------------------------------------------------------------- dispatch and toy

def test_open_dataset_dispatch(tmp_path: Path) -> None:
    ds = open_dataset("coco2014", _coco_tree(tmp_path / "coco"))
    assert ds.name == "coco2014" and len(ds) == 3
    toy = open_dataset("toy-small", n=3, start=5)
    assert toy.name == "toy-small" and toy.items == ["toy:test:5", "toy:test:6", "toy:test:7"]
    with pytest.raises(DatasetError, match="unknown dataset"):
        open_dataset("imagenet", tmp_path)
    with pytest.raises(DatasetError, match="root"):
        open_dataset("voc2007")


def test_read_toy_matches_generator() -> None:
    from tagger.toyworld import LABELS, make_scene

    ds = read_toy(n=4, split="val", start=10)
    assert ds.class_names == list(LABELS) and ds.labels.dtype == np.uint8
    for row, i in enumerate(range(10, 14)):
        scene = make_scene(i, "val")
        np.testing.assert_array_equal(ds.labels[row], scene.labels)
        assert np.array_equal(np.asarray(ds.load_image(row)), np.asarray(scene.image.convert("RGB")))
