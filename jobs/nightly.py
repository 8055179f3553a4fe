"""Ray job: nightly re-tag (encode new images, follow label changes, retrain, re-tag everything, switch).

    python -m jobs.nightly --workspace WS --source /data/images [--keep-runs 5]

The options are those of `tagger nightly` (`python -m jobs.nightly --help` lists them), plus `--log-level`.
"""
from jobs.common import run_verb


def main(argv: list[str] | None = None) -> None:
    run_verb("nightly", argv)


if __name__ == "__main__":
    main()
