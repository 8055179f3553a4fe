"""The LLM generator with the real ``openai`` client against the scriptable local server."""
from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from llm_server import LLMServer, labels_from_prompt, serve

from tagger.errors import TextGenerationError
from tagger.text import (
    LLMConfig, LLMGenerator, SentenceCache, Vocabulary, backoff_delay, build_corpus,
    label_matrix, make_prompt, sample_label_sets,
)
from tagger.toyworld import LABEL_SYNONYMS, LABELS

VOCAB = Vocabulary.create(LABELS, LABEL_SYNONYMS)
PAIR = [("star", "moon")]


@pytest.fixture
def server() -> Iterator[LLMServer]:
    yield from serve()


def make_gen(server: LLMServer, cache_dir: Path | None = None, **kw) -> LLMGenerator:  # noqa: ANN003
    cfg = dict(model="test-model", base_url=server.base_url, api_key="test-key", timeout_s=2.0,
               backoff_base_s=0.01, backoff_max_s=0.05, concurrency=4, max_retries=3)
    cfg.update(kw)
    return LLMGenerator(LLMConfig(**cfg), VOCAB, cache_dir=cache_dir)


def test_normal_replies_and_prompt(server: LLMServer) -> None:
    sets = sample_label_sets(LABELS, 10, seed=0)
    res = make_gen(server).run(sets)
    assert all(s is not None and VOCAB.mentions_all(s, labs) for s, labs in zip(res.sentences, sets))
    assert res.stats.requests == server.requests == 10 and res.stats.generated == 10
    assert res.stats.retries == res.stats.invalid == res.stats.dropped == 0
    expected = {f"Please make a brief sentence to describe a photo that contains {', '.join(s)}." for s in sets}
    assert set(server.prompts) == expected
    body = server.bodies[0]
    assert body["model"] == "test-model" and body["max_tokens"] == 40
    assert labels_from_prompt(make_prompt(["a b", "c"])) == ["a b", "c"]


@pytest.mark.parametrize("failures", [("429", "429"), ("500",), ("503", "500", "429")])
def test_retry_on_status_then_success(server: LLMServer, failures: tuple[str, ...]) -> None:
    server.script(*failures)
    gen = make_gen(server)
    assert gen.generate(PAIR) == ["A photo showing a star and a moon together."]
    n = len(failures)
    assert server.requests == n + 1
    assert gen.last_stats.retries == n and gen.last_stats.requests == n + 1
    assert gen.last_stats.dropped == 0


def test_timeout_is_retried(server: LLMServer) -> None:
    server.script("slow")
    gen = make_gen(server, timeout_s=0.3)
    t0 = time.monotonic()
    out = gen.generate(PAIR)
    assert out[0] is not None and VOCAB.mentions_all(out[0], PAIR[0])
    assert gen.last_stats.retries == 1 and server.requests == 2
    assert time.monotonic() - t0 < server.slow_s


def test_connection_error_is_retried_then_dropped() -> None:
    gen = LLMGenerator(LLMConfig(model="m", base_url="http://127.0.0.1:1/v1", api_key="k",
                                 max_retries=2, backoff_base_s=0.01, timeout_s=1.0), VOCAB)
    res = gen.run(PAIR)
    assert res.sentences == [None]
    assert res.stats.requests == 3 and res.stats.retries == 2
    assert res.stats.failed == 1 and res.stats.dropped == 1


def test_retries_exhausted_drops_the_label_set(server: LLMServer) -> None:
    server.default = "500"
    gen = make_gen(server, max_retries=2)
    res = gen.run(PAIR)
    assert res.sentences == [None]
    assert server.requests == 3 and res.stats.failed == 1 and res.stats.dropped == 1


def test_persistent_failure_aborts(server: LLMServer) -> None:
    server.default = "500"
    gen = make_gen(server, max_retries=0, abort_after_failures=3, concurrency=1)
    with pytest.raises(TextGenerationError, match="in a row"):
        gen.generate(sample_label_sets(LABELS, 10, seed=1))
    assert server.requests == 3


def test_non_retryable_status_raises(server: LLMServer) -> None:
    server.script("401")
    with pytest.raises(TextGenerationError, match="401"):
        make_gen(server).generate(PAIR)
    assert server.requests == 1


def test_malformed_replies_are_regenerated(server: LLMServer) -> None:
    server.script("bad_json", "empty", "no_choices")
    gen = make_gen(server, validation_attempts=4)
    out = gen.generate(PAIR)
    assert out[0] is not None and VOCAB.mentions_all(out[0], PAIR[0])
    assert gen.last_stats.invalid == 3 and gen.last_stats.retries == 0 and server.requests == 4


def test_malformed_replies_until_dropped(server: LLMServer) -> None:
    server.script("bad_json", "empty", "no_choices")
    gen = make_gen(server, validation_attempts=3)
    assert gen.generate(PAIR) == [None]
    assert gen.last_stats.invalid == 3 and gen.last_stats.dropped == 1 and gen.last_stats.failed == 0


def test_missing_label_is_regenerated(server: LLMServer) -> None:
    server.script("missing_label")
    gen = make_gen(server)
    out = gen.generate(PAIR)
    assert out[0] is not None and VOCAB.mentions_all(out[0], PAIR[0])
    assert gen.last_stats.invalid == 1 and server.requests == 2


def test_missing_label_always_is_dropped(server: LLMServer) -> None:
    server.default = lambda labels: "missing_label" if "star" in labels else "ok"
    sets = [("star", "moon"), ("tree",), ("moon", "key"), ("key", "star", "fish")]
    gen = make_gen(server, validation_attempts=2)
    out = gen.generate(sets)
    assert out[0] is None and out[3] is None
    assert out[1] is not None and out[2] is not None
    assert gen.last_stats.invalid == 4 and gen.last_stats.dropped == 2 and server.requests == 6


def test_concurrency_is_bounded(server: LLMServer) -> None:
    server.default = "delay"
    server.delay_s = 0.15
    gen = make_gen(server, concurrency=3)
    out = gen.generate(sample_label_sets(LABELS, 12, seed=2))
    assert all(s is not None for s in out)
    assert server.max_in_flight == 3


def test_cache_second_run_makes_no_requests(server: LLMServer, tmp_path: Path) -> None:
    sets = sample_label_sets(LABELS, 8, seed=3) + [("star",), ("star",)]
    first = make_gen(server, tmp_path).run(sets)
    assert server.requests == 10 and first.stats.cache_hits == 0
    again = make_gen(server, tmp_path).run([tuple(reversed(s)) for s in sets])
    assert server.requests == 10
    assert again.stats.cache_hits == 10 and again.stats.requests == 0
    assert sorted(again.sentences) == sorted(first.sentences)
    # a third occurrence of a cached set needs one new request; another model misses the cache
    n_star = sets.count(("star",))
    res = make_gen(server, tmp_path).run([("star",)] * (n_star + 1))
    assert server.requests == 11 and res.stats.cache_hits == n_star
    make_gen(server, tmp_path, model="other-model").run(sets[:2])
    assert server.requests == 13


def test_dropped_sentences_are_not_cached(server: LLMServer, tmp_path: Path) -> None:
    server.default = "missing_label"
    assert make_gen(server, tmp_path, validation_attempts=1).generate(PAIR) == [None]
    server.default = "ok"
    assert make_gen(server, tmp_path).generate(PAIR)[0] is not None
    assert server.requests == 2


def test_cache_survives_a_torn_line(tmp_path: Path) -> None:
    with SentenceCache(tmp_path) as cache:
        cache.add(["b", "a"], "v1", "m", "An a and a b.")
    with (tmp_path / "llm_sentences.jsonl").open("a") as fh:
        fh.write('{"labels": ["c"], "prompt_v')  # an interrupted write
    cache = SentenceCache(tmp_path)
    assert cache.get(["a", "b"], "v1", "m") == ["An a and a b."] and len(cache) == 1
    cache.add(["c"], "v1", "m", "A c.")
    cache.close()
    lines = (tmp_path / "llm_sentences.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["sentence"] == "A c."
    assert len(SentenceCache(tmp_path)) == 2


def test_build_corpus_with_llm_drops_invalid(server: LLMServer, tmp_path: Path) -> None:
    server.default = lambda labels: "missing_label" if "star" in labels else "ok"
    gen = make_gen(server, tmp_path, validation_attempts=1)
    corpus = build_corpus(LABELS, LABEL_SYNONYMS, 30, gen, seed=5, include_templates=False, max_missing=0.9)
    sets = sample_label_sets(LABELS, 30, seed=5)
    kept = [s for s in sets if "star" not in s]
    assert 0 < len(kept) < 30 and len(corpus) == len(kept)
    assert corpus.config["shortfall"] == {"missing": 30 - len(kept), "label_sets": 30, "allowed": 27}
    np.testing.assert_array_equal(corpus.label_matrix.toarray(), label_matrix(kept, LABELS).toarray())
    assert corpus.stats["dropped"] == 30 - len(kept)
    assert corpus.stats["generator"]["invalid"] == 30 - len(kept)
    assert corpus.config["generator"] == {"kind": "llm", "model": "test-model", "prompt_version": "v1",
                                          "temperature": 1.0, "max_tokens": 40}


def test_run_inside_an_event_loop(server: LLMServer) -> None:
    async def main() -> list[str | None]:
        return make_gen(server).generate(PAIR)

    assert asyncio.run(main())[0] is not None


def test_backoff_delay_grows_with_jitter_and_cap() -> None:
    rng = random.Random(0)
    for retry in range(8):
        d = [backoff_delay(retry, 0.1, 2.0, rng) for _ in range(50)]
        top = min(2.0, 0.1 * 2 ** retry)
        assert all(top * 0.5 <= x <= top for x in d)
        assert len(set(d)) > 1
