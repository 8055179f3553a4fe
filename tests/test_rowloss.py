"""The new rows' loss: the full ranking loss's gradient with respect to the new rows, for less."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from tagger.method.classifier import ranking_loss
from tagger.method.hierarchy import expand_label_matrix, implied_labels
from tagger.method.labelrows import from_index_sets
from tagger.method.rowloss import new_rows_loss


def _batch(seed, b=40, n_cols=30, d=8):
    rng = np.random.default_rng(seed)
    sets = [rng.choice(n_cols, rng.integers(0, 4), replace=False) for _ in range(b)]
    return rng, from_index_sets(sets, n_cols), torch.from_numpy(rng.standard_normal((b, d)).astype(np.float32))


def _full_grad(z, y, frozen, head, new_cols, margin):
    old = np.setdiff1d(np.arange(y.shape[1]), new_cols)
    cols = np.concatenate([old, new_cols])
    h = head.clone().requires_grad_(True)
    targets = torch.from_numpy(y.toarray()[:, cols].astype(np.float32))
    loss = ranking_loss(torch.cat([z @ frozen.T, z @ h.T], 1), targets, margin)
    loss.backward()
    return loss, h.grad


def test_the_new_rows_gradient_is_the_full_losss():
    for seed, new_cols in [(0, np.array([3, 17])), (1, np.array([0, 1, 2, 29])), (2, np.array([11]))]:
        rng, y, z = _batch(seed)
        frozen = torch.from_numpy(rng.standard_normal((30 - len(new_cols), 8)).astype(np.float32))
        head = torch.from_numpy(rng.standard_normal((len(new_cols), 8)).astype(np.float32))
        _, want = _full_grad(z, y, frozen, head, new_cols, 1.0)
        h = head.clone().requires_grad_(True)
        new_rows_loss(z, z @ h.T, frozen, y, new_cols, 1.0).backward()
        assert want.abs().sum() > 0
        torch.testing.assert_close(h.grad, want, rtol=1e-4, atol=1e-5)


def test_a_batch_without_new_labels_pushes_new_rows_below_old_positives_only():
    rng, y, z = _batch(3)
    y = sp.csr_array(y.toarray() * (np.arange(30) < 25))  # nothing about the new columns 25..29
    frozen = torch.from_numpy(rng.standard_normal((25, 8)).astype(np.float32))
    head = torch.from_numpy(rng.standard_normal((5, 8)).astype(np.float32))
    _, want = _full_grad(z, y, frozen, head, np.arange(25, 30), 1.0)
    h = head.clone().requires_grad_(True)
    new_rows_loss(z, z @ h.T, frozen, y, np.arange(25, 30), 1.0).backward()
    torch.testing.assert_close(h.grad, want, rtol=1e-4, atol=1e-5)


def _implied_batch(seed, b=40, n_cols=30, d=8):
    """A batch whose label rows carry, for columns 0..2 (parents of 3..9, 10..19 and 20..29), the
    positives their children imply."""
    parents = {**{str(c): ["0"] for c in range(3, 10)}, **{str(c): ["1"] for c in range(10, 20)},
               **{str(c): ["2"] for c in range(20, 30)}}
    rng, y, z = _batch(seed, b, n_cols, d)
    names = [str(c) for c in range(n_cols)]
    y = expand_label_matrix(y, names, parents)
    return rng, y, implied_labels(y, names, parents), z


def _full_grad_implied(z, y, implied, frozen, head, new_cols, margin):
    old = np.setdiff1d(np.arange(y.shape[1]), new_cols)
    cols = np.concatenate([old, new_cols])
    h = head.clone().requires_grad_(True)
    dense = (lambda m: torch.from_numpy(m.toarray()[:, cols].astype(np.float32)))
    loss = ranking_loss(torch.cat([z @ frozen.T, z @ h.T], 1), dense(y), margin, implied=dense(implied))
    loss.backward()
    return loss, h.grad


def test_with_a_hierarchy_the_new_rows_gradient_is_still_the_full_losss():
    for seed, new_cols in [(4, np.array([0, 5])), (5, np.array([1, 2, 12, 29])), (6, np.array([15]))]:
        rng, y, implied, z = _implied_batch(seed)
        assert implied.nnz and (implied.toarray() <= y.toarray()).all()
        frozen = torch.from_numpy(rng.standard_normal((30 - len(new_cols), 8)).astype(np.float32))
        head = torch.from_numpy(rng.standard_normal((len(new_cols), 8)).astype(np.float32))
        _, want = _full_grad_implied(z, y, implied, frozen, head, new_cols, 1.0)
        _, plain = _full_grad(z, y, frozen, head, new_cols, 1.0)
        h = head.clone().requires_grad_(True)
        new_rows_loss(z, z @ h.T, frozen, y, new_cols, 1.0, implied=implied).backward()
        torch.testing.assert_close(h.grad, want, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(want, plain)  # the implied pairs did move the negatives before


def test_an_implied_positive_takes_part_in_no_pair():
    s = torch.tensor([[0.2, 0.1, 0.3, -0.1]], requires_grad=True)
    y = torch.tensor([[1.0, 1.0, 0.0, 0.0]])  # label 1 is label 0's parent
    implied = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    with_rule = ranking_loss(s, y, 1.0, implied=implied)
    with_rule.backward()
    g = s.grad.clone()
    s.grad = None
    plain = ranking_loss(s, y, 1.0)
    plain.backward()
    assert g[0, 1] == 0 and s.grad[0, 1] < 0  # the parent is neither raised nor lowered
    assert g[0, 0] == s.grad[0, 0] < 0  # the child is raised as before
    assert g[0, 2] * 2 == s.grad[0, 2] and g[0, 3] * 2 == s.grad[0, 3]  # negatives pushed by the child only
    child_only = ranking_loss(s.detach()[:, [0, 2, 3]], y[:, [0, 2, 3]], 1.0)
    assert with_rule.item() == pytest.approx(child_only.item()) and with_rule.item() < plain.item()
