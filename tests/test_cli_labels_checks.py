"""Label names are checked before they reach the catalog: no case-only duplicates (`Star`,
`star`), no newlines or tabs, at most MAX_LABEL_LENGTH characters; a refusal adds nothing."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tagger.catalog import Catalog
from tagger.catalog.vocab import MAX_LABEL_LENGTH
from tagger.cli import app
from tagger.errors import ConfigError
from tagger.text import Vocabulary
from tagger.workspace import Workspace

runner = CliRunner()


@pytest.fixture
def ws(labelled_workspace) -> Path:
    return labelled_workspace(["Star", "dog"])


def labels(ws: Path) -> list[str]:
    with Catalog.open(Workspace(ws).catalog, read_only=True) as cat:
        return [lab.name for lab in cat.list_labels()]


@pytest.mark.parametrize("args, needle", [
    (["star"], "'star' differs from the label 'Star' only by case"),
    (["cat", "CAT"], "'CAT' differs from the label 'cat' only by case"),
    (["new\nline"], "control character"),
    (["tab\there"], "control character"),
    (["x" * 5000], f"5000 characters long; at most {MAX_LABEL_LENGTH}"),
    (["y" * (MAX_LABEL_LENGTH + 1)], "characters long"),
    (["cat", "-s", "cat=kit\ty"], "synonym 'kit\\ty' holds a control character"),
])
def test_bad_labels_are_refused_and_nothing_is_added(ws, args, needle):
    out = runner.invoke(app, ["labels", "add", *args, "-w", str(ws)], catch_exceptions=False)
    assert out.exit_code == 2, out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], out.stderr
    assert labels(ws) == ["Star", "dog"]


def test_good_labels_still_pass(ws):
    names = ["Star", " dog ", "z" * MAX_LABEL_LENGTH, "Straße ☕ 猫"]
    out = runner.invoke(app, ["labels", "add", *names, "-w", str(ws)], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert labels(ws) == ["Star", "dog", "z" * MAX_LABEL_LENGTH, "Straße ☕ 猫"]


def test_vocabulary_refuses_case_duplicates_and_control_characters():
    with pytest.raises(ConfigError, match="differ only by case"):
        Vocabulary.create(["Star", "star"])
    with pytest.raises(ConfigError, match="'a' twice"):
        Vocabulary.create(["a", "a"])
    with pytest.raises(ConfigError, match="newline or tab"):
        Vocabulary.create(["a\nb"])
    assert Vocabulary.create(["Star", "dog"]).labels == ("Star", "dog")


def test_labels_add_counts_only_what_it_added(ws):
    out = runner.invoke(app, ["labels", "add", " dog ", "cat", "-w", str(ws)], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert "added 1 label(s) (1 already active); 3 active" in out.stdout


def test_editing_a_retired_label_says_it_is_retired(ws):
    """`labels set` on a retired label changed it and printed nothing: it says the label is retired and
    how to bring it back."""
    assert runner.invoke(app, ["labels", "retire", "dog", "-w", str(ws)]).exit_code == 0
    out = runner.invoke(app, ["labels", "set", "dog", "--synonym", "hound", "-w", str(ws)], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert "dog: the label is retired" in out.stdout and "tagger labels add dog" in out.stdout, out.stdout
    with Catalog.open(Workspace(ws).catalog, read_only=True) as cat:
        assert "hound" in next(lab for lab in cat.list_labels(include_retired=True) if lab.name == "dog").synonyms
