"""Tag every encoded image from stored embeddings into a new run and make it current.

    python -m jobs.tag --workspace WS [--top-k 5] [--decision mixture|standardized] [--calibrate-with FILE]
"""
from __future__ import annotations

import argparse

from jobs.common import add_decision_args, add_model_args, finite_float, parser, run
from tagger.models.loader import model_id_for
from tagger.pipeline.tag import TagConfig, run_tag


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    add_model_args(p)
    p.add_argument("--classifier-id", default=None, help="default: the newest for the model")
    p.add_argument("--top-k", type=int, default=TagConfig.top_k)
    add_decision_args(p)
    p.add_argument("--threshold", type=finite_float, default=TagConfig.threshold,
                   help="--decision standardized: the per-image z-score a positive reaches")
    p.add_argument("--no-calibrate", action="store_true", help="keep raw scores (no per-label z-score)")
    p.add_argument("--patch-source", choices=["pq", "raw"], default="pq")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--no-current", action="store_true", help="load the run but do not make it current")
    p.add_argument("--crash-after", type=int, default=None, help=argparse.SUPPRESS)  # crash tests
    args = p.parse_args(argv)

    def go(a, ws):
        model, pretrained = ws.model(a.model, a.pretrained)
        cfg = TagConfig(top_k=a.top_k, decision=a.decision, threshold=a.threshold, patch_source=a.patch_source,
                        concurrency=a.concurrency, calibrate=not a.no_calibrate)
        return run_tag(ws, model_id_for(model, pretrained), cfg, a.classifier_id, make_current=not a.no_current,
                       crash_after=a.crash_after, calibrate_with=a.calibrate_with)
    run(go, args)


if __name__ == "__main__":
    main()
