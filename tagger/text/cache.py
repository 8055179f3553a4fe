"""A persistent, append-only JSONL cache of generated sentences.

Entries are keyed by (sorted label set, prompt version, model). A key holds a list of sentences
in the order they were generated, so a corpus that samples the same label set several times
gets distinct sentences (the i-th occurrence uses the i-th cached sentence). Every append is
flushed and fsynced, so an interrupted run loses at most the line being written; a torn last
line is skipped on load.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

CACHE_FILE = "llm_sentences.jsonl"


def cache_key(labels: Sequence[str], prompt_version: str, model: str) -> str:
    """Stable key of a label set (order-free) for one prompt version and model."""
    return json.dumps([sorted(labels), prompt_version, model], ensure_ascii=False)


class SentenceCache:
    """Sentences per key, loaded from and appended to ``<directory>/llm_sentences.jsonl``.

    One process should write a cache file at a time.
    """

    def __init__(self, directory: str | Path, fsync: bool = True) -> None:
        self.path = Path(directory) / CACHE_FILE
        self.fsync = fsync
        self._entries: dict[str, list[str]] = {}
        self._fh = None
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        bad = 0
        with self.path.open("r", encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                    key = cache_key(rec["labels"], rec["prompt_version"], rec["model"])
                    self._entries.setdefault(key, []).append(str(rec["sentence"]))
                except (ValueError, KeyError, TypeError):
                    bad += 1
        if bad:
            logger.warning("skipped %d unreadable line(s) in %s", bad, self.path)

    def __len__(self) -> int:
        return sum(len(v) for v in self._entries.values())

    def get(self, labels: Sequence[str], prompt_version: str, model: str) -> list[str]:
        """All cached sentences for the label set (a copy, in generation order)."""
        return list(self._entries.get(cache_key(labels, prompt_version, model), ()))

    def add(self, labels: Sequence[str], prompt_version: str, model: str, sentence: str) -> None:
        """Record one sentence durably."""
        rec = {"labels": sorted(labels), "prompt_version": prompt_version, "model": model,
               "sentence": sentence}
        fh = self._open()
        fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        fh.flush()
        if self.fsync:
            os.fsync(fh.fileno())
        self._entries.setdefault(cache_key(labels, prompt_version, model), []).append(sentence)

    def _open(self):  # noqa: ANN202 - a text file handle
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torn = False
            if self.path.exists() and self.path.stat().st_size > 0:
                with self.path.open("rb") as fh:
                    fh.seek(-1, os.SEEK_END)
                    torn = fh.read(1) != b"\n"
            self._fh = self.path.open("a", encoding="utf-8")
            if torn:  # an interrupted write left a partial line: start on a fresh one
                self._fh.write("\n")
        return self._fh

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "SentenceCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
