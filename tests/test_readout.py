"""Readout states: an edited memory's readout from the old state equals one computed from scratch."""
import numpy as np
import pytest

from tagger.method.mapping import MemoryBank, attend
from tagger.method.readout import ReadoutState, edit_state, readout_state


def _unit(a):
    return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)


def _world(seed=0, n=64, k=300, d=32):
    rng = np.random.default_rng(seed)
    return _unit(rng.standard_normal((n, d))), _unit(rng.standard_normal((k, d))), rng


def test_state_readout_is_the_mappings_readout():
    v, m, _ = _world()
    st = readout_state(v, m, 0.05)
    np.testing.assert_allclose(st.readout(), attend(v, MemoryBank(m), 0.05), atol=1e-5)
    lg = v @ m.T
    np.testing.assert_array_equal(st.top[:, 0], lg.argmax(1))
    assert (np.diff(np.take_along_axis(lg, st.top.astype(np.int64), 1), axis=1) <= 0).all()


@pytest.mark.parametrize("tau", [0.01, 0.1])
@pytest.mark.parametrize("removed,added", [(0, 10), (5, 0), (20, 7), (150, 3)])
def test_edited_state_matches_a_state_computed_from_scratch(tau, removed, added):
    v, m, rng = _world(seed=removed + added)
    new = _unit(rng.standard_normal((added, m.shape[1])))
    # make some added rows the best of some images, and remove some images' best rows
    if added:
        new[0] = v[0]
    keep = np.sort(rng.choice(len(m), len(m) - removed, replace=False))
    if removed:
        keep = keep[keep != (v[1] @ m.T).argmax()] if len(keep) > len(m) - removed - 1 else keep
    st = readout_state(v, m, tau, rows=8)
    got = edit_state(st, v, m, keep, new, tau, need=4)
    want = readout_state(v, np.concatenate([m[keep], new]), tau, rows=8)
    np.testing.assert_allclose(got.readout(), want.readout(), atol=2e-4)
    # every listed row is one of the image's best, in order, and each image lists at least 4
    for i in range(len(v)):
        listed = got.top[i][got.top[i] >= 0]
        assert len(listed) >= 4
        np.testing.assert_array_equal(listed, want.top[i][:len(listed)])
        np.testing.assert_allclose(got.top_logit[i][:len(listed)], want.top_logit[i][:len(listed)], atol=1e-6)


def test_an_image_whose_weight_was_all_on_removed_rows_is_recomputed():
    v, m, rng = _world(n=4, k=50)
    m[:4] = v  # each image attends almost only to its own row
    tau = 0.01
    st = readout_state(v, m, tau, rows=4)
    keep = np.arange(4, 50)
    got = edit_state(st, v, m, keep, np.zeros((0, m.shape[1]), np.float32), tau, need=2)
    want = readout_state(v, m[keep], tau, rows=4)
    np.testing.assert_allclose(got.readout(), want.readout(), atol=1e-5)
    np.testing.assert_array_equal(got.top[:, :2], want.top[:, :2])


def test_best_rows_leave_out_forced_rows_and_mark_too_few():
    st = ReadoutState(np.zeros(2, np.float32), np.zeros((2, 3), np.float32), np.ones(2, np.float32),
                      np.ones(2, np.float32), np.array([[5, 1, 7, 2], [0, 9, -1, -1]], np.int32),
                      np.array([[4, 3, 2, 1], [2, 1, -np.inf, -np.inf]], np.float32))
    np.testing.assert_array_equal(st.best(2, skip_from=5), [[1, 2], [0, -1]])  # the second lists one below 5
    np.testing.assert_array_equal(st.best(2), [[5, 1], [0, 9]])
    np.testing.assert_array_equal(st.best(1, skip_from=5), [[1], [0]])
    np.testing.assert_array_equal(st.best(5), [[5, 1, 7, 2, -1], [0, 9, -1, -1, -1]])


def test_chained_removals_that_together_cancel_recompute_the_image():
    """Each edit leaves more than 1e-3 of the weight it started from (1 -> 0.03 -> 1e-4), but together
    they leave less than 1e-3 of the image's mass: the sums' rounding error would show in the
    readout, so the image is recomputed."""
    rng = np.random.default_rng(3)
    d, tau = 16, 0.05
    v = np.eye(d, dtype=np.float32)[:1]
    cos = np.array([1.0, 1 + tau * np.log(0.03), 1 + tau * np.log(1e-4)] + [0.0] * 20)
    side = rng.standard_normal((len(cos), d))
    side[:, 0] = 0
    side /= np.linalg.norm(side, axis=1, keepdims=True)
    m = (cos[:, None] * v + np.sqrt(1 - cos[:, None] ** 2) * side).astype(np.float32)
    none = np.zeros((0, d), np.float32)
    st = readout_state(v, m, tau, rows=8)
    keep = np.arange(len(m))
    for _ in range(2):  # remove the best row, then the next
        old = m[keep]
        st = edit_state(st, v, old, np.arange(1, len(old)), none, tau)
        keep = keep[1:]
        want = readout_state(v, m[keep], tau, rows=8)
        np.testing.assert_allclose(st.readout(), want.readout(), atol=1e-5)
    assert st.weight[0] >= 1e-3 * st.mass[0]


def test_a_corrupt_or_foreign_state_file_is_not_used(tmp_path):
    """A truncated file, or one taken over another memory or other images, reads as no state."""
    from tagger.pipeline.readouts import load_state, memory_key, save_state
    from tagger.workspace import Workspace
    v, m, _ = _world(n=5)
    st, ids, key = readout_state(v, m, 0.05), np.arange(5), memory_key(m, 0.05)
    save_state(tmp_path, "s1", ids, st, key)
    np.testing.assert_array_equal(load_state(tmp_path, "s1", ids, key).sums, st.sums)
    assert load_state(tmp_path, "s1", ids, memory_key(m, 0.01)) is None  # another temperature
    assert load_state(tmp_path, "s1", ids[::-1], key) is None  # other image order
    path = Workspace.readout_file(tmp_path, "s1")
    path.write_bytes(path.read_bytes()[:100])
    assert load_state(tmp_path, "s1", ids, key) is None


def test_image_products_with_no_own_rows_are_empty():
    from tagger.method.extend import pq_image_products
    codes = np.zeros((3, 4, 2), np.uint8)
    books = np.ones((2, 256, 4), np.float32)
    assert pq_image_products(codes, books, np.zeros((3, 0, 8), np.float32)).shape == (3, 4, 0)
    assert pq_image_products(codes[:0], books, np.zeros((0, 2, 8), np.float32)).shape == (0, 4, 2)


def test_comc_scores_reading_a_state_equal_scores_reading_the_memory():
    """A full run computes each image's state once and scores from it: the global readout and the
    pruned patches' best rows come from the state, with the scores of a plain read."""
    from tagger.method.classifier import TextClassifier
    from tagger.method.comc import ComcModel
    from tagger.method.scoring import ScoreConfig
    rng = np.random.default_rng(11)
    k, c, d = 150, 200, 32
    labels = [f"l{i}" for i in range(c)]
    memory = MemoryBank(_unit(rng.standard_normal((k, d))))
    model = ComcModel(TextClassifier(rng.standard_normal((c, d)).astype(np.float32), labels, "m", "c"),
                      {"prompts": memory}, ScoreConfig(tau=0.05, patch_labels=64, patch_memory=16))
    g, p = _unit(rng.standard_normal((12, d))), _unit(rng.standard_normal((12, 5, d)))
    state = readout_state(g, memory.vectors, 0.05)
    np.testing.assert_allclose(model.scores(g, p, state=state), model.scores(g, p), rtol=1e-4, atol=1e-5)
    other = readout_state(g, memory.vectors, 0.5)  # a state over another temperature reads otherwise
    assert not np.allclose(model.scores(g, p, state=other), model.scores(g, p), atol=1e-3)
