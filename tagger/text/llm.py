"""Sentence generation with an OpenAI-compatible chat-completions endpoint (the CoMC prompt).

Requests run with bounded concurrency. Transport failures (429, 5xx, 408/409, timeouts,
connection errors) are retried here with exponential backoff and jitter; the ``openai``
client's own retries are off so this behaviour is explicit and testable. Replies that do not
mention every label (or that are empty or malformed) are regenerated up to
``validation_attempts`` times, then the label set is dropped. Valid sentences go to a
persistent :class:`~tagger.text.cache.SentenceCache` as soon as they arrive.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from ..errors import ConfigError, TextGenerationError
from .base import GenerationResult, GenerationStats
from .cache import SentenceCache, cache_key
from .vocab import Vocabulary

logger = logging.getLogger(__name__)

PROMPTS: dict[str, str] = {
    "v1": "Please make a brief sentence to describe a photo that contains {labels}.",
}
_RETRYABLE_STATUS = {408, 409, 429}


def make_prompt(labels: Sequence[str], prompt_version: str = "v1") -> str:
    """The user message for a label set (labels joined by ``", "`` in the given order)."""
    try:
        template = PROMPTS[prompt_version]
    except KeyError as e:
        raise ConfigError(f"unknown prompt version {prompt_version!r}") from e
    return template.format(labels=", ".join(labels))


@dataclass(frozen=True)
class LLMConfig:
    """Endpoint, sampling, concurrency and retry settings of the LLM generator."""

    model: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    temperature: float = 1.0
    max_tokens: int = 40
    concurrency: int = 8
    max_retries: int = 5
    timeout_s: float = 30.0
    prompt_version: str = "v1"
    validation_attempts: int = 3
    backoff_base_s: float = 0.5
    backoff_max_s: float = 20.0
    abort_after_failures: int = 20

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("LLMConfig.model is empty")
        for name in ("max_tokens", "concurrency", "validation_attempts", "abort_after_failures"):
            if getattr(self, name) < 1:
                raise ConfigError(f"LLMConfig.{name} must be >= 1")
        if self.max_retries < 0 or self.timeout_s <= 0 or self.backoff_base_s < 0:
            raise ConfigError("LLMConfig: max_retries >= 0, timeout_s > 0, backoff_base_s >= 0")
        make_prompt(["x"], self.prompt_version)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "LLMConfig | None":
        """Config from ``TAGGER_LLM_MODEL``, ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``.

        Optional: ``TAGGER_LLM_TEMPERATURE``, ``TAGGER_LLM_CONCURRENCY``. Returns ``None``
        unless a model and at least one of base URL / API key are set.
        """
        env = os.environ if environ is None else environ
        model = env.get("TAGGER_LLM_MODEL", "").strip()
        base_url = env.get("OPENAI_BASE_URL", "").strip() or None
        api_key = env.get("OPENAI_API_KEY", "").strip() or None
        if not model or not (base_url or api_key):
            return None
        kw: dict[str, Any] = {"model": model, "base_url": base_url, "api_key": api_key}
        try:
            if env.get("TAGGER_LLM_TEMPERATURE"):
                kw["temperature"] = float(env["TAGGER_LLM_TEMPERATURE"])
            if env.get("TAGGER_LLM_CONCURRENCY"):
                kw["concurrency"] = int(env["TAGGER_LLM_CONCURRENCY"])
        except ValueError as e:
            raise ConfigError(f"bad LLM setting in the environment: {e}") from e
        kw.update(overrides)
        return cls(**kw)

    def identity(self) -> dict[str, Any]:
        """What determines the sentences (no endpoint address, no key)."""
        return {"kind": "llm", "model": self.model, "prompt_version": self.prompt_version,
                "temperature": self.temperature, "max_tokens": self.max_tokens}


def backoff_delay(retry: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: ``min(cap, base * 2**retry)`` scaled by U[0.5, 1)."""
    return min(cap_s, base_s * (2.0 ** retry)) * (0.5 + 0.5 * rng.random())


def clean_reply(text: str) -> str:
    """First non-empty line of a reply, without wrapping quotes and extra whitespace."""
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    line = re.sub(r"\s+", " ", line).strip().strip("\"'“”").strip()
    return line


def reply_text(response: Any) -> str | None:
    """The cleaned assistant text of a completion, or ``None`` if it is missing or empty."""
    choices = getattr(response, "choices", None)
    if not choices:
        return None
    content = getattr(getattr(choices[0], "message", None), "content", None)
    if not isinstance(content, str):
        return None
    return clean_reply(content) or None


class _TransportFailure(Exception):
    """Retries exhausted on retryable transport errors."""


@dataclass
class _RunState:
    stats: GenerationStats = field(default_factory=GenerationStats)
    consecutive_failures: int = 0


class LLMGenerator:
    """CoMC sentence generator over an OpenAI-compatible endpoint, with a persistent cache."""

    def __init__(self, config: LLMConfig, vocab: Vocabulary, cache_dir: str | Path | None = None,
                 seed: int = 0) -> None:
        self.config = config
        self.vocab = vocab
        self.cache = SentenceCache(cache_dir) if cache_dir is not None else None
        self._rng = random.Random(seed)
        self.last_stats = GenerationStats()

    def identity(self) -> dict[str, Any]:
        return self.config.identity()

    def generate(self, label_sets: Sequence[Sequence[str]]) -> list[str | None]:
        """Sentences aligned with ``label_sets``; ``None`` where dropped (see :attr:`last_stats`)."""
        return self.run(label_sets).sentences

    def run(self, label_sets: Sequence[Sequence[str]]) -> GenerationResult:
        """Synchronous :meth:`arun`; works from inside a running event loop too."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.arun(label_sets))
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self.arun(label_sets)).result()

    async def arun(self, label_sets: Sequence[Sequence[str]]) -> GenerationResult:
        """Generate (or fetch from the cache) one sentence per label set."""
        state = _RunState()
        out: list[str | None] = [None] * len(label_sets)
        pending = self._fill_from_cache(label_sets, out, state.stats)
        if pending:
            await self._generate_pending(label_sets, pending, out, state)
        self.last_stats = state.stats
        logger.info("LLM generation: %s", state.stats.to_dict())
        return GenerationResult(out, state.stats)

    def _fill_from_cache(self, label_sets: Sequence[Sequence[str]], out: list[str | None],
                         stats: GenerationStats) -> list[int]:
        """Fill cached sentences (i-th occurrence of a set -> i-th entry); return indices to generate."""
        if self.cache is None:
            return list(range(len(label_sets)))
        cfg = self.config
        seen: dict[str, int] = {}
        hits: dict[str, list[str]] = {}
        pending = []
        for i, labs in enumerate(label_sets):
            key = cache_key(labs, cfg.prompt_version, cfg.model)
            if key not in hits:
                hits[key] = self.cache.get(labs, cfg.prompt_version, cfg.model)
            j = seen.get(key, 0)
            seen[key] = j + 1
            if j < len(hits[key]):
                out[i] = hits[key][j]
                stats.cache_hits += 1
            else:
                pending.append(i)
        return pending

    async def _generate_pending(self, label_sets: Sequence[Sequence[str]], pending: list[int],
                                out: list[str | None], state: _RunState) -> None:
        cfg = self.config
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in pending:
            queue.put_nowait(i)
        client = openai.AsyncOpenAI(base_url=cfg.base_url, api_key=cfg.api_key or "EMPTY",
                                    max_retries=0, timeout=cfg.timeout_s)

        every = max(1, len(pending) // 20)
        done = 0

        async def worker() -> None:
            nonlocal done
            while not queue.empty():
                i = queue.get_nowait()
                labs = list(label_sets[i])
                out[i] = sentence = await self._generate_one(client, labs, state)
                if sentence is not None and self.cache is not None:
                    self.cache.add(labs, cfg.prompt_version, cfg.model, sentence)
                done += 1
                if done % every == 0:
                    logger.info("LLM generation %d/%d: %s", done, len(pending), state.stats.to_dict())

        tasks = [asyncio.create_task(worker()) for _ in range(min(cfg.concurrency, len(pending)))]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            await client.close()

    async def _generate_one(self, client: openai.AsyncOpenAI, labels: list[str],
                            state: _RunState) -> str | None:
        """A validated sentence for one label set, or ``None`` once attempts run out."""
        stats = state.stats
        prompt = make_prompt(labels, self.config.prompt_version)
        for _ in range(self.config.validation_attempts):
            try:
                text = await self._request(client, prompt, stats)
            except _TransportFailure as e:
                stats.failed += 1
                stats.dropped += 1
                state.consecutive_failures += 1
                logger.warning("dropping %s after %d retries: %s", labels, self.config.max_retries, e)
                if state.consecutive_failures >= self.config.abort_after_failures:
                    raise TextGenerationError(
                        f"{state.consecutive_failures} label sets in a row failed at the endpoint "
                        f"{self.config.base_url or 'default'}; last error: {e}") from e
                return None
            state.consecutive_failures = 0
            if text is not None and self.vocab.mentions_all(text, labels):
                stats.generated += 1
                return text
            stats.invalid += 1
            logger.debug("invalid reply for %s: %r", labels, text)
        stats.dropped += 1
        return None

    async def _request(self, client: openai.AsyncOpenAI, prompt: str,
                       stats: GenerationStats) -> str | None:
        """One completion with transport retries; ``None`` for a malformed or empty reply."""
        cfg = self.config
        err: Exception | None = None
        for retry in range(cfg.max_retries + 1):
            if retry:
                stats.retries += 1
                await asyncio.sleep(self._delay(retry - 1, err))
            stats.requests += 1
            try:
                resp = await client.chat.completions.create(
                    model=cfg.model, messages=[{"role": "user", "content": prompt}],
                    temperature=cfg.temperature, max_tokens=cfg.max_tokens)
            except openai.APIStatusError as e:
                if e.status_code not in _RETRYABLE_STATUS and e.status_code < 500:
                    raise TextGenerationError(
                        f"the endpoint refused the request (HTTP {e.status_code}): {e.message}") from e
                err = e
            except openai.APIConnectionError as e:  # timeouts included
                err = e
            except (openai.APIResponseValidationError, ValueError) as e:
                logger.debug("malformed reply: %s", e)
                return None
            else:
                return reply_text(resp)
        raise _TransportFailure(f"{type(err).__name__}: {err}")

    def _delay(self, retry: int, err: Exception | None) -> float:
        cfg = self.config
        delay = backoff_delay(retry, cfg.backoff_base_s, cfg.backoff_max_s, self._rng)
        if isinstance(err, openai.APIStatusError):
            after = err.response.headers.get("retry-after")
            try:
                delay = max(delay, min(cfg.backoff_max_s, float(after))) if after else delay
            except ValueError:
                pass
        return delay

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
