"""Ray job: train the text-only classifier (and its memory banks) for the workspace's model.

    python -m jobs.train --workspace WS [--corpus-id ID]

The options are those of `tagger train` (`python -m jobs.train --help` lists them), plus `--log-level`.
"""
from jobs.common import run_verb


def main(argv: list[str] | None = None) -> None:
    run_verb("train", argv)


if __name__ == "__main__":
    main()
