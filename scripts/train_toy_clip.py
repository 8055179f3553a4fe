"""Train one stage of a tiny toy-world CLIP model and write its weights.

Stages: ``labels`` (the image tower on the labels its captions mention, optionally distilling a
trained teacher tower) and ``contrastive`` (the whole model, from stage 1 via ``--init-from``).
``scripts/train_toy_models.sh`` runs the shipped recipe for both models (the README gives its
time and machine). A command killed part-way resumes from its checkpoint when run again;
``--device cuda`` trains on a GPU and still writes CPU fp16 weights.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from tagger.toyworld.clip_train import ClipTrainConfig, train_clip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(ClipTrainConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    p.add_argument("--out-dir", type=Path, default=None, help="where weights go (default: the shipped weights)")
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="default: the output folder")
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "tagger" / "toy-scenes",
                   help="rendered scenes are kept here")
    a = vars(p.parse_args())
    out, ckpt, cache = a.pop("out_dir"), a.pop("checkpoint_dir"), a.pop("cache_dir")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    manifest = train_clip(ClipTrainConfig(**a), out, ckpt, cache)
    print(json.dumps({"model": manifest["model"], "final": manifest["history"][-1],
                      "train_seconds": manifest["train_seconds"]}))


if __name__ == "__main__":
    main()
