"""Train the text-only classifier (and memory banks) for the workspace's model.

    python -m jobs.train --workspace WS [--corpus-id ID]
"""
from __future__ import annotations

from jobs.common import add_model_args, parser, run
from tagger.pipeline.text import run_train


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    add_model_args(p)
    p.add_argument("--corpus-id", default=None, help="default: the newest corpus")
    args = p.parse_args(argv)

    def go(a, ws):
        model, pretrained = ws.model(a.model, a.pretrained)
        return run_train(ws, model, pretrained, a.corpus_id)
    run(go, args)


if __name__ == "__main__":
    main()
