"""Label hierarchies: the propagation math, the catalog's links (cycles refused, retiring a parent),
the `labels` commands, the ancestors view, the corpus targets, the nightly diff, and a real tag run
(local Ray) where a parent is positive only because of its child."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tagger.catalog import Catalog
from tagger.cli import app
from tagger.errors import CatalogError, ConfigError
from tagger.method.hierarchy import (
    Hierarchy, active_parents, cycle_with, expand_label_matrix, find_cycle, hierarchy_key, hierarchy_refits,
    propagate, regrouped,
)
from tagger.pipeline.tag import TagConfig, tag_rows, write_parquet_atomic
from tagger.text import OfflineGenerator, Vocabulary, build_corpus
from tagger.text.incremental import update_corpus
from tagger.toyworld import LABEL_SYNONYMS
from tagger.workspace import Workspace

runner = CliRunner()
LABELS = ["car", "vehicle", "thing", "dog", "animal"]
PARENTS = {"car": ["vehicle"], "vehicle": ["thing"], "dog": ["animal"], "animal": ["thing"]}


def col(name: str) -> int:
    return LABELS.index(name)


# -- the pure math ----------------------------------------------------------------------------------
def test_a_positive_child_makes_its_parent_and_grandparent_positive():
    scores = np.zeros((3, 5), np.float32)
    positive = np.zeros((3, 5), bool)
    positive[0, col("car")] = True
    positive[1, col("dog")] = True
    s, p, c = propagate(LABELS, PARENTS, scores, positive)
    assert c is None
    assert p[0].tolist() == [True, True, True, False, False]  # car -> vehicle -> thing
    assert p[1].tolist() == [False, False, True, True, True]  # dog -> animal -> thing
    assert not p[2].any()
    assert not positive[0, col("vehicle")]  # the input is not modified


def test_scores_and_confidences_become_the_max_over_descendants():
    scores = np.array([[3.0, 1.0, 5.0, -2.0, -1.0]], np.float32)
    conf = np.array([[0.9, 0.2, 0.1, 0.3, 0.4]], np.float32)
    s, p, c = propagate(LABELS, PARENTS, scores, np.zeros_like(scores, bool), conf)
    # vehicle: max(1, car 3); thing keeps its own 5; animal: max(-1, dog -2)
    assert s[0].tolist() == [3.0, 3.0, 5.0, -2.0, -1.0]
    assert c[0].tolist() == pytest.approx([0.9, 0.9, 0.9, 0.3, 0.4])
    assert not p.any()  # nothing positive in, nothing positive out


def test_several_parents_are_all_raised():
    labels, parents = ["car", "vehicle", "machine", "toy"], {"car": ["vehicle", "machine"]}
    s, p, _ = propagate(labels, parents, np.array([[2.0, 0.0, 1.0, 9.0]]), np.array([[True, False, False, False]]))
    assert p[0].tolist() == [True, True, True, False] and s[0].tolist() == [2.0, 2.0, 2.0, 9.0]


def test_retired_labels_neither_are_raised_nor_raise_but_keep_the_chain():
    scores = np.array([[4.0, 0.0, 0.0, 7.0, 0.0]], np.float32)
    positive = np.array([[True, False, False, True, False]])
    # vehicle retired: car still raises thing (through it), vehicle itself is left as it was
    s, p, _ = propagate(LABELS, PARENTS, scores, positive, active=["car", "thing", "dog", "animal"])
    assert p[0].tolist() == [True, False, True, True, True]
    assert s[0, col("vehicle")] == 0.0 and s[0, col("thing")] == 7.0
    # dog retired: a positive dog raises nothing
    s, p, _ = propagate(LABELS, PARENTS, scores, positive, active=["car", "vehicle", "thing", "animal"])
    assert p[0].tolist() == [True, True, True, True, False] and s[0, col("animal")] == 0.0
    assert active_parents(PARENTS, ["car", "thing", "dog"]) == {"car": ("thing",), "dog": ("thing",)}


def test_a_parent_outside_the_columns_still_links_its_descendants_and_ancestors():
    labels = ["car", "thing"]  # vehicle has no column (e.g. added after the classifier was trained)
    s, p, _ = propagate(labels, PARENTS, np.array([[2.0, 0.0]]), np.array([[True, False]]))
    assert p[0].tolist() == [True, True] and s[0].tolist() == [2.0, 2.0]


def _reference(labels, parents, values):
    """Column-by-column max over each label's ancestors, the slow obvious way."""
    out = values.copy()
    index = {n: j for j, n in enumerate(labels)}
    for j, name in enumerate(labels):
        seen, todo = set(), list(parents.get(name, ()))
        while todo:
            a = todo.pop()
            if a not in seen:
                seen.add(a)
                todo.extend(parents.get(a, ()))
        for a in seen:
            out[:, index[a]] = np.maximum(out[:, index[a]], values[:, j])
    return out


def test_ten_thousand_labels_propagate_as_the_reference_says():
    rng = np.random.default_rng(0)
    labels = [f"label{i}" for i in range(10_000)]
    parents = {labels[i]: [labels[j] for j in set(rng.integers(0, i, size=rng.integers(1, 3)).tolist())]
               for i in range(1, 10_000) if rng.random() < 0.9}
    h = Hierarchy.build(labels, parents)
    scores = rng.normal(size=(64, 10_000)).astype(np.float32)
    s, p, c = h.propagate(scores, scores > 2.5, scores)
    expected = _reference(labels, parents, scores)
    assert np.array_equal(s, expected) and np.array_equal(c, expected)
    assert np.array_equal(p, _reference(labels, parents, scores > 2.5))
    assert p.sum() > (scores > 2.5).sum()


def test_cycles_are_found_and_refused():
    assert find_cycle(PARENTS) is None
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert cycle_with(PARENTS, "thing", "car") == ["thing", "car", "vehicle", "thing"]
    assert cycle_with(PARENTS, "car", "car") == ["car", "car"]
    assert cycle_with(PARENTS, "car", "animal") is None
    with pytest.raises(ConfigError, match="cycle: a -> b -> a"):
        Hierarchy.build(["a", "b"], {"a": ["b"], "b": ["a"]})


def test_the_hierarchy_key_follows_the_links_not_their_order():
    assert hierarchy_key({}) is None and hierarchy_key({"a": []}) is None
    assert hierarchy_key({"a": ["b", "c"]}) == hierarchy_key({"a": ["c", "b", "b"]})
    assert hierarchy_key({"a": ["b"]}) != hierarchy_key({"a": ["c"]})


def test_expand_label_matrix_sets_ancestors():
    m = np.eye(5, dtype=np.uint8)
    out = expand_label_matrix(m, LABELS, PARENTS)
    assert out.dtype == np.uint8
    assert out[col("car")].tolist() == [1, 1, 1, 0, 0]
    assert out[col("thing")].tolist() == [0, 0, 1, 0, 0]
    assert out[col("dog")].tolist() == [0, 0, 1, 1, 1]


# -- the catalog --------------------------------------------------------------------------------------
@pytest.fixture
def cat(tmp_path):
    with Catalog.open(tmp_path / "catalog.duckdb") as c:
        c.add_labels(["car", "dog"])
        yield c


def test_add_with_parents_creates_the_parents(cat):
    assert cat.add_parents("car", ["vehicle", "machine"]) == 2
    assert cat.add_parents("car", "vehicle") == 0  # already linked
    cat.add_parents("vehicle", "thing")
    assert cat.active_labels() == ["car", "dog", "vehicle", "machine", "thing"]
    assert cat.label_parents() == {"car": ["machine", "vehicle"], "vehicle": ["thing"]}
    assert cat.active_hierarchy() == {"car": ("machine", "vehicle"), "vehicle": ("thing",)}
    with pytest.raises(CatalogError, match="unknown label"):
        cat.add_parents("cat", "animal")


@pytest.mark.parametrize("child, parent, text", [
    ("car", "car", "label hierarchy: a label cannot be its own parent: car -> car"),
    ("vehicle", "car", "'car' as a parent of 'vehicle' would close a cycle: vehicle -> car -> vehicle"),
    ("thing", "car", "'car' as a parent of 'thing' would close a cycle: thing -> car -> vehicle -> thing"),
])
def test_cycles_are_refused_and_nothing_changes(cat, child, parent, text):
    cat.add_parents("car", "vehicle")
    cat.add_parents("vehicle", "thing")
    before = (cat.label_parents(), cat.active_labels())
    with pytest.raises(CatalogError) as err:
        cat.add_parents(child, parent)
    assert text in str(err.value) and "\n" not in str(err.value)
    assert (cat.label_parents(), cat.active_labels()) == before


def test_retiring_a_parent_keeps_its_children(cat):
    cat.add_parents("car", "vehicle")
    cat.add_parents("vehicle", "thing")
    assert cat.retire_labels(["vehicle"]) == 1
    assert cat.active_labels() == ["car", "dog", "thing"]
    assert cat.label_parents() == {"car": ["vehicle"], "vehicle": ["thing"]}  # links kept
    assert cat.active_hierarchy() == {"car": ("thing",)}  # vehicle bypassed
    assert cat.remove_parents("car", ["vehicle"]) == 1
    with pytest.raises(CatalogError, match="has no parent"):
        cat.remove_parents("car", ["vehicle"])
    assert cat.active_hierarchy() == {}


def test_the_view_lists_tags_with_their_active_ancestors(cat):
    cat.add_parents("car", "vehicle")
    cat.add_parents("vehicle", "thing")
    cat.add_parents("dog", ["animal", "pet"])
    cat.add_parents("animal", "thing")
    cat.retire_labels(["pet"])
    labels = cat.active_labels()  # car dog vehicle thing animal
    ids = cat.register_images(["/img/a.png", "/img/b.png"])
    scores = np.full((2, len(labels)), -1.0, np.float32)
    scores[0, labels.index("car")] = 2.0
    scores[1, labels.index("dog")] = 2.0
    table = tag_rows(ids, scores, labels, TagConfig(top_k=1, decision="standardized", threshold=1.5),
                     hierarchy=Hierarchy.build(labels, cat.active_hierarchy()))
    path = Path(cat.path).parent / "tags.parquet"
    write_parquet_atomic(table, path)
    run = cat.start_run("tag", labels=labels)
    cat.load_tags(run, [path])
    cat.set_current(run)
    rows = cat.query("SELECT uri, label, positive, score, ancestors FROM current_tags_with_ancestors "
                     "WHERE positive ORDER BY uri, label")
    assert rows == [
        ("/img/a.png", "car", True, 2.0, ["vehicle", "thing"]),
        ("/img/a.png", "thing", True, 2.0, []),
        ("/img/a.png", "vehicle", True, 2.0, ["thing"]),
        ("/img/b.png", "animal", True, 2.0, ["thing"]),
        ("/img/b.png", "dog", True, 2.0, ["animal", "thing"]),  # the retired pet is left out
        ("/img/b.png", "thing", True, 2.0, []),
    ]
    under = cat.safe_query("SELECT DISTINCT uri FROM current_tags_with_ancestors WHERE positive "
                           "AND list_contains(ancestors, 'vehicle')")
    assert under == [("/img/a.png",)]
    assert ("dog", "pet", 1) in cat.query("SELECT label, ancestor, depth FROM label_ancestors")
    assert cat.query("SELECT depth FROM label_ancestors WHERE label = 'car' AND ancestor = 'thing'") == [(2,)]


# -- the command line ---------------------------------------------------------------------------------
def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def listed(ws: str) -> dict[str, dict]:
    out = invoke("labels", "list", "--all", "-w", ws, "--json")
    return {r["name"]: r for r in json.loads(out.stdout)}


def one_error_line(out, needle: str) -> None:
    assert out.exit_code == 2, out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], out.stderr


def test_cli_labels_add_with_parents_set_and_unlink(tmp_path):
    ws = str(tmp_path / "ws")
    out = invoke("labels", "add", "car", "--parent", "vehicle", "-w", ws)
    assert out.exit_code == 0, out.output
    assert "added 2 label(s)" in out.stdout
    out = invoke("labels", "add", "truck", "-p", "vehicle", "-p", "machine", "-w", ws)
    assert out.exit_code == 0, out.output
    rows = listed(ws)
    assert rows["car"]["parents"] == ["vehicle"] and rows["vehicle"]["status"] == "active"
    assert rows["truck"]["parents"] == ["machine", "vehicle"] and rows["vehicle"]["parents"] == []
    assert "parents" in invoke("labels", "list", "-w", ws).stdout  # the table shows them
    out = invoke("labels", "set", "car", "--no-parent", "vehicle", "--parent", "machine", "-w", ws)
    assert out.exit_code == 0 and "car: parents machine" in out.stdout, out.output
    assert listed(ws)["car"]["parents"] == ["machine"]
    one_error_line(invoke("labels", "set", "car", "-w", ws), "--parent PARENT")
    one_error_line(invoke("labels", "set", "car", "--no-parent", "thing", "-w", ws), "has no parent")


def test_cli_cycles_are_one_error_line_and_change_nothing(tmp_path):
    ws = str(tmp_path / "ws")
    assert invoke("labels", "add", "car", "--parent", "vehicle", "-w", ws).exit_code == 0
    before = listed(ws)
    one_error_line(invoke("labels", "set", "vehicle", "--parent", "car", "-w", ws),
                   "would close a cycle: vehicle -> car -> vehicle")
    one_error_line(invoke("labels", "add", "thing", "--parent", "thing", "-w", ws), "its own parent")
    one_error_line(invoke("labels", "add", "vehicle", "bus", "--parent", "car", "-w", ws), "cycle")
    assert listed(ws) == before  # no label, no link added by a refused command


# -- the text corpus ----------------------------------------------------------------------------------
CORPUS_LABELS = ["circle", "square", "shape"]
CORPUS_PARENTS = {"circle": ["shape"], "square": ["shape"]}


def _gen(asked: list | None = None):
    inner = OfflineGenerator(Vocabulary.create(CORPUS_LABELS, LABEL_SYNONYMS), seed=0)

    class Counting:
        def generate(self, label_sets):
            if asked is not None:
                asked.extend(label_sets)
            return inner.generate(label_sets)

        def identity(self):
            return inner.identity()
    return Counting()


def test_corpus_targets_count_a_child_sentence_for_its_ancestors():
    flat = build_corpus(CORPUS_LABELS, LABEL_SYNONYMS, 300, _gen(), seed=0)
    tree = build_corpus(CORPUS_LABELS, LABEL_SYNONYMS, 300, _gen(), seed=0, parents=CORPUS_PARENTS)
    assert tree.sentences == flat.sentences and np.array_equal(tree.label_matrix.toarray(), flat.label_matrix.toarray())
    assert tree.corpus_id != flat.corpus_id and tree.config["parents"] == {"circle": ["shape"], "square": ["shape"]}
    assert "parents" not in flat.config and np.array_equal(flat.targets().toarray(), flat.label_matrix.toarray())
    y, m = tree.targets().toarray(), tree.label_matrix.toarray()
    shape = CORPUS_LABELS.index("shape")
    child_rows = m[:, :2].any(1)
    assert y[child_rows, shape].all() and not m[child_rows, shape].all()
    assert np.array_equal(y[:, :2], m[:, :2])  # children are not raised by their parent
    assert np.array_equal(y[~child_rows], m[~child_rows])


def test_changed_parents_make_a_new_corpus_of_the_same_sentences():
    from tagger.text.background import background_nouns
    flat = build_corpus(CORPUS_LABELS, LABEL_SYNONYMS, 300, _gen(), seed=0,  # with its nouns, as update builds it
                        background=background_nouns(CORPUS_LABELS, LABEL_SYNONYMS, 0))
    records = [{"corpus_id": flat.corpus_id, "config": flat.config}]
    asked: list = []
    tree, how = update_corpus(records, lambda cid: flat, CORPUS_LABELS, LABEL_SYNONYMS, _gen(asked), 300, 0,
                              parents=CORPUS_PARENTS)
    assert how == "extended" and asked == []  # nothing generated
    assert tree.corpus_id != flat.corpus_id and tree.config["extends"] == flat.corpus_id
    assert tree.sentences == flat.sentences and tree.stats["parents_changed"] == ["circle", "square"]
    assert tree.targets().toarray()[:, 2].sum() > flat.label_matrix.toarray()[:, 2].sum()
    records.append({"corpus_id": tree.corpus_id, "config": tree.config})
    load = {flat.corpus_id: flat, tree.corpus_id: tree}.__getitem__
    same, how = update_corpus(records, load, CORPUS_LABELS, LABEL_SYNONYMS, _gen(asked), 300, 0,
                              parents=CORPUS_PARENTS)
    assert how == "reused" and same.corpus_id == tree.corpus_id
    _, how = update_corpus(records, load, CORPUS_LABELS, LABEL_SYNONYMS, _gen(asked), 300, 0,
                           parents={"circle": ["shape"]})
    assert how == "extended" and asked == []


def test_nightly_vocabulary_diff_reports_changed_parents(tmp_path):
    from tagger.pipeline.nightly import vocabulary_diff
    with Catalog.open(Workspace.at(tmp_path / "ws").catalog) as c:
        c.add_labels(CORPUS_LABELS)
        corpus = build_corpus(CORPUS_LABELS, LABEL_SYNONYMS, 50, _gen(), seed=0)
        c.add_corpus(corpus.corpus_id, len(corpus), labels=CORPUS_LABELS, config=corpus.config)
        c.add_classifier("clf", model_id="m", labels=CORPUS_LABELS, corpus_id=corpus.corpus_id)
        run = c.start_run("tag", model_id="m", classifier_id="clf", labels=CORPUS_LABELS)
        c.load_tags(run, [])
        c.set_current(run)
        assert vocabulary_diff(c)["parents_changed"] == []
        c.add_parents("circle", "shape")
        assert vocabulary_diff(c)["parents_changed"] == ["circle"]


# -- a real tag run -----------------------------------------------------------------------------------
def _summary(*args: str) -> dict:
    out = runner.invoke(app, [*args, "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")][-1]


@pytest.mark.ray
def test_a_tag_run_makes_a_parent_positive_because_of_its_child(local_ray, random_checkpoint, tmp_path):
    from tagger.toyworld.export import export_scenes
    images, ws = tmp_path / "images", str(tmp_path / "ws")
    export_scenes(images, 5)
    assert invoke("labels", "add", "circle", "square", "star", "-w", ws).exit_code == 0
    assert invoke("labels", "set", "circle", "--parent", "shape", "-w", ws).exit_code == 0
    _summary("encode", str(images), "-w", ws, "--model", "toy-rn", "--pretrained", str(random_checkpoint("toy-rn")),
             "--num-gpus", "0")
    _summary("generate-text", "-w", ws, "--n-sentences", "200")
    _summary("train", "-w", ws)
    # circle is positive on every image, shape on none by its own score
    assert invoke("labels", "set", "circle", "--threshold", "-100", "-w", ws).exit_code == 0
    assert invoke("labels", "set", "shape", "--threshold", "100", "-w", ws).exit_code == 0
    first = _summary("tag", "-w", ws)
    with Catalog.open(Path(ws) / "catalog.duckdb", read_only=True) as c:
        by = {(u, lab): (s, p) for u, lab, s, p in c.query("SELECT uri, label, score, positive FROM current_tags")}
        assert c.query("SELECT n_pos FROM current_label_counts WHERE label = 'shape'") == [(5,)]
        ancestors = c.query("SELECT DISTINCT ancestors FROM current_tags_with_ancestors WHERE label = 'circle'")
    uris = {u for u, _ in by}
    assert len(uris) == 5
    for u in uris:
        assert by[(u, "shape")][1] and by[(u, "circle")][1]
        assert by[(u, "shape")][0] >= by[(u, "circle")][0]
    assert ancestors == [(["shape"],)]
    # unlinking makes a new run (same classifier) in which shape is positive nowhere
    assert invoke("labels", "set", "circle", "--no-parent", "shape", "-w", ws).exit_code == 0
    second = _summary("tag", "-w", ws)
    assert second["run_id"] != first["run_id"]
    with Catalog.open(Path(ws) / "catalog.duckdb", read_only=True) as c:
        assert c.query("SELECT n_pos FROM current_label_counts WHERE label = 'shape'") in ([], [(0,)])


def test_a_retired_parent_is_linked_with_a_warning(cat, caplog):
    cat.add_labels(["animal"])
    cat.retire_labels(["animal"])
    with caplog.at_level("WARNING", logger="tagger.catalog.hierarchy"):
        assert cat.add_parents("dog", "animal") == 1
    assert "'animal' retired" in caplog.text and "bypassed" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="tagger.catalog.hierarchy"):
        cat.add_parents("car", "vehicle")  # a new parent: added as a label, no warning
    assert "retired" not in caplog.text and cat.active_hierarchy()["car"] == ("vehicle",)


def test_the_labels_an_edit_moves_through_the_hierarchy_are_those_with_other_descendants_and_above():
    tree = {"hexagon": ["polygon"], "square": ["polygon"], "polygon": ["shape"], "fish": ["animal"]}
    labels = ["hexagon", "square", "polygon", "shape", "fish", "animal", "tree"]
    assert hierarchy_refits(tree, tree, labels, labels, []) == []
    # a new parent over existing labels: nothing else moves; above an existing one, that one does
    assert hierarchy_refits(tree, {**tree, "tree": ["plant"]}, labels, labels + ["plant"], ["plant"]) == []
    assert hierarchy_refits(tree, {**tree, "plant": ["thing"]}, labels + ["thing"], labels + ["thing", "plant"],
                            ["plant"]) == ["thing"]
    # a child added under fish: fish and its ancestors
    assert hierarchy_refits(tree, {**tree, "goldfish": ["fish"]}, labels, labels + ["goldfish"], ["goldfish"]) \
        == ["animal", "fish"]
    # a label re-worded: its ancestors
    assert hierarchy_refits(tree, tree, labels, labels, ["hexagon"]) == ["polygon", "shape"]
    # a child moved straight under shape: polygon lost it (shape, above it, is decided again too)
    assert hierarchy_refits(tree, {**tree, "hexagon": ["shape"]}, labels, labels, []) == ["polygon", "shape"]
    # a child retired: its former ancestors
    assert hierarchy_refits(tree, tree, labels, [x for x in labels if x != "square"], []) == ["polygon", "shape"]
    # a middle label retired: its children now sit under shape, whose descendants lost only polygon
    assert hierarchy_refits(tree, tree, labels, [x for x in labels if x != "polygon"], []) == ["shape"]
    # the size of an edit counts the parents it regroups, not the ancestors above them
    assert regrouped(tree, {**tree, "goldfish": ["fish"]}, labels, labels + ["goldfish"]) == ["fish"]
    assert regrouped(tree, {**tree, "hexagon": ["shape"]}, labels, labels) == ["polygon", "shape"]
    assert regrouped(tree, tree, labels, [x for x in labels if x != "polygon"]) == ["shape"]
    assert regrouped(tree, tree, labels, labels) == []
