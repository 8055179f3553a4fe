"""Score the current tags in a workspace catalog against a ground-truth file ({uri: [labels]})."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..workspace import Workspace
from .metrics import summarize


def score_current_tags(catalog_path: str | Path, truth: dict[str, list[str]]) -> dict:
    """mAP and P/R/F1@k of the current run's kept scores (labels not kept count as lowest)."""
    from ..catalog import Catalog
    with Catalog.open(catalog_path, read_only=True) as cat:
        rows = cat.current_scores()
        labels = cat.active_labels()
        positives = cat.current_positives()
    uris = sorted(truth)
    pos = {u: i for i, u in enumerate(uris)}
    col = {lab: j for j, lab in enumerate(labels)}
    scores = np.full((len(uris), len(labels)), -1e9, np.float64)
    for uri, label, score in rows:
        if uri in pos and label in col:
            scores[pos[uri], col[label]] = score
    y = np.array([[lab in truth[u] for lab in labels] for u in uris], np.uint8)
    out = summarize(scores, y)
    out["images_tagged"] = len({u for u, _, _ in rows if u in pos})
    out.update(decision_stats(positives, truth))
    return out


def decision_stats(positives: list[tuple[str, str]], truth: dict[str, list[str]]) -> dict:
    """How the run's positive tags compare with the truth: per image counts, micro precision/recall."""
    pred = {(u, lab) for u, lab in positives if u in truth}
    true = {(u, lab) for u, labs in truth.items() for lab in labs}
    hit = len(pred & true)
    return {"positives_per_image": len(pred) / max(len(truth), 1), "truth_per_image": len(true) / max(len(truth), 1),
            "positive_precision": hit / max(len(pred), 1), "positive_recall": hit / max(len(true), 1),
            "labels_with_positives": len({lab for _, lab in pred})}


def main() -> None:
    ws, truth_path = sys.argv[1], sys.argv[2]
    res = score_current_tags(Workspace(Path(ws)).catalog, json.loads(Path(truth_path).read_text()))
    print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
