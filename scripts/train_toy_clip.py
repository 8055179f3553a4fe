"""Train a tiny toy-world CLIP model and write its weights into tagger/models/weights/.

    python scripts/train_toy_clip.py --model toy-vit --steps 2000 --threads 1
    python scripts/train_toy_clip.py --model toy-rn --steps 1200 --threads 1

(the shipped weights: both ran at once, one thread each, in 37 and 41 minutes on 2 cores)
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
    p.add_argument("--out-dir", type=Path, default=None)
    a = vars(p.parse_args())
    out = a.pop("out_dir")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    manifest = train_clip(ClipTrainConfig(**a), out)
    print(json.dumps({"model": manifest["model"], "final": manifest["history"][-1],
                      "train_seconds": manifest["train_seconds"]}))


if __name__ == "__main__":
    main()
