"""Ray job: tag every encoded image from its stored embeddings into a new run and make it current.

    python -m jobs.tag --workspace WS [--top-k 5] [--decision anchored|mixture|standardized] [--calibrate-with FILE]

The options are those of `tagger tag` (`python -m jobs.tag --help` lists them), plus `--log-level`.
"""
from jobs.common import run_verb


def main(argv: list[str] | None = None) -> None:
    run_verb("tag", argv)


if __name__ == "__main__":
    main()
