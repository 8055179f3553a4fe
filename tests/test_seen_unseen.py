"""The seen/unseen evaluation: the fixed toy split, the NUS-WIDE 925/81 layout on a fixture tree,
fusion of two heads, and the eval verb's seen-unseen split (refusals and one small run)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tagger.cli import app
from tagger.errors import DatasetError
from tagger.evaluate.datasets import open_dataset, read_nuswide_zsl
from tagger.evaluate.seen_unseen import TOY_UNSEEN, fuse_scores, toy_split
from tagger.toyworld import LABELS

runner = CliRunner()


def test_the_toy_split_is_fixed_15_seen_5_unseen() -> None:
    split = toy_split(list(LABELS))
    assert len(split.seen) == 15 and len(split.unseen) == 5
    assert [LABELS[i] for i in split.unseen] == sorted(TOY_UNSEEN, key=LABELS.index)


def test_fusion_mixes_per_label_standardised_scores() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 6)), 100 + 5 * rng.normal(size=(4, 6))
    za, zb = (a - a.mean(0)) / a.std(0), (b - b.mean(0)) / b.std(0)
    np.testing.assert_allclose(fuse_scores(a, b, 0.3), 0.7 * za + 0.3 * zb)
    ref = rng.normal(size=(9, 6))
    np.testing.assert_allclose(fuse_scores(a, b, 0.0, ref_a=ref), (a - ref.mean(0)) / ref.std(0))


# ------------------------------------------------------------------ NUS-WIDE 925/81 layout
TAGS = ["sky", "dog", "sunset", "beach", "cat", "clouds"]  # "sky", "dog", "clouds" are also concepts
CONCEPTS = ["clouds", "dog", "sky"]
ALL = ["C:\\ImageData\\Flickr\\actor\\0001_1.jpg", "C:\\ImageData\\Flickr\\actor\\0002_2.jpg",
       "C:\\ImageData\\Flickr\\beach\\0003_3.jpg", "C:\\ImageData\\Flickr\\beach\\0004_4.jpg"]
ALL_TAGS = ["1 0 1 0 0 0", "0 1 0 0 1 0", "0 0 0 1 0 1", "1 1 1 1 1 1"]


def nus_tree(root: Path, skip_image: str | None = None) -> Path:
    (root / "ImageList").mkdir(parents=True)
    (root / "NUS_WID_Tags").mkdir()
    (root / "TrainTestLabels").mkdir()
    (root / "Concepts81.txt").write_text("\n".join(CONCEPTS) + "\n")
    (root / "NUS_WID_Tags" / "TagList1k.txt").write_text("\n".join(TAGS) + "\n")
    (root / "NUS_WID_Tags" / "AllTags1k.txt").write_text("\n".join(ALL_TAGS) + "\n")
    (root / "ImageList" / "Imagelist.txt").write_text("\n".join(ALL) + "\n")
    test = ["beach\\0004_4.jpg", "actor\\0001_1.jpg"]  # not in Imagelist order
    (root / "ImageList" / "TestImagelist.txt").write_text("\n".join(test) + "\n")
    (root / "ImageList" / "TrainImagelist.txt").write_text("actor\\0002_2.jpg\nbeach\\0003_3.jpg\n")
    unseen = {"clouds": ("1", "0"), "dog": ("0", "0"), "sky": ("1", "1")}
    for c, (a, b) in unseen.items():
        (root / "TrainTestLabels" / f"Labels_{c}_Test.txt").write_text(f"{a}\n{b}\n")
        (root / "TrainTestLabels" / f"Labels_{c}_Train.txt").write_text(f"{b}\n{a}\n")
    for rel in test + ["actor\\0002_2.jpg", "beach\\0003_3.jpg"]:
        if rel != skip_image:
            path = root / "Flickr" / rel.replace("\\", "/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
    return root


def test_nuswide_seen_unseen_layout(tmp_path: Path) -> None:
    ds = read_nuswide_zsl(nus_tree(tmp_path))
    assert ds.class_names == ["sunset", "beach", "cat", "clouds", "dog", "sky"]  # seen (tags minus concepts), unseen
    split = ds.info["label_split"]
    assert split.seen == (0, 1, 2) and split.unseen == (3, 4, 5)
    assert [Path(p).name for p in ds.items] == ["0004_4.jpg", "0001_1.jpg"]
    # image 4 has every tag; image 1 has sky, sunset; unseen columns from the Labels_*_Test files
    np.testing.assert_array_equal(ds.labels, [[1, 1, 1, 1, 0, 1], [1, 0, 0, 0, 0, 1]])
    train = read_nuswide_zsl(tmp_path, split="train")
    np.testing.assert_array_equal(train.labels[:, :3], [[0, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(train.labels[:, 3:], [[0, 0, 1], [1, 0, 1]])
    assert open_dataset("nuswide-zsl", tmp_path).class_names == ds.class_names


def test_nuswide_seen_unseen_errors(tmp_path: Path) -> None:
    root = nus_tree(tmp_path / "a")
    (root / "NUS_WID_Tags" / "AllTags1k.txt").write_text("1 0\n0 1\n1 1\n0 0\n")
    with pytest.raises(DatasetError, match="AllTags1k.txt:1 has 2 values"):
        read_nuswide_zsl(root)
    root = nus_tree(tmp_path / "b")
    (root / "ImageList" / "TestImagelist.txt").write_text("elsewhere\\0009_9.jpg\n")
    with pytest.raises(DatasetError, match="not in Imagelist.txt"):
        read_nuswide_zsl(root)
    root = nus_tree(tmp_path / "c")
    (root / "NUS_WID_Tags" / "TagList1k.txt").unlink()
    with pytest.raises(DatasetError, match="TagList1k.txt"):
        read_nuswide_zsl(root)
    ds = read_nuswide_zsl(nus_tree(tmp_path / "d", skip_image="actor\\0001_1.jpg"))
    assert len(ds.items) == 1 and ds.info["n_missing"] == 1


# ------------------------------------------------------------------ the eval verb
@pytest.mark.parametrize("args, needle", [
    (["--split", "random"], "--split must be seen-unseen"),
    (["--split", "seen-unseen", "--dataset", "voc2007"], "use --dataset toy"),
    (["--split", "seen-unseen", "--head", "linprobe"], "unknown seen/unseen head"),
])
def test_eval_seen_unseen_refusals(args: list[str], needle: str) -> None:
    out = runner.invoke(app, ["eval", "--model", "toy-rn", "--n", "8", "--n-train", "8", *args])
    assert out.exit_code == 2 and needle in out.output, out.output


def test_eval_seen_unseen_runs_small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGGER_CACHE_DIR", str(tmp_path))
    out = runner.invoke(app, ["eval", "--model", "toy-rn", "--head", "ovml", "--split", "seen-unseen",
                              "--n", "40", "--n-train", "60", "--device", "cpu", "--json"])
    assert out.exit_code == 0, out.output
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    assert metrics["head"] == "ovml" and metrics["gzsl_n_classes"] == 20 and metrics["zsl_n_classes"] == 5
    assert 0 <= metrics["zsl_mAP"] <= 100 and "gzsl_F1@3" in metrics and "zsl_F1@5" in metrics
