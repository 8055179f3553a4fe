"""A corpus is saved only when every label set has its sentence (or the shortfall is within the
tolerance, recorded and reported); a failed run saves nothing and its rerun requests only the
label sets still missing. Corpora made with another count, seed or generator are not reused.

Runs the driver and the CLI with the real ``openai`` client against the local test server.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from llm_server import LLMServer, labels_from_prompt, outage_action, partial_outage, serve
from typer.testing import CliRunner

from tagger.catalog import Catalog
from tagger.cli import app
from tagger.errors import IncompleteCorpusError
from tagger.text import LLMConfig, TextCorpus, sample_label_sets
from tagger.text.background import background_nouns
from tagger.pipeline.text import run_generate_text
from tagger.toyworld import LABEL_SYNONYMS, LABELS
from tagger.workspace import Workspace

LLM_ENV = ("TAGGER_LLM_MODEL", "OPENAI_BASE_URL", "OPENAI_API_KEY")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LLMServer]:
    for name in LLM_ENV:  # runs without an explicit LLM config use the offline generator
        monkeypatch.delenv(name, raising=False)
    yield from serve()


def corpus_sets(n: int) -> list[tuple[str, ...]]:
    """The label sets of the first ``n`` sentences of a corpus of the toy labels: drawn over the labels
    and the vocabulary's background nouns."""
    return sample_label_sets([*LABELS, *background_nouns(LABELS, LABEL_SYNONYMS, 0)], n, 0)


def workspace(root: Path, labels: list[str] | tuple[str, ...] = LABELS) -> Workspace:
    ws = Workspace.at(root / "ws")
    add_labels(ws, labels)
    return ws


def add_labels(ws: Workspace, labels: list[str] | tuple[str, ...]) -> None:
    with Catalog.open(ws.catalog) as cat:
        cat.add_labels(list(labels), {n: list(LABEL_SYNONYMS[n]) for n in labels})


def llm(server: LLMServer, model: str = "test-model") -> LLMConfig:
    return LLMConfig(model=model, base_url=server.base_url, api_key="test-key", timeout_s=5.0,
                     max_retries=1, backoff_base_s=0.001, backoff_max_s=0.005, concurrency=4,
                     validation_attempts=2)


def failing(label_sets: list[tuple[str, ...]], share_500: float, share_bad: float) -> list[tuple[str, ...]]:
    return [s for s in label_sets if outage_action(s, share_500, share_bad) != "ok"]


def asked_since(server: LLMServer, start: int) -> list[tuple[str, ...]]:
    """The label sets requested after the first ``start`` requests, sorted (order-free)."""
    return sorted(tuple(sorted(labels_from_prompt(p))) for p in server.prompts[start:])


def sorted_sets(sets: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    return sorted(tuple(sorted(s)) for s in sets)


def recorded(ws: Workspace) -> list[dict]:
    with Catalog.open(ws.catalog) as cat:
        return cat.corpora()


@pytest.mark.parametrize("share_500,share_bad", [(0.5, 0.0), (0.0, 0.5), (0.25, 0.25)])
def test_partial_outage_fails_then_a_rerun_requests_only_the_missing(
        server: LLMServer, tmp_path: Path, share_500: float, share_bad: float) -> None:
    ws = workspace(tmp_path)
    lost = failing(corpus_sets(100), share_500, share_bad)
    assert 35 <= len(lost) <= 65
    server.default = partial_outage(share_500, share_bad)
    with pytest.raises(IncompleteCorpusError, match=f"{len(lost)} of 100 label sets") as err:
        run_generate_text(ws, 100, 0, llm_config=llm(server))
    assert (err.value.missing, err.value.allowed) == (len(lost), 0)
    assert recorded(ws) == [] and not list((ws.root / "text").glob("*/corpus.json"))

    server.default = "ok"
    start = server.requests
    out = run_generate_text(ws, 100, 0, llm_config=llm(server))
    assert asked_since(server, start) == sorted_sets(lost)
    assert out["corpus"] == "built" and out["missing_label_sets"] == 0
    assert out["stats"]["kept"] == 100 and out["stats"]["generator"]["cache_hits"] == 100 - len(lost)
    corpus = TextCorpus.load(ws.text_dir(out["corpus_id"]))
    assert corpus.sources.count("generated") == 100
    assert corpus.config["shortfall"] == {"missing": 0, "label_sets": 100}

    start = server.requests
    again = run_generate_text(ws, 100, 0, llm_config=llm(server))
    assert server.requests == start and again["corpus"] == "reused" and again["corpus_id"] == out["corpus_id"]


def test_a_tolerated_shortfall_is_recorded_reported_and_filled_in_later(
        server: LLMServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ws = workspace(tmp_path)
    lost = failing(corpus_sets(100), 0.1, 0.05)
    assert 5 <= len(lost) <= 25
    server.default = partial_outage(0.1, 0.05)
    with caplog.at_level(logging.WARNING, logger="tagger"):
        out = run_generate_text(ws, 100, 0, llm_config=llm(server), max_missing=0.3)
    assert out["missing_label_sets"] == len(lost) and out["stats"]["kept"] == 100 - len(lost)
    short = {"missing": len(lost), "label_sets": 100, "allowed": 30}
    assert TextCorpus.load(ws.text_dir(out["corpus_id"])).config["shortfall"] == short
    assert [c["config"]["shortfall"] for c in recorded(ws)] == [short]
    assert f"lacks sentences for {len(lost)} label sets" in caplog.text

    # the same shortfall allowed as a count; a stricter rerun retries only the missing sets and fails
    assert run_generate_text(ws, 100, 0, llm_config=llm(server), max_missing=len(lost))["corpus"] == "repaired"
    start = server.requests
    with pytest.raises(IncompleteCorpusError):
        run_generate_text(ws, 100, 0, llm_config=llm(server))
    assert set(asked_since(server, start)) == set(sorted_sets(lost))

    server.default = "ok"
    start = server.requests
    fixed = run_generate_text(ws, 100, 0, llm_config=llm(server))
    assert asked_since(server, start) == sorted_sets(lost)
    assert fixed["corpus"] == "repaired" and fixed["missing_label_sets"] == 0
    assert fixed["corpus_id"] != out["corpus_id"] and fixed["stats"]["kept"] == 100
    assert run_generate_text(ws, 100, 0, llm_config=llm(server))["corpus"] == "reused"


def test_count_seed_and_generator_are_not_ignored(server: LLMServer, tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    base = run_generate_text(ws, 40, 0)
    more, reseeded = run_generate_text(ws, 50, 0), run_generate_text(ws, 40, 1)
    by_llm = run_generate_text(ws, 40, 0, llm_config=llm(server))
    assert server.requests == 40
    other_model = run_generate_text(ws, 40, 0, llm_config=llm(server, "other-model"))
    assert server.requests == 80
    made = [base, more, reseeded, by_llm, other_model]
    assert len({r["corpus_id"] for r in made}) == 5 and {r["corpus"] for r in made} == {"built"}
    assert [r["stats"]["kept"] for r in made] == [40, 50, 40, 40, 40]
    assert TextCorpus.load(ws.text_dir(reseeded["corpus_id"])).config["seed"] == 1
    # going back to earlier settings finds their corpus again, without a request
    assert run_generate_text(ws, 40, 0)["corpus_id"] == base["corpus_id"]
    again = run_generate_text(ws, 40, 0, llm_config=llm(server))
    assert again["corpus"] == "reused" and again["corpus_id"] == by_llm["corpus_id"] and server.requests == 80


def test_an_extension_with_a_partial_outage_fails_then_is_filled_in(server: LLMServer, tmp_path: Path) -> None:
    first, later = list(LABELS[:10]), list(LABELS[10:13])
    ws = workspace(tmp_path, first)
    prev = run_generate_text(ws, 100, 0, llm_config=llm(server))
    add_labels(ws, later)
    server.default = partial_outage(0.5)
    start = server.requests
    with pytest.raises(IncompleteCorpusError) as err:
        run_generate_text(ws, 100, 0, llm_config=llm(server))
    asked = [tuple(labels_from_prompt(p)) for p in server.prompts[start:]]
    lost = sorted(set(failing(asked, 0.5, 0.0)))
    assert err.value.missing >= len(lost) > 0 and [c["corpus_id"] for c in recorded(ws)] == [prev["corpus_id"]]

    server.default = "ok"
    start = server.requests
    out = run_generate_text(ws, 100, 0, llm_config=llm(server))
    assert server.requests - start == err.value.missing and set(asked_since(server, start)) == set(sorted_sets(lost))
    assert out["corpus"] == "extended" and out["missing_label_sets"] == 0
    assert out["stats"]["new_sentences"] == out["stats"]["new_label_sets"]
    extended = TextCorpus.load(ws.text_dir(out["corpus_id"]))
    assert extended.config["extends"] == prev["corpus_id"] and extended.config["n_sentences"] == 100


def test_cli_fails_with_one_line_then_accepts_a_tolerance_and_repairs(server: LLMServer, tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    lost = failing(corpus_sets(40), 0.0, 0.5)
    server.default = partial_outage(0.0, 0.5)  # malformed replies only: no backoff to wait for
    env = {"OPENAI_BASE_URL": server.base_url, "TAGGER_LLM_MODEL": "test-model", "OPENAI_API_KEY": "k"}
    cmd = ["generate-text", "-w", str(ws.root), "--n-sentences", "40", "--json"]
    runner = CliRunner()
    bad = runner.invoke(app, cmd, env=env)
    assert bad.exit_code == 2
    error = [line for line in bad.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and f"{len(lost)} of 40 label sets have no sentence" in error[0], bad.output
    assert "rerun" in error[0] and recorded(ws) == []
    assert runner.invoke(app, [*cmd, "--max-missing", "2.5"], env=env).exit_code == 2  # neither fraction nor count

    ok = runner.invoke(app, [*cmd, "--max-missing", "0.9"], env=env)
    assert ok.exit_code == 0, ok.output
    summary = json.loads(ok.output.strip().splitlines()[-1])
    assert summary["missing_label_sets"] == len(lost)
    server.default = "ok"
    start = server.requests
    fixed = json.loads(runner.invoke(app, cmd, env=env).output.strip().splitlines()[-1])
    assert fixed["corpus"] == "repaired" and fixed["missing_label_sets"] == 0
    assert asked_since(server, start) == sorted_sets(lost)


def test_job_entry_point_takes_the_tolerance(server: LLMServer, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from jobs.generate_text import main

    ws = workspace(tmp_path)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("TAGGER_LLM_MODEL", "test-model")
    server.default = partial_outage(0.0, 0.5)
    args = ["--workspace", str(ws.root), "--n-sentences", "30", "--log-level", "ERROR"]
    with pytest.raises(SystemExit) as ended:
        main(args)
    assert ended.value.code == 2 and "error: corpus incomplete" in capsys.readouterr().err
    main([*args, "--max-missing", "25"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["missing_label_sets"] == len(failing(corpus_sets(30), 0.0, 0.5))
