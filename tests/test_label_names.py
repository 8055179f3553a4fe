"""Label names that would corrupt exports or read differently from what they are are refused on every
path that creates a label: `labels add` (names and synonyms), parents (`--parent` on add and set),
the catalog API and the text vocabulary. A refusal is one `error:` line and adds nothing."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tagger.catalog import Catalog
from tagger.cli import app
from tagger.errors import CatalogError, ConfigError
from tagger.text import Vocabulary
from tagger.text.vocab import name_problem
from tagger.workspace import Workspace

runner = CliRunner()

# (bad character, what the refusal says about it)
BAD = [
    ("\ufffe", "U+FFFE, which is not a character"),
    ("\uffff", "U+FFFF, which is not a character"),
    ("\ufdd0", "U+FDD0, which is not a character"),
    ("\U0001fffe", "U+1FFFE, which is not a character"),
    ("\u202e", "bidirectional control U+202E"),
    ("\u2066", "bidirectional control U+2066"),
    ("\u200f", "bidirectional control U+200F"),
    ("|", "'|', which photo tools read as a hierarchy level"),
    ("\x00", "control character (U+0000)"),
    ("\x1b", "control character (U+001B)"),
    ("\x85", "control character (U+0085)"),  # C1: NEL
    ("\x9b", "control character (U+009B)"),  # C1: CSI
    ("\u2028", "control character (U+2028)"),
]


@pytest.fixture
def ws(labelled_workspace) -> Path:
    return labelled_workspace(["star", "dog"])


def _labels(ws: Path) -> list[str]:
    with Catalog.open(Workspace(ws).catalog, read_only=True) as cat:
        return [lab.name for lab in cat.list_labels()]


def _refused(out, needle: str) -> None:
    assert out.exit_code == 2, out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr
    assert needle in lines[0], lines[0]


@pytest.mark.parametrize("char,needle", BAD, ids=[f"U+{ord(c):04X}" for c, _ in BAD])
def test_labels_add_refuses_the_character(ws, char, needle):
    out = runner.invoke(app, ["labels", "add", f"evil{char}name", "-w", str(ws)], catch_exceptions=False)
    _refused(out, needle)
    assert _labels(ws) == ["star", "dog"]


@pytest.mark.parametrize("args", [
    ["moon", "-s", "moon=cres\u202ecent"],                  # a synonym
    ["moon", "--parent", "sk\ufffey"],                      # a parent added as a new label
    ["moon", "--parent", "sky|night"],
], ids=["synonym", "parent-nonchar", "parent-pipe"])
def test_every_way_of_adding_a_name_refuses_it(ws, args):
    out = runner.invoke(app, ["labels", "add", *args, "-w", str(ws)], catch_exceptions=False)
    assert out.exit_code == 2 and out.stderr.startswith("error:"), out.output
    assert _labels(ws) == ["star", "dog"]  # moon was not added either


def test_labels_set_parent_refuses_it(ws):
    out = runner.invoke(app, ["labels", "set", "star", "--parent", "a|b", "-w", str(ws)], catch_exceptions=False)
    _refused(out, "'|'")
    assert _labels(ws) == ["star", "dog"]


def test_catalog_api_and_vocabulary_refuse_it(ws):
    with Catalog.open(Workspace(ws).catalog) as cat:
        with pytest.raises(CatalogError, match="U\\+202E"):
            cat.add_labels(["\u202eraw"])
        with pytest.raises(CatalogError, match="U\\+FFFE"):
            cat.add_labels(["moon"], {"moon": ["x\ufffe"]})
        assert [lab.name for lab in cat.list_labels()] == ["star", "dog"]
    with pytest.raises(ConfigError, match="'|'"):
        Vocabulary.create(["a|b"])
    with pytest.raises(ConfigError, match="U\\+FFFF"):
        Vocabulary.create(["a"], {"a": ["b\uffff"]})


def test_ordinary_names_pass(ws):
    names = ["Straße ☕ 猫", "עברית", "مرحبا", "👨\u200d👩\u200d👧", "soft\u00adhyphen", "AC/DC", "x-ray (medical)"]
    assert [name_problem(n) for n in names] == [None] * len(names)
    out = runner.invoke(app, ["labels", "add", *names, "-w", str(ws)], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert _labels(ws) == ["star", "dog", *names]
    assert Vocabulary.create(names).labels == tuple(names)


@pytest.mark.parametrize("name", [".", "..", "...", "!?", ".-."])
def test_a_name_of_punctuation_alone_is_refused(ws, name):
    """`.` and `..` cannot even be opened as a page (a browser reads them as the folder itself)."""
    out = runner.invoke(app, ["labels", "add", name, "-w", str(ws)], catch_exceptions=False)
    _refused(out, "only punctuation")
    assert _labels(ws) == ["star", "dog"]
    assert name_problem("c++") is None and name_problem("50%") is None and name_problem("☕") is None


def test_full_width_letters_are_the_same_name(ws):
    out = runner.invoke(app, ["labels", "add", "ＳＴＡＲ", "-w", str(ws)], catch_exceptions=False)
    _refused(out, "differs from the label 'star' only by case")
    with pytest.raises(ConfigError, match="duplicate labels"):
        Vocabulary.create(["star", "ＳＴＡＲ"])
