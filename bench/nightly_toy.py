"""Toy-world parts of ``bench/nightly.py``: the end-to-end ratio with the mAP cost of PQ (``--toy``),
and the quality of an incremental nightly against a full retrain (``--toy-change``).

``--toy-change``: toy images (``toy-vit``, trained weights) with a vocabulary of the first 10 toy
labels (which have ground truth) plus made-up distractor words up to each ``--labels`` count; a
full nightly tags them, then the other 10 toy labels are added and the nightly runs twice on copies
of that workspace: incremental (the mode it picks: 10 labels of 1,000 or 10,000) and ``full=True``.
Per mode: the mAP of the 10 kept labels and of the 10 new ones, over the current run's stored tags
(top-k and positives; a label not kept for an image counts as lowest), and the nightly's seconds.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from tagger.atomic import atomic_write_text
from tagger.catalog import Catalog
from tagger.evaluate.metrics import per_class_ap
from tagger.pipeline.encode import EncodeConfig, run_encode
from tagger.pipeline.nightly import NightlyConfig, run_nightly
from tagger.pipeline.raycluster import ray_session
from tagger.toyworld import LABEL_SYNONYMS, LABELS
from tagger.workspace import Workspace

KEPT, NEW = list(LABELS[:10]), list(LABELS[10:20])


def _add(ws: Workspace, names: list[str]) -> None:
    with Catalog.open(ws.catalog) as cat:
        cat.add_labels(names, {n: list(LABEL_SYNONYMS.get(n, ())) for n in names})


def _map(ws: Workspace, truth: dict[str, list[str]], labels: list[str]) -> float:
    """mAP (points) of ``labels`` over the current run's stored scores."""
    with Catalog.open(ws.catalog, read_only=True) as cat:
        rows = cat.current_scores()
    uris = sorted(truth)
    pos, col = {u: i for i, u in enumerate(uris)}, {n: j for j, n in enumerate(labels)}
    s = np.full((len(uris), len(labels)), -1e9)
    for uri, label, score in rows:
        if uri in pos and label in col:
            s[pos[uri], col[label]] = score
    y = np.array([[n in truth[u] for n in labels] for u in uris], np.uint8)
    return round(100 * float(np.nanmean(per_class_ap(s, y))), 2)


def _step(root: Path, name: str, run) -> dict:
    """``run()``'s result, kept in ``root/<name>.json`` once done: a rerun skips finished steps (a
    killed step reruns and resumes, as every nightly stage and training does)."""
    done = root / f"{name}.json"
    if done.exists():
        return json.loads(done.read_text())
    out = run()
    atomic_write_text(done, json.dumps(out))  # a kill while writing leaves no half-written record
    return out


def _copy_once(src: Path, dst: Path) -> Workspace:
    """A copy of the workspace ``src`` at ``dst``, made once (a half-made copy is redone)."""
    if not dst.exists():
        part = dst.with_name(dst.name + ".part")
        shutil.rmtree(part, ignore_errors=True)
        shutil.copytree(src, part)
        part.rename(dst)
    return Workspace.at(dst)


def change_quality(tmp: Path, truth: dict, images: Path, n_labels: int, a) -> dict:
    """Full nightly at ``n_labels``, then +10 toy labels: incremental against full retrain (each
    step kept in ``tmp`` once done, so a run in a kept ``--work`` folder resumes)."""
    from nightly import label_names  # the distractor words of the marginal bench
    cfg = EncodeConfig(model=a.toy_model, partition_size=256)
    base = Workspace.at(tmp / f"base-{n_labels}")

    def build() -> dict:
        t = time.time()
        if not (tmp / f"labels-{n_labels}.json").exists():
            _add(base, KEPT)
            with Catalog.open(base.catalog) as cat:
                cat.add_labels(label_names(n_labels - len(KEPT)))
            atomic_write_text(tmp / f"labels-{n_labels}.json", "{}")
        run_encode(base, str(images), cfg, progress=False)
        run_nightly(base, None, cfg, NightlyConfig(n_sentences=a.toy_sentences))
        _add(base, NEW)
        return {"s": round(time.time() - t, 1)}

    out = {"labels_before": n_labels, "labels_added": len(NEW), "base_s": _step(tmp, f"base-{n_labels}", build)["s"]}
    for mode, full in (("incremental", False), ("full", True)):
        def night(mode=mode, full=full) -> dict:
            ws = _copy_once(base.root, tmp / f"{mode}-{n_labels}")
            t = time.time()
            night = run_nightly(ws, None, cfg, NightlyConfig(n_sentences=a.toy_sentences, full=full))
            with Catalog.open(ws.catalog, read_only=True) as cat:
                present = {r["label"]: r["present"] for r in cat.run_thresholds(night["run_id"])}
            res = {"mode": night["mode"], "s": round(time.time() - t, 1), "stages_s": night["timings"],
                   "mAP_kept": _map(ws, truth, KEPT), "mAP_new": _map(ws, truth, NEW),
                   "new_absent": [n for n in NEW if not present.get(n)]}
            shutil.rmtree(ws.root)
            return res
        out[mode] = _step(tmp, f"{mode}-{n_labels}", night)
    inc, full_ = out["incremental"], out["full"]
    out["delta_kept"] = round(inc["mAP_kept"] - full_["mAP_kept"], 2)
    out["delta_new"] = round(inc["mAP_new"] - full_["mAP_new"], 2)
    return out


def change_main(a) -> None:
    from tagger.toyworld.export import export_scenes
    keep = a.work is not None
    tmp = Path(a.work) if keep else Path(tempfile.mkdtemp(prefix="tagger-bench-change-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        if not (tmp / "truth.json").exists():
            truth = export_scenes(tmp / "images", a.n)
            atomic_write_text(tmp / "truth.json", json.dumps(truth))
        truth = json.loads((tmp / "truth.json").read_text())
        with ray_session():
            res = {str(k): change_quality(tmp, truth, tmp / "images", k, a) for k in a.labels}
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    for k, r in res.items():
        print(f"{k} labels +10: kept mAP {r['incremental']['mAP_kept']:.2f} incremental vs {r['full']['mAP_kept']:.2f} "
              f"full ({r['delta_kept']:+.2f}); new mAP {r['incremental']['mAP_new']:.2f} vs {r['full']['mAP_new']:.2f} "
              f"({r['delta_new']:+.2f}); nightly {r['incremental']['s']:.0f} s vs {r['full']['s']:.0f} s")
    print(json.dumps({"bench": "nightly-change-toy", "model": a.toy_model, "images": a.n,
                      "n_sentences": a.toy_sentences, "kept": KEPT, "new": NEW, "results": res,
                      "within_0_5": all(abs(r["delta_kept"]) <= 0.5 and abs(r["delta_new"]) <= 0.5
                                        for r in res.values()),
                      # a retrained classifier moves every label, either way: not worse by more than 0.5
                      "not_below_by_0_5": all(r["delta_kept"] >= -0.5 and r["delta_new"] >= -0.5
                                              for r in res.values())}))


def toy_main(a) -> None:
    """Toy world: a nightly re-tag against a full re-encode end to end, and the mAP cost of PQ patches."""
    from tagger.evaluate.catalog_eval import score_current_tags
    from tagger.models.registry import model_id_for
    from tagger.pipeline.tag import TagConfig, run_tag
    from tagger.pipeline.text import run_generate_text
    from tagger.pipeline.train import run_train
    from tagger.toyworld.export import export_scenes

    tmp = Path(tempfile.mkdtemp(prefix="tagger-bench-"))
    truth = export_scenes(tmp / "images", a.n)
    cfg = EncodeConfig(model=a.toy_model, partition_size=256)
    model_id = model_id_for(a.toy_model)
    with ray_session():
        ws = Workspace.at(tmp / "ws")
        _add(ws, list(LABELS[:12]))
        run_encode(ws, str(tmp / "images"), cfg, progress=False)
        run_generate_text(ws, 20000)
        run_train(ws, a.toy_model)
        run_tag(ws, model_id)
        _add(ws, list(LABELS[12:]))
        t = time.time()
        night = run_nightly(ws, str(tmp / "images"), cfg, NightlyConfig())
        nightly_s = time.time() - t
        pq_metrics = score_current_tags(ws.catalog, truth)
        run_tag(ws, model_id, TagConfig(patch_source="raw"), night["classifier"])
        raw_metrics = score_current_tags(ws.catalog, truth)
        t = time.time()
        run_encode(Workspace.at(tmp / "ws-reencode"), str(tmp / "images"), cfg, progress=False)
        reencode_s = time.time() - t
    shutil.rmtree(tmp, ignore_errors=True)
    out = {"bench": "nightly-toy", "images": a.n, "model": a.toy_model, "full_reencode_s": round(reencode_s, 2),
           "nightly_retag_s": round(nightly_s, 2), "nightly_stage_s": night["timings"],
           "ratio_nightly_over_reencode": round(nightly_s / reencode_s, 3),
           "mAP_pq_patches": round(pq_metrics["mAP"], 2), "mAP_raw_patches": round(raw_metrics["mAP"], 2),
           "mAP_cost_of_pq": round(raw_metrics["mAP"] - pq_metrics["mAP"], 2)}
    print(f"nightly re-tag {nightly_s:.1f}s vs full re-encode {reencode_s:.1f}s "
          f"-> ratio {out['ratio_nightly_over_reencode']:.3f}")
    print(f"mAP from PQ patch codes {out['mAP_pq_patches']:.2f} vs raw patches {out['mAP_raw_patches']:.2f}")
    print(json.dumps(out))
