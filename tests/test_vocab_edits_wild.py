"""Vocabulary edits as people make them: adding and removing one synonym, synonyms that collide with
another label's name or synonym, renames, case and whitespace, names with no word, parents that
clash or are retired. A bad edit is one `error:` line, exit status 2, and the workspace unchanged; a
good one says what it changed (replaced synonyms, a pin kept on a retrained label, when the tags
follow), and edits that change nothing for the text side retrain nothing."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tagger.catalog import Catalog
from tagger.cli import app
from tagger.errors import CatalogError
from tagger.text import Vocabulary
from tagger.text.incremental import _with_named, synonyms_changed
from tagger.text.vocab import same_term, term_clashes, terms_inside
from tagger.toyworld import LABEL_SYNONYMS, LABELS
from tagger.workspace import Workspace

runner = CliRunner()


@pytest.fixture
def ws(labelled_workspace) -> Path:
    """A workspace holding the toy vocabulary (circle: disc, dot, round shape; ring: hoop, donut...)."""
    return labelled_workspace(LABELS, {k: list(v) for k, v in LABEL_SYNONYMS.items()})


def invoke(ws: Path, *args: str):
    return runner.invoke(app, [*args, "-w", str(ws)], catch_exceptions=False)


def state(ws: Path) -> tuple:
    """Everything a labels verb may change: labels, synonyms, status, pins, parents."""
    with Catalog.open(Workspace(ws).catalog, read_only=True) as cat:
        labels = [(lab.name, lab.synonyms, lab.active, lab.threshold) for lab in cat.list_labels()]
        return labels, cat.label_parents()


def synonyms(ws: Path, name: str) -> list[str]:
    with Catalog.open(Workspace(ws).catalog, read_only=True) as cat:
        return next(lab.synonyms for lab in cat.list_labels() if lab.name == name)


# -- synonyms: add one, remove one, replace -----------------------------------------------------
def test_replacing_synonyms_says_what_was_replaced(ws):
    out = invoke(ws, "labels", "add", "circle", "-s", "circle=orb")
    assert out.exit_code == 0, out.output
    assert "circle: synonyms disc, dot, round shape -> orb" in out.stdout
    assert synonyms(ws, "circle") == ["orb"]


def test_set_adds_and_removes_one_synonym_keeping_the_others(ws):
    out = invoke(ws, "labels", "set", "circle", "--synonym", "orb")
    assert out.exit_code == 0, out.output
    assert synonyms(ws, "circle") == ["disc", "dot", "round shape", "orb"]
    assert "circle: synonyms disc, dot, round shape -> disc, dot, round shape, orb" in out.stdout
    out = invoke(ws, "labels", "set", "circle", "--no-synonym", "DOT")  # matched as the validator reads it
    assert out.exit_code == 0, out.output
    assert synonyms(ws, "circle") == ["disc", "round shape", "orb"]
    out = invoke(ws, "labels", "set", "circle", "--synonym", "orbs")  # a plural of one it has: no change
    assert out.exit_code == 0 and "synonyms unchanged" in out.stdout
    assert synonyms(ws, "circle") == ["disc", "round shape", "orb"]


def test_a_name_holding_equals_signs_gets_its_synonyms(ws):
    out = invoke(ws, "labels", "add", "e=mc2", "a=b", "a", "-s", "e=mc2=mass energy", "-s", "a=b=c=equation",
                 "-s", "a=letter a")
    assert out.exit_code == 0, out.output
    assert synonyms(ws, "e=mc2") == ["mass energy"]
    assert synonyms(ws, "a=b") == ["c=equation"]  # split after the longest label being added
    assert synonyms(ws, "a") == ["letter a"]
    out = invoke(ws, "labels", "add", "x=y", "-s", "x=z")
    assert out.exit_code == 2 and "not being added: 'x'" in out.output


def test_repeated_synonyms_and_the_labels_own_name_are_dropped(ws):
    out = invoke(ws, "labels", "add", "circle", "-s", "circle=Circle", "-s", "circle=circles", "-s", "circle=dot",
                 "-s", "circle=Dots", "-s", "circle=disc")
    assert out.exit_code == 0, out.output
    assert synonyms(ws, "circle") == ["dot", "disc"]


def test_a_pinned_label_whose_synonyms_change_says_the_pin_stays(ws):
    assert invoke(ws, "labels", "set", "circle", "--threshold", "1.1").exit_code == 0
    out = invoke(ws, "labels", "set", "circle", "--synonym", "orb")
    assert out.exit_code == 0, out.output
    assert "threshold stays pinned at 1.1" in out.stdout and "--clear" in out.stdout


# -- bad edits: one error line, nothing changed ----------------------------------------------------
@pytest.mark.parametrize("args, needle", [
    (["add", "circle", "-s", "circle=ring"], "synonym 'ring' of 'circle' is the label 'ring'"),
    (["add", "circle", "-s", "circle=RING"], "names the same thing as the label 'ring'"),
    (["add", "ring", "-s", "ring=disc"], "synonym 'disc' of 'ring' is the synonym 'disc' of 'circle'"),
    (["add", "disc"], "label 'disc' is the synonym 'disc' of 'circle'"),
    (["add", "Disc"], "label 'Disc' names the same thing as the synonym 'disc' of 'circle'"),
    (["add", "new", "-s", "new=round-shape"], "the synonym 'round shape' of 'circle'"),
    (["add", "lightning-bolt"], "the label 'lightning bolt'"),
    (["add", "Lightning_Bolt"], "the label 'lightning bolt'"),
    (["add", "circle\u200d"], "the label 'circle'"),
    (["set", "circle", "--synonym", "hoop"], "is the synonym 'hoop' of 'ring'"),
    (["set", "circle", "--threshold", "1", "--synonym", "ring"], "is the label 'ring'"),
    (["set", "circle", "--parent", "shape", "--no-synonym", "nothere"], "has no synonym(s) ['nothere']"),
    (["set", "circle", "--threshold", "1", "--no-parent", "nothere"], "has no parent(s) ['nothere']"),
    (["add", "kid", "--parent", "plus"], "label 'plus' is the synonym 'plus' of 'cross'"),
    (["set", "square", "--parent", "plus"], "label 'plus' is the synonym 'plus' of 'cross'"),
    (["add", "--", "--"], "has no word"),
    (["add", "x", "-s", "x= - "], "synonym '-' has no word"),
    (["add", "Circle"], "differs from the label 'circle' only by case"),
    (["retire", "Circle"], "names are case-sensitive: 'Circle' is 'circle'"),
    (["set", "Circle", "--threshold", "1"], "names are case-sensitive: use 'circle'"),
])
def test_bad_edits_are_one_error_line_and_change_nothing(ws, args, needle):
    before = state(ws)
    out = invoke(ws, "labels", *args)
    assert out.exit_code == 2, out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], out.stderr
    assert "Traceback" not in out.output
    assert state(ws) == before


def test_a_clash_says_how_to_move_the_synonym_and_moving_it_works(ws):
    out = invoke(ws, "labels", "add", "disc")
    assert "`tagger labels set 'circle' --no-synonym 'disc'`" in out.stderr
    assert invoke(ws, "labels", "set", "circle", "--no-synonym", "disc").exit_code == 0
    assert invoke(ws, "labels", "add", "disc").exit_code == 0
    assert synonyms(ws, "circle") == ["dot", "round shape"]


def test_a_retired_label_whose_synonym_became_a_label_is_not_reactivated_silently(ws):
    assert invoke(ws, "labels", "retire", "circle").exit_code == 0
    assert invoke(ws, "labels", "add", "disc").exit_code == 0  # circle is retired: its synonyms are free
    before = state(ws)
    out = invoke(ws, "labels", "add", "circle")
    assert out.exit_code == 2 and "synonym 'disc' of 'circle' is the label 'disc'" in out.stderr
    assert "--no-synonym 'disc'" in out.stderr and state(ws) == before
    out = invoke(ws, "labels", "add", "Circle")  # a case rename of a retired label
    assert out.exit_code == 2 and "the retired label 'circle'" in out.stderr


def test_the_catalog_refuses_clashes_when_strict_and_warns_otherwise(ws, caplog):
    with Catalog.open(Workspace(ws).catalog) as cat:
        with pytest.raises(CatalogError, match="is the synonym 'hoop' of 'ring'"):
            cat.add_labels(["hoop"], strict=True)
        assert "hoop" not in [lab.name for lab in cat.list_labels()]
        with caplog.at_level("WARNING", logger="tagger.catalog.vocab"):
            cat.add_labels(["hoop"])  # a script's list: added, the clash logged
        assert "hoop" in [lab.name for lab in cat.list_labels()]
        assert "is the synonym 'hoop' of 'ring'" in caplog.text
        with pytest.raises(CatalogError, match="is the label 'star'"):
            cat.edit_synonyms("moon", add=["star"])
        before, after = cat.edit_synonyms("moon", add=["luna"], dry_run=True)
        assert after == [*before, "luna"] and "luna" not in cat.list_labels()[9].synonyms


# -- allowed with a warning, and substrings ---------------------------------------------------------
def test_a_singular_and_its_plural_may_be_two_labels_with_a_warning(ws):
    out = invoke(ws, "labels", "add", "glass", "glasses")
    assert out.exit_code == 0, out.output
    warnings = [x for x in out.stderr.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1 and "'glass'" in warnings[0] and "'glasses'" in warnings[0]


def test_a_label_inside_another_word_or_a_non_ascii_name_is_no_clash(ws):
    out = invoke(ws, "labels", "add", "earring", "Straße", "猫", "hot air balloon")
    assert out.exit_code == 0 and "warning" not in out.stderr, out.output
    assert not same_term("ring", "earring") and same_term("Straße", "STRASSE") is False


def test_a_name_inside_other_labels_names_is_warned_of_with_the_parent_to_set(ws):
    out = invoke(ws, "labels", "add", "shape")  # inside round / three-sided / six-sided / five-sided shape
    assert out.exit_code == 0, out.output
    warnings = [x for x in out.stderr.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 4 and all("the label 'shape' lies inside" in w for w in warnings)
    assert any("'round shape' (a synonym of 'circle')" in w and "--parent 'shape'" in w for w in warnings)
    for child in ("circle", "triangle", "hexagon"):  # the hierarchy says it: no warning for those
        assert invoke(ws, "labels", "set", child, "--parent", "shape").exit_code == 0
    out = invoke(ws, "labels", "set", "shape", "--synonym", "form")
    warnings = [x for x in out.stderr.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1 and "'five-sided shape' (a synonym of 'pentagon')" in warnings[0], out.stderr
    out = invoke(ws, "labels", "add", "palm tree", "tree house")  # the other way: existing labels inside new
    assert "the label 'tree' lies inside the label 'palm tree'" in out.stderr
    assert "the label 'house' lies inside the label 'tree house'" in out.stderr
    assert "the label 'tree' lies inside the label 'tree house'" in out.stderr
    assert invoke(ws, "labels", "add", "earring").stderr == ""  # inside a word is not inside a name


def test_terms_inside_finds_plurals_and_ignores_the_same_label_and_same_terms():
    terms = {"leaf": [], "tea leaves": ["loose tea"], "tree": ["pine tree"], "pine": [], "glass": [],
             "glasses": []}
    found = {(t.label, t.term, t.outer, t.outer_term) for t in terms_inside(terms)}
    assert found == {("leaf", "leaf", "tea leaves", "tea leaves"), ("pine", "pine", "tree", "pine tree")}
    assert terms_inside(terms, ["glass"]) == []  # a plural is a clash (term_clashes), not a containment
    assert terms_inside(terms, ["tree"], {"tree": ["pine"]}) == []  # pine is tree's ancestor: expected


# -- retire, rename, list -------------------------------------------------------------------------
def test_retiring_a_parent_names_its_children_and_the_list_marks_it(ws):
    assert invoke(ws, "labels", "add", "shape", "--parent", "thing").exit_code == 0
    assert invoke(ws, "labels", "set", "circle", "--parent", "shape").exit_code == 0
    out = invoke(ws, "labels", "retire", "shape", "shape")
    assert out.exit_code == 0 and "retired 1 label(s); 21 active" in out.stdout  # thing was added
    assert "shape: was a parent of circle" in out.stdout
    out = invoke(ws, "labels", "retire", "shape")
    assert "retired 0 label(s) (1 already retired)" in out.stdout
    table = invoke(ws, "labels", "list").stdout
    assert "shape (retired)" in table
    rows = json.loads(invoke(ws, "labels", "list", "--json").stdout)
    assert next(r for r in rows if r["name"] == "circle")["parents"] == ["shape"]  # JSON keeps plain names


def test_rename_by_retire_and_add_takes_the_synonyms_along(ws):
    assert invoke(ws, "labels", "retire", "circle").exit_code == 0
    out = invoke(ws, "labels", "add", "round thing", "-s", "round thing=disc", "-s", "round thing=dot")
    assert out.exit_code == 0, out.output
    assert synonyms(ws, "round thing") == ["disc", "dot"]
    out = invoke(ws, "labels", "add", "circle", "-s", "circle=round shape")  # back, without the moved synonyms
    assert out.exit_code == 0 and "circle: re-activated; synonyms round shape" in out.stdout


def test_whitespace_around_names_is_the_same_label(ws):
    out = invoke(ws, "labels", "add", " circle ", "-s", " circle = orb ")
    assert out.exit_code == 0, out.output
    assert "added 0 label(s) (1 already active)" in out.stdout and synonyms(ws, "circle") == ["orb"]
    assert "circle: synonyms disc, dot, round shape -> orb" in out.stdout


def test_a_huge_pin_reads_as_a_number_in_the_table(ws):
    assert invoke(ws, "labels", "set", "circle", "--threshold", "1e300").exit_code == 0
    table = invoke(ws, "labels", "list").stdout
    assert "1e+300" in table and "0000000000" not in table


# -- what the nightly sees ------------------------------------------------------------------------
def test_reordering_synonyms_is_no_change_for_the_nightly():
    config = {"vocab": Vocabulary.create(["circle"], {"circle": ["disc", "dot"]}).to_dict()}
    assert synonyms_changed(config, Vocabulary.create(["circle"], {"circle": ["dot", "disc"]})) == []
    assert synonyms_changed(config, Vocabulary.create(["circle"], {"circle": ["dot"]})) == ["circle"]


def test_reordering_synonyms_says_nothing_to_retrain(ws):
    out = invoke(ws, "labels", "add", "circle", "-s", "circle=round shape", "-s", "circle=dot", "-s", "circle=disc")
    assert out.exit_code == 0 and "synonyms reordered" in out.stdout and "nothing to retrain" in out.stdout


def test_kept_sentences_naming_a_hyphenated_added_label_join_it():
    vocab = Vocabulary.create(["shirt", "t-shirt"])
    sets = _with_named(vocab, ["a red t shirt", "a blue tshirt", "a shirt"], [("shirt",)] * 3, ["t-shirt"])
    assert sets == [("shirt", "t-shirt"), ("shirt", "t-shirt"), ("shirt",)]


def test_clashes_of_a_large_vocabulary_are_found_quickly():
    terms = {f"label{i:05d}": [f"syn{i:05d}a", f"syn{i:05d}b"] for i in range(10_000)}
    terms["label00042"] = ["syn00043a"]  # shared with label00043
    t0 = time.perf_counter()
    found = term_clashes(terms)
    assert time.perf_counter() - t0 < 10
    assert {(c.label, c.other) for c in found} == {("label00042", "label00043"), ("label00043", "label00042")}
    assert all(c.exact for c in found)
    assert not term_clashes({k: list(v) for k, v in LABEL_SYNONYMS.items()})  # the toy world has none


# -- tagging with a classifier that predates the label edits says so ------------------------------
def test_tag_says_when_the_classifier_is_behind_the_label_edits():
    from tagger.pipeline.tag import vocabulary_behind
    assert vocabulary_behind(["circle", "star"], ["circle", "star"]) is None
    assert vocabulary_behind(["circle", "star"], ["star", "circle"]) is None  # order is no edit
    msg = vocabulary_behind(["circle", "star"], ["circle", "giraffe"])
    assert msg is not None and "added since (giraffe)" in msg and "retired label(s) (star)" in msg
    assert "tagger nightly" in msg
    many = vocabulary_behind([], [f"l{i}" for i in range(8)])
    assert many is not None and "8 label(s)" in many and "l4, ..." in many and "l5" not in many


def test_a_clash_between_parts_of_one_command_is_refused_before_anything_is_written(ws):
    before = state(ws)
    out = invoke(ws, "labels", "add", "dog", "-s", "dog=hound", "--parent", "hound")
    assert out.exit_code == 2 and "hound" in out.stderr and state(ws) == before
    assert invoke(ws, "labels", "add", "dog").exit_code == 0
    before = state(ws)
    out = invoke(ws, "labels", "set", "dog", "--parent", "hound", "--synonym", "hound")
    assert out.exit_code == 2 and "hound" in out.stderr and state(ws) == before


def test_a_term_inside_another_at_punctuation_is_found():
    """The validator finds ``dot`` in a sentence about ``dot.ted`` and ``star`` in one about ``star!``
    (punctuation is no letter), so the containment check looks there too; ``stardust`` holds no ``star``."""
    terms = {"circle": ["dot"], "star": [], "dot.ted": [], "star!": [], "stardust": [], "C#": [], "c": ["(c)"]}
    found = {(t.term, t.outer_term) for t in terms_inside(terms)}
    assert found == {("dot", "dot.ted"), ("star", "star!"), ("c", "C#")}  # c's own "(c)" is its own


def test_the_error_line_keeps_a_names_own_spaces(ws):
    """`palm  tree` (two spaces) against `palm tree` read "'palm tree' ... as the label 'palm tree'": the
    one-line error squeezed every run of spaces, the names' too."""
    before = state(ws)
    out = invoke(ws, "labels", "add", "palm  tree", "palm tree")
    assert out.exit_code == 2 and out.stderr.count("\n") == 1
    assert "'palm  tree'" in out.stderr and "'palm tree'" in out.stderr
    assert state(ws) == before


def test_a_synonym_not_added_says_why(ws):
    before = state(ws)
    out = invoke(ws, "labels", "set", "star", "--synonym", "stars")
    assert out.exit_code == 0, out.output
    assert "synonyms unchanged" in out.stdout and "'stars' is a form of the name 'star'" in " ".join(out.stdout.split())
    assert state(ws) == before
    have = LABEL_SYNONYMS["circle"][0]
    out = invoke(ws, "labels", "set", "circle", "--synonym", have)
    assert f"'{have}' is already one" in " ".join(out.stdout.split())
