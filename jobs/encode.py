"""Encode a source's new or changed images into embedding shards and FAISS stores.

    python -m jobs.encode --workspace WS --source /data/images --model ViT-B-32 --pretrained laion2b_s34b_b79k
"""
from __future__ import annotations

import argparse

from jobs.common import add_model_args, finite_float, parser, run
from tagger.pipeline.encode import EncodeConfig, run_encode


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    add_model_args(p)
    p.add_argument("--source", default=None, help="folder, glob, .txt or .parquet manifest of URIs")
    p.add_argument("--partition-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=1, help="encoder actors")
    p.add_argument("--decode-concurrency", type=int, default=1)
    p.add_argument("--encode-cpus", type=finite_float, default=EncodeConfig.encode_cpus,
                   help="Ray CPUs reserved per CPU encoder actor (e.g. 0.75 to fit 2 encoders and a decoder on 2 cores)")
    p.add_argument("--decode-cpus", type=finite_float, default=EncodeConfig.decode_cpus,
                   help="Ray CPUs per decode actor")
    p.add_argument("--num-gpus", type=finite_float, default=None, help="GPUs per encoder actor (default: 1 if any)")
    p.add_argument("--crash-after", type=int, default=None, help=argparse.SUPPRESS)  # crash tests
    args = p.parse_args(argv)

    def go(a, ws):
        model, pretrained = ws.model(a.model, a.pretrained)
        ws.update_settings(model=model, pretrained=pretrained)
        cfg = EncodeConfig(model=model, pretrained=pretrained, partition_size=a.partition_size,
                           batch_size=a.batch_size, concurrency=a.concurrency,
                           decode_concurrency=a.decode_concurrency, num_gpus=a.num_gpus,
                           encode_cpus=a.encode_cpus, decode_cpus=a.decode_cpus)
        return run_encode(ws, a.source, cfg, crash_after=a.crash_after, progress=True)
    run(go, args)


if __name__ == "__main__":
    main()
