"""Ray job: generate the text corpus for the active labels (an OpenAI-compatible LLM, or offline).

    OPENAI_BASE_URL=http://vllm:8000/v1 TAGGER_LLM_MODEL=qwen2.5-7b python -m jobs.generate_text --workspace WS

The options are those of `tagger generate-text` (`python -m jobs.generate_text --help` lists them), plus `--log-level`.
"""
from jobs.common import run_verb


def main(argv: list[str] | None = None) -> None:
    run_verb("generate-text", argv)


if __name__ == "__main__":
    main()
