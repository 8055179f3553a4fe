"""Generate the text corpus for the active labels (LLM via an OpenAI-compatible endpoint, or offline).

    OPENAI_BASE_URL=http://vllm:8000/v1 TAGGER_LLM_MODEL=qwen2.5-7b python -m jobs.generate_text --workspace WS
"""
from __future__ import annotations

from jobs.common import parser, run
from tagger.pipeline.text import run_generate_text


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--n-sentences", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-missing", type=float, default=0.0,
                   help="label sets allowed without a sentence: a fraction below 1, or a count")
    args = p.parse_args(argv)
    run(lambda a, ws: run_generate_text(ws, a.n_sentences, a.seed, max_missing=a.max_missing), args)


if __name__ == "__main__":
    main()
