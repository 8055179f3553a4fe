"""Ray job: register a source's images, encode new or changed ones into shards, update the FAISS stores.

    python -m jobs.encode --workspace WS --source /data/images --model ViT-B-32 --pretrained laion2b_s34b_b79k

The options are those of `tagger encode` (`python -m jobs.encode --help` lists them), plus `--log-level`.
"""
from jobs.common import run_verb


def main(argv: list[str] | None = None) -> None:
    run_verb("encode", argv)


if __name__ == "__main__":
    main()
