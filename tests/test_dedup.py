"""Near-duplicates and search by image on toy-world images with known duplicates (JPEG quality 30, half
size, a 90 % crop, a mirror image), encoded with the shipped toy-vit as `tagger encode` encodes them."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tagger.catalog import Catalog
from tagger.models.registry import model_id_for
from tagger.pipeline.encode import EncodeConfig, EncodePartitions
from tagger.store import shard_name_for, write_shard
from tagger.store.dedup import merge_groups
from tagger.store.updates import update_indexes
from tagger.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
MODEL = "toy-vit"

pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def bench_dedup():
    spec = importlib.util.spec_from_file_location("bench_dedup", ROOT / "bench" / "dedup.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def distinct_scenes(n: int, start: int = 0) -> list[int]:
    """``n`` toy-world scenes whose label sets differ pairwise (so that only true duplicates look alike)."""
    from tagger.toyworld.scenes import make_scene
    seen, out, i = set(), [], start
    while len(out) < n:
        key = tuple(np.flatnonzero(make_scene(i, "corpus").labels))
        if key not in seen:
            seen.add(key)
            out.append(i)
        i += 1
    return out


def encode_into(ws: Workspace, paths: list[str]) -> np.ndarray:
    """Register ``paths`` and write their embeddings as one shard (what an encode run writes)."""
    from tagger.models.preprocess import pixel_spec
    from tagger.pipeline.decode import Decoder
    model_id = model_id_for(MODEL)
    spec = pixel_spec(MODEL, None)
    decoder = Decoder(preprocess=spec.to_uint8, size=spec.image_size)
    pixels = np.stack([decoder.decode(p)["pixels"] for p in paths])
    g, patches = EncodePartitions(EncodeConfig(model=MODEL, device="cpu"), str(ws.root), model_id).embed(pixels)
    with Catalog.open(ws.catalog) as cat:
        ids = cat.register_images(paths)
    write_shard(ws.root, model_id, shard_name_for(ids), ids, g, patches)
    update_indexes(ws.root, model_id)
    return ids


def cli(ws: Workspace, *args: str) -> list[dict]:
    """The rows (a JSON array) or the summary (one JSON object) a real `tagger` process prints."""
    out = subprocess.run([sys.executable, "-m", "tagger.cli", *args, "--workspace", str(ws.root), "--json"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout.strip()
    if text.startswith("["):  # rows: one JSON array
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def dup_ws(tmp_path_factory) -> tuple[Workspace, list[str], np.ndarray, np.ndarray]:
    """A workspace of 8 scenes x (original + 4 near-duplicates), encoded with toy-vit."""
    tmp = tmp_path_factory.mktemp("dedup")
    ws = Workspace.at(tmp / "ws")
    ws.update_settings(model=MODEL)
    folder = tmp / "images"
    folder.mkdir()
    paths, scene_of, kind = bench_dedup().write_corpus(folder, distinct_scenes(8))
    ids = encode_into(ws, paths)
    return ws, paths, np.asarray(scene_of), ids


def pair_scores(groups: list[dict], paths: list[str], scene_of: np.ndarray) -> tuple[float, float]:
    scene = dict(zip(paths, scene_of.tolist()))
    found = {frozenset((a, b)) for g in groups for a in g["uris"] for b in g["uris"] if a < b}
    true = {frozenset((a, b)) for a in paths for b in paths if a < b and scene[a] == scene[b]}
    return len(found & true) / max(len(found), 1), len(found & true) / len(true)


def test_dedup_groups_the_known_duplicates_then_only_new_images(dup_ws, tmp_path: Path) -> None:
    ws, paths, scene_of, _ = dup_ws
    first = cli(ws, "dedup", "--show", "100")[-1]
    assert first["mode"] == "full" and first["compared"] == len(paths)
    precision, recall = pair_scores(first["largest_groups"], paths, scene_of)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)
    assert all(g["images"] <= 5 and 0.0 < g["min_similarity"] <= 1.0 for g in first["largest_groups"])
    new_paths, new_scene, _ = bench_dedup().write_corpus(tmp_path, distinct_scenes(1, start=10_000))
    encode_into(ws, new_paths)
    again = cli(ws, "dedup", "--show", "100")[-1]
    assert again["mode"] == "incremental" and again["compared"] == len(new_paths)
    groups = {frozenset(g["uris"]) for g in again["largest_groups"]}
    assert frozenset(new_paths) in groups  # the new scene's five images, grouped
    assert {frozenset(g["uris"]) for g in first["largest_groups"]} <= groups  # the old groups kept


def test_like_finds_the_image_then_its_near_duplicates(dup_ws) -> None:
    ws, paths, scene_of, ids = dup_ws
    original = paths[5]  # scene 1's original (5 images per scene, the original first)
    hits = cli(ws, "search", "--like", original, "-k", "5")
    assert [h["uri"] for h in hits][0] == original and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    same = {p for p, s in zip(paths, scene_of) if s == scene_of[5]}
    assert len({h["uri"] for h in hits} & same) >= 4
    exact = cli(ws, "search", "--like", original, "-k", "5", "--exact")  # this corpus is exact anyway
    assert [h["uri"] for h in exact] == [h["uri"] for h in hits]


def test_like_encodes_a_new_file_on_the_fly(dup_ws, tmp_path: Path) -> None:
    from PIL import Image, ImageOps
    ws, paths, scene_of, _ = dup_ws
    mirrored = tmp_path / "new-mirror.png"
    ImageOps.mirror(Image.open(paths[10]).convert("RGB")).save(mirrored)  # scene 2's original, mirrored again
    hits = cli(ws, "search", "--like", str(mirrored), "-k", "3")
    assert hits[0]["uri"] in {p for p, s in zip(paths, scene_of) if s == scene_of[10]}
    patch_hits = cli(ws, "search", "--like", str(mirrored), "-k", "3", "--level", "patch")
    assert len(patch_hits) == 3 and all(h["patch"] is not None for h in patch_hits)


def test_like_and_dedup_refuse_bad_input(dup_ws, tmp_path: Path) -> None:
    ws, *_ = dup_ws
    for args in (["search", "--like", str(tmp_path / "missing.jpg")], ["search", "words", "--like", "x"],
                 ["dedup", "--threshold", "2"]):
        out = subprocess.run([sys.executable, "-m", "tagger.cli", *args, "--workspace", str(ws.root)],
                             capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert out.returncode != 0 and out.stderr.count("error:") == 1, out.stderr


def test_merge_groups_joins_new_pairs_with_known_groups() -> None:
    known = (np.array([1, 2, 7, 9]), np.array([1, 1, 7, 7]), np.array([0.9, 0.9, 0.8, 0.8]))
    ids, groups, sims = merge_groups(known, np.array([2, 20]), np.array([9, 21]), np.array([0.95, 0.99]))
    got = dict(zip(ids.tolist(), zip(groups.tolist(), sims.tolist())))
    assert got == {1: (1, 0.9), 2: (1, 0.95), 7: (1, 0.8), 9: (1, 0.95), 20: (20, 0.99), 21: (20, 0.99)}
    none = merge_groups(known, np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0))
    assert none[0].size == 0
