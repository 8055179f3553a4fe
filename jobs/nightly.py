"""Nightly re-tag: encode new images, follow label changes, retrain, re-tag everything, switch.

    python -m jobs.nightly --workspace WS --source /data/images [--keep-runs 5]
"""
from __future__ import annotations

from jobs.common import add_decision_args, add_model_args, finite_float, parser, run
from tagger.pipeline.encode import EncodeConfig
from tagger.pipeline.nightly import CRASH_POINTS, NightlyConfig, run_nightly
from tagger.pipeline.tag import TagConfig


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    add_model_args(p)
    p.add_argument("--source", default=None, help="folder, glob or manifest to pick up new images from")
    p.add_argument("--n-sentences", type=int, default=NightlyConfig.n_sentences)
    p.add_argument("--keep-runs", type=int, default=NightlyConfig.keep_runs)
    p.add_argument("--max-missing", type=finite_float, default=NightlyConfig.max_missing,
                   help="label sets allowed without a sentence: a fraction below 1, or a count")
    p.add_argument("--partition-size", type=int, default=256)
    add_decision_args(p)
    p.add_argument("--crash-at", choices=CRASH_POINTS, default=None,
                   help="testing: die inside a long stage (STAGE:mid) or right after a stage")
    args = p.parse_args(argv)

    def go(a, ws):
        model, pretrained = ws.model(a.model, a.pretrained)
        enc = EncodeConfig(model=model, pretrained=pretrained, partition_size=a.partition_size, num_gpus=None)
        cfg = NightlyConfig(n_sentences=a.n_sentences, keep_runs=a.keep_runs, max_missing=a.max_missing,
                            tag=TagConfig(decision=a.decision))
        return run_nightly(ws, a.source, enc, cfg, crash_at=a.crash_at, calibrate_with=a.calibrate_with)
    run(go, args)


if __name__ == "__main__":
    main()
