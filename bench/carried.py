"""An unchanged nightly that finds a few new images: the carried run against tagging every image again.

    python bench/carried.py [--n 2000] [--add 20] [--model toy-vit] [--work DIR]

Toy images with the 20 toy labels, tagged by a full nightly; then --add new images arrive and the
nightly runs on two copies of that workspace: as shipped (no label changed, few new images: a carried
run that tags only the new shards) and with ``max_changed=0`` (the same nightly made to tag every
image again with the classifier in use, nothing trained). Reports each nightly's wall seconds and its
tag stage's (one after the other on the same machine), whether the carried run kept every old
image's tags as the base run had them, and how many positives the new images got in each run and
the old images changed in the full re-tag (its calibration sample holds the new images too). One
JSON line.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from tagger.catalog import Catalog
from tagger.pipeline.encode import EncodeConfig
from tagger.pipeline.nightly import NightlyConfig, run_nightly
from tagger.pipeline.raycluster import ray_session
from tagger.toyworld import LABEL_SYNONYMS, LABELS
from tagger.toyworld.export import export_scenes
from tagger.workspace import Workspace

COLS = "i.uri, t.label, t.score, t.positive, t.confidence"


def _tags(ws: Path, run_id: int) -> dict[tuple[str, str], tuple]:
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        rows = cat.query(f"SELECT {COLS} FROM tags AS t JOIN images AS i USING (image_id) WHERE t.run_id = ?",
                         [run_id])
    return {(r[0], r[1]): r[2:] for r in rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--add", type=int, default=20)
    p.add_argument("--model", default="toy-vit")
    p.add_argument("--partition-size", type=int, default=256)
    p.add_argument("--work", default=None, help="folder for the workspaces (default: a temp folder)")
    a = p.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="bench-carried-"))
    enc = EncodeConfig(model=a.model, partition_size=a.partition_size)
    cfg = NightlyConfig(n_sentences=3000)
    export_scenes(work / "images", a.n)
    export_scenes(work / "more", a.add, start=a.n)
    base = work / "base"
    with ray_session():
        ws = Workspace.at(base)
        with Catalog.open(ws.catalog) as cat:
            cat.add_labels(list(LABELS), {n: list(LABEL_SYNONYMS[n]) for n in LABELS})
        first = run_nightly(ws, str(work / "images"), enc, cfg)
        out = {}
        for name, night in (("carried", cfg), ("every_image", NightlyConfig(n_sentences=3000, max_changed=0.0))):
            copy = work / name
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(base, copy)
            t = time.time()
            got = run_nightly(Workspace.at(copy), str(work / "more"), enc, night)
            out[name] = {"wall_s": round(time.time() - t, 2), "tag_s": got["timings"]["tag"],
                         "encode_s": got["timings"]["encode"], "run_id": got["run_id"], "reason": got["mode_reason"]}
    before = _tags(base, first["run_id"])
    carried = _tags(work / "carried", out["carried"]["run_id"])
    full = _tags(work / "every_image", out["every_image"]["run_id"])
    old = {u for u, _ in before}
    new_pairs = {k for k in carried if k[0] not in old}
    print(json.dumps({"bench": "nightly-carried", "model": a.model, "images": a.n, "added": a.add, **out,
                      "tag_ratio": round(out["every_image"]["tag_s"] / max(out["carried"]["tag_s"], 1e-9), 2),
                      "old_tags_kept": all(carried.get(k) == v for k, v in before.items()),
                      "new_positives_carried": sum(bool(carried[k][1]) for k in new_pairs),
                      "new_positives_full": sum(bool(full[k][1]) for k in full if k[0] not in old),
                      "old_positive_changes_full": sum(bool(v[1]) != bool((full.get(k) or (0, False))[1])
                                                       for k, v in before.items())}))


if __name__ == "__main__":
    main()
