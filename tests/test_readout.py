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


def test_best_rows_leave_out_forced_rows_and_report_too_few():
    st = ReadoutState(np.zeros(2, np.float32), np.zeros((2, 3), np.float32), np.ones(2, np.float32),
                      np.array([[5, 1, 7, 2], [0, 9, -1, -1]], np.int32),
                      np.array([[4, 3, 2, 1], [2, 1, -np.inf, -np.inf]], np.float32))
    assert st.best(2, skip_from=5) is None  # the second image lists one row below 5
    np.testing.assert_array_equal(st.best(2), [[5, 1], [0, 9]])
    np.testing.assert_array_equal(st.best(1, skip_from=5), [[1], [0]])
