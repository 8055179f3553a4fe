"""A nightly's text step asks the LLM only about new labels: counted at the local OpenAI-compatible
test server, with the LLM configured through the environment as the nightly job reads it."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from llm_server import LLMServer, labels_from_prompt, serve

from tagger.catalog import Catalog
from tagger.pipeline.text import run_generate_text
from tagger.toyworld import LABEL_SYNONYMS, LABELS
from tagger.workspace import Workspace

FIRST, LATER = list(LABELS[:10]), list(LABELS[10:13])


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LLMServer]:
    for srv in serve():
        monkeypatch.setenv("TAGGER_LLM_MODEL", "test-model")
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        yield srv


def add(ws: Workspace, names: list[str]) -> None:
    with Catalog.open(ws.catalog) as cat:
        cat.add_labels(names, {n: list(LABEL_SYNONYMS[n]) for n in names})


def test_nightly_text_asks_only_about_new_labels(server: LLMServer, tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path / "ws")
    add(ws, FIRST)
    first = run_generate_text(ws, 120, 0)  # what the nightly calls: the LLM comes from the environment
    assert first["corpus"] == "built" and server.requests == 120

    add(ws, LATER)
    start = server.requests
    grown = run_generate_text(ws, 120, 0)
    asked = [labels_from_prompt(p) for p in server.prompts[start:]]
    assert grown["corpus"] == "extended" and server.requests - start == grown["stats"]["new_label_sets"] > 0
    assert all(set(a) & set(LATER) for a in asked)  # every request names a new label
    assert {lab for a in asked for lab in a if lab in LATER} == set(LATER)
    # as many requests per new label as the first corpus had per label, not a new corpus' worth
    assert server.requests - start < 120

    start = server.requests
    again = run_generate_text(ws, 120, 0)
    assert again["corpus"] == "reused" and server.requests == start

    with Catalog.open(ws.catalog) as cat:
        cat.retire_labels([FIRST[0]])
    retired = run_generate_text(ws, 120, 0)
    assert retired["corpus"] == "extended" and server.requests == start
    assert retired["stats"]["retired_labels"] == [FIRST[0]]
