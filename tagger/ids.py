"""Content ids: short sha256 hex digests of canonical JSON or of given text, stable across runs.

Ids that are persisted (corpus ids, classifier ids, cache keys) must keep hashing the exact bytes
they always did: :func:`content_id` for values first hashed as canonical JSON, :func:`short_sha256`
for ids whose text was serialised some other way. This module imports nothing of the package.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

logger = logging.getLogger(__name__)


def canonical_json(obj: Any) -> str:
    """``obj`` as compact JSON with sorted keys, non-ASCII kept: the text content ids hash."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def short_sha256(data: str | bytes, n: int = 16) -> str:
    """The first ``n`` hex digits of the sha256 of ``data`` (a str is hashed as UTF-8)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()[:n]


def content_id(obj: Any, n: int = 16) -> str:
    """Id of a JSON-able value: :func:`short_sha256` of its :func:`canonical_json`."""
    return short_sha256(canonical_json(obj), n)
