"""Cost of a nightly re-tag against a full re-encode of the same corpus, and the mAP cost of
tagging from PQ-compressed patch codes instead of uncompressed patches (toy world).

    python bench/nightly.py [--n 1000]

Both timings come from this one process on the same local Ray instance; the result is a ratio.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from tagger.catalog import Catalog
from tagger.pipeline.encode import EncodeConfig, run_encode
from tagger.evaluate.catalog_eval import score_current_tags
from tagger.models.loader import model_id_for
from tagger.pipeline.nightly import NightlyConfig, run_nightly
from tagger.pipeline.raycluster import ray_session
from tagger.pipeline.tag import TagConfig, run_tag
from tagger.pipeline.text import run_generate_text
from tagger.pipeline.train import run_train
from tagger.toyworld import LABEL_SYNONYMS, LABELS
from tagger.toyworld.export import export_scenes
from tagger.workspace import Workspace


def add_labels(ws: Workspace, names: list[str]) -> None:
    with Catalog.open(ws.catalog) as cat:
        cat.add_labels(names, {n: list(LABEL_SYNONYMS[n]) for n in names})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--model", default="toy-vit")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tagger-bench-"))
    truth = export_scenes(tmp / "images", a.n)
    cfg = EncodeConfig(model=a.model, partition_size=256)
    model_id = model_id_for(a.model)
    with ray_session():
        ws = Workspace.at(tmp / "ws")
        add_labels(ws, list(LABELS[:12]))
        t = time.time()
        run_encode(ws, str(tmp / "images"), cfg, progress=False)
        first_encode = time.time() - t
        run_generate_text(ws, 20000)
        run_train(ws, a.model)
        run_tag(ws, model_id)
        add_labels(ws, list(LABELS[12:]))
        t = time.time()
        night = run_nightly(ws, str(tmp / "images"), cfg, NightlyConfig())
        nightly_s = time.time() - t
        pq_metrics = score_current_tags(ws.catalog, truth)
        run_tag(ws, model_id, TagConfig(patch_source="raw"), night["classifier"])
        raw_metrics = score_current_tags(ws.catalog, truth)
        t = time.time()
        run_encode(Workspace.at(tmp / "ws-reencode"), str(tmp / "images"), cfg, progress=False)
        reencode_s = time.time() - t
    out = {"bench": "nightly", "images": a.n, "model": a.model, "first_encode_s": round(first_encode, 2),
           "full_reencode_s": round(reencode_s, 2), "nightly_retag_s": round(nightly_s, 2),
           "nightly_stage_s": night["timings"], "ratio_nightly_over_reencode": round(nightly_s / reencode_s, 3),
           "mAP_pq_patches": round(pq_metrics["mAP"], 2), "mAP_raw_patches": round(raw_metrics["mAP"], 2),
           "mAP_cost_of_pq": round(raw_metrics["mAP"] - pq_metrics["mAP"], 2)}
    print(f"nightly re-tag {nightly_s:.1f}s vs full re-encode {reencode_s:.1f}s "
          f"-> ratio {out['ratio_nightly_over_reencode']:.3f}")
    print(f"mAP from PQ patch codes {out['mAP_pq_patches']:.2f} vs raw patches {out['mAP_raw_patches']:.2f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
