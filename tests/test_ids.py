"""Content ids: the bytes hashed for persisted ids never change (pinned digests)."""
from __future__ import annotations

import hashlib
import json

from tagger.ids import canonical_json, content_id, short_sha256


def test_content_id_is_sha256_of_canonical_json() -> None:
    obj = {"b": "é", "a": [1, 2.5, None]}
    assert canonical_json(obj) == '{"a":[1,2.5,null],"b":"é"}'
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert content_id(obj) == hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16] == "41a039b5a690a0e4"
    assert content_id(obj, 20).startswith(content_id(obj)) and len(content_id(obj, 20)) == 20


def test_short_sha256_hashes_text_as_utf8() -> None:
    assert short_sha256("é") == short_sha256("é".encode("utf-8")) == hashlib.sha256("é".encode()).hexdigest()[:16]
    assert len(short_sha256(b"", 10)) == 10
