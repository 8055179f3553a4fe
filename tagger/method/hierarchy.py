"""Label hierarchies: a child implies its ancestors.

A hierarchy is a parent map, label -> its parents (several allowed, no cycles). After each label's
own decision, a positive child makes every ancestor positive, and an ancestor's score (and
confidence) becomes the max of its own and its descendants'. Only active labels count:
:func:`active_parents` bypasses retired labels, so a retired label is neither raised by its
descendants nor raises its ancestors, while the labels above and below it stay linked.

The propagation runs level by level over the edges (children before their parents), each level one
gather and one ``maximum.reduceat`` over the image rows, so it costs O(images x edges) whatever
the vocabulary size. Pure numpy: no catalog, workspace or Ray.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..errors import ConfigError
from ..ids import short_sha256
from .labelrows import LabelRows, as_csr, block_rows, is_sparse

__all__ = ["Hierarchy", "ParentMap", "active_parents", "ancestors", "cycle_with", "expand_label_matrix",
           "find_cycle", "hierarchy_key", "hierarchy_refits", "implied_labels", "is_ancestor", "normalise_parents",
           "propagate", "regrouped", "relatives"]

logger = logging.getLogger(__name__)

ParentMap = Mapping[str, Sequence[str]]
_ROW_BLOCK = 1 << 22  # cells of the working array per block of rows


def normalise_parents(parents: ParentMap | None) -> dict[str, tuple[str, ...]]:
    """The parent map with duplicates removed, parents sorted and childless entries dropped (a
    stable form for ids and comparisons)."""
    out = {str(c): tuple(sorted({str(p) for p in ps})) for c, ps in (parents or {}).items()}
    return {c: out[c] for c in sorted(out) if out[c]}


def hierarchy_key(parents: ParentMap | None) -> str | None:
    """A short id of a parent map (None for no hierarchy): what identifies it in a run's config."""
    norm = normalise_parents(parents)
    if not norm:
        return None
    n_edges = sum(len(v) for v in norm.values())
    return f"{n_edges}:" + short_sha256(json.dumps(norm, sort_keys=True, ensure_ascii=False))


def _path_up(parents: ParentMap, start: str, goal: str) -> list[str] | None:
    """A path ``start -> parent -> ... -> goal`` following parent links (breadth first), or None."""
    prev: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            if node == goal:
                path = [node]
                while (up := prev[path[-1]]) is not None:
                    path.append(up)
                return path[::-1]
            for p in parents.get(node, ()):
                if p not in prev:
                    prev[p] = node
                    nxt.append(p)
        frontier = nxt
    return None


def is_ancestor(parents: ParentMap, label: str, of: str) -> bool:
    """Whether ``label`` is a parent of ``of``, or a parent's parent, and so on."""
    return label != of and _path_up(parents, of, label) is not None


def cycle_with(parents: ParentMap, child: str, parent: str) -> list[str] | None:
    """The cycle that making ``parent`` a parent of ``child`` would close, as a path
    ``[child, parent, ..., child]`` (``[child, child]`` for a label made its own parent), or None."""
    if child == parent:
        return [child, child]
    up = _path_up(parents, parent, child)
    return [child, *up] if up is not None else None


def find_cycle(parents: ParentMap) -> list[str] | None:
    """Some cycle of the parent map as a path ``[a, b, ..., a]`` (child -> parent), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(parents):
        if root in state:
            continue
        path, stack = [root], [iter(parents.get(root, ()))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(parents.get(nxt, ())))
    return None


def _check_acyclic(parents: ParentMap) -> None:
    cycle = find_cycle(parents)
    if cycle is not None:
        raise ConfigError("label hierarchy has a cycle: " + " -> ".join(cycle) + " (child -> parent)")


def active_parents(parents: ParentMap, active: Collection[str]) -> dict[str, tuple[str, ...]]:
    """The hierarchy among the ``active`` labels: each active label's nearest active ancestors, a
    retired label in between bypassed (``car -> vehicle (retired) -> thing`` gives ``car -> thing``)."""
    act = set(active)
    _check_acyclic(parents)
    memo: dict[str, frozenset[str]] = {}

    def nearest(node: str) -> frozenset[str]:  # nearest active ancestors of a node, iteratively
        todo = [node]
        while todo:
            cur = todo[-1]
            pending = [p for p in parents.get(cur, ()) if p not in act and p not in memo]
            if pending:
                todo.extend(pending)
                continue
            todo.pop()
            memo[cur] = frozenset(q for p in parents.get(cur, ()) for q in ((p,) if p in act else memo[p]))
        return memo[node]

    return normalise_parents({c: tuple(nearest(c)) for c in parents if c in act})


def ancestors(parents: ParentMap, labels: Collection[str]) -> set[str]:
    """Every ancestor of ``labels`` (not the labels themselves, unless one is above another)."""
    out: set[str] = set()
    todo = [p for x in labels for p in parents.get(x, ())]
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            todo.extend(parents.get(p, ()))
    return out


def _descendants(parents: ParentMap) -> dict[str, frozenset[str]]:
    """Each label with children -> all its descendants."""
    out: dict[str, set[str]] = {}
    for c in parents:
        for a in ancestors(parents, [c]):
            out.setdefault(a, set()).add(c)
    return {a: frozenset(d) for a, d in out.items()}


def relatives(parents: ParentMap) -> dict[str, frozenset[str]]:
    """Each label with children -> its descendants and its ancestors (the names that count as its own
    when its images are named: :func:`~tagger.method.names.hierarchy_names`)."""
    return {a: d | frozenset(ancestors(parents, [a])) for a, d in _descendants(parents).items()}


def hierarchy_refits(before: ParentMap | None, after: ParentMap | None, old: Collection[str],
                     new: Collection[str], touched: Collection[str]) -> list[str]:
    """The labels of both vocabularies (``old`` and ``new`` active labels) whose positives an edit moves
    through the hierarchy, besides the ``touched`` ones (added, re-worded) themselves: those whose
    descendants differ between the parent maps ``before`` and ``after`` (a child added, moved,
    retired), and every ancestor of a touched label. The set is closed upwards, so a label outside it
    and outside ``touched`` has the same own positives and the same descendants as before."""
    was = active_parents(normalise_parents(before), old)
    now = active_parents(normalise_parents(after), new)
    d_was, d_now = _descendants(was), _descendants(now)
    both = set(old) & set(new)
    moved = {a for a in both if d_was.get(a, frozenset()) != d_now.get(a, frozenset())}
    up = ancestors(now, set(touched) | moved)
    return sorted(((moved | up) & both) - set(touched))


def regrouped(before: ParentMap | None, after: ParentMap | None, old: Collection[str], new: Collection[str]
              ) -> list[str]:
    """The labels of both vocabularies whose children (among the active labels) differ: the size of a
    hierarchy edit, one per parent it regroups (not its ancestors, whose descendants follow)."""
    def children(parents: ParentMap | None, active: Collection[str]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for c, ps in active_parents(normalise_parents(parents), active).items():
            for p in ps:
                out.setdefault(p, set()).add(c)
        return out
    was, now = children(before, old), children(after, new)
    return sorted(a for a in set(old) & set(new) if was.get(a, set()) != now.get(a, set()))


@dataclass(frozen=True)
class Hierarchy:
    """A parent map compiled against the columns ``labels`` of score matrices.

    Nodes are the labels that take part in an edge; a node without a column (a parent outside
    ``labels``) carries its descendants' values up but has none of its own. ``levels`` holds, per
    height above the leaves, the edges into the parents of that height: child nodes sorted by
    parent, the start of each parent's run, and the parent nodes.
    """

    labels: tuple[str, ...]
    columns: np.ndarray  # (n_nodes,) the column of each node, -1 for none
    levels: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]
    key: str | None

    @classmethod
    def build(cls, labels: Sequence[str], parents: ParentMap | None) -> "Hierarchy":
        """Compile ``parents`` for matrices whose columns are ``labels``; ConfigError on a cycle."""
        norm = normalise_parents(parents)
        _check_acyclic(norm)
        nodes = sorted({c for c in norm} | {p for ps in norm.values() for p in ps})
        node = {n: i for i, n in enumerate(nodes)}
        col = {n: j for j, n in enumerate(labels)}
        columns = np.asarray([col.get(n, -1) for n in nodes], np.int64)
        edges = [(node[c], node[p]) for c, ps in norm.items() for p in ps]
        height = np.zeros(len(nodes), np.int64)
        children: dict[int, list[int]] = {}
        for c, p in edges:
            children.setdefault(p, []).append(c)
        for n in _children_first(len(nodes), edges):
            if n in children:
                height[n] = 1 + max(height[c] for c in children[n])
        levels = []
        for h in range(1, int(height.max(initial=0)) + 1):
            lev = sorted((p, c) for c, p in edges if height[p] == h)
            par = np.asarray([p for p, _ in lev], np.int64)
            starts = np.flatnonzero(np.r_[True, par[1:] != par[:-1]])
            levels.append((np.asarray([c for _, c in lev], np.int64), starts, par[starts]))
        return cls(tuple(labels), columns, tuple(levels), hierarchy_key(norm))

    @property
    def empty(self) -> bool:
        """No edge: propagation changes nothing."""
        return not self.levels

    def lift(self, values: np.ndarray, floor: float | bool) -> np.ndarray:
        """``values`` (rows x ``labels``) with every column raised to the max over its descendants;
        ``floor`` is the identity of max for the dtype (``-inf``, ``0``, ``False``). A copy."""
        v = np.asarray(values)
        if v.ndim != 2 or v.shape[1] != len(self.labels):
            raise ConfigError(f"matrix of shape {v.shape} does not fit {len(self.labels)} labels")
        out = v.copy()
        if self.empty or not len(v):
            return out
        has = self.columns >= 0
        src, dst = np.flatnonzero(has), self.columns[has]
        block = max(1, _ROW_BLOCK // max(1, len(self.columns)))
        for r0 in range(0, len(v), block):
            rows = v[r0:r0 + block]
            carried = np.full((len(rows), len(self.columns)), floor, dtype=v.dtype)
            carried[:, src] = rows[:, dst]
            for child, starts, parent in self.levels:
                up = np.maximum.reduceat(carried[:, child], starts, axis=1)
                carried[:, parent] = np.maximum(carried[:, parent], up)
            out[r0:r0 + block, dst] = carried[:, src]
        return out

    def propagate(self, scores: np.ndarray, positive: np.ndarray, confidence: np.ndarray | None = None,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(scores, positive, confidence) with ancestors raised: positive by any positive descendant,
        score and confidence to the max of their own and their descendants'."""
        s = self.lift(np.asarray(scores), -np.inf)
        p = self.lift(np.asarray(positive, bool), False)
        c = self.lift(np.asarray(confidence), -np.inf) if confidence is not None else None
        return s, p, c


def _children_first(n_nodes: int, edges: Sequence[tuple[int, int]]) -> list[int]:
    """Node indices ordered so that every child comes before its parents (Kahn's algorithm)."""
    waiting = np.zeros(n_nodes, np.int64)  # children not yet placed
    ups: dict[int, list[int]] = {}
    for c, p in edges:
        waiting[p] += 1
        ups.setdefault(c, []).append(p)
    order = [int(n) for n in np.flatnonzero(waiting == 0)]
    k = 0
    while k < len(order):
        for p in ups.get(order[k], ()):
            waiting[p] -= 1
            if waiting[p] == 0:
                order.append(p)
        k += 1
    return order


def propagate(labels: Sequence[str], parents: ParentMap | None, scores: np.ndarray, positive: np.ndarray,
              confidence: np.ndarray | None = None, *, active: Collection[str] | None = None,
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """:meth:`Hierarchy.propagate` for columns ``labels``; with ``active`` only those labels take
    part (see :func:`active_parents`), every other column is returned unchanged."""
    pm = normalise_parents(parents)
    if active is not None:
        pm = active_parents(pm, active)
    return Hierarchy.build(labels, pm).propagate(scores, positive, confidence)


def _closure(tree: Hierarchy, n_cols: int) -> sp.csr_array:
    """``(C, C)`` int32 CSR: row i holds label i and each of its ancestors (the identity lifted,
    a block of rows at a time)."""
    step = block_rows(n_cols)
    blocks = []
    for i in range(0, n_cols, step):
        eye = np.zeros((min(step, n_cols - i), n_cols), np.uint8)
        eye[np.arange(len(eye)), np.arange(i, i + len(eye))] = 1
        blocks.append(as_csr(tree.lift(eye, 0), np.int32))
    return as_csr(sp.vstack(blocks, format="csr"), np.int32) if blocks else sp.csr_array((0, 0), dtype=np.int32)


def _rows_of(tree: Hierarchy, matrix: LabelRows, dtype) -> sp.csr_array:
    """``matrix`` as CSR of ``dtype``; ConfigError unless it has a column per label of ``tree``."""
    m = as_csr(matrix, dtype)
    if m.shape[1] != len(tree.labels):
        raise ConfigError(f"matrix of shape {m.shape} does not fit {len(tree.labels)} labels")
    return m


def expand_label_matrix(matrix: LabelRows, class_names: Sequence[str], parents: ParentMap | None) -> LabelRows:
    """Multi-hot label rows with every label's ancestors set too (a sentence about a car is also
    about a vehicle); the dtype is kept, and so is sparseness: CSR rows are lifted by one sparse
    product with the labels' ancestor closure (``C x C``), never made dense."""
    tree = Hierarchy.build(class_names, parents)
    if not is_sparse(matrix):
        m = np.asarray(matrix)
        return tree.lift(m, 0 if m.dtype != bool else False)
    m = _rows_of(tree, matrix, matrix.dtype)
    out = as_csr(m.astype(np.int32) @ _closure(tree, m.shape[1]), np.int32)
    out.data[:] = 1
    return out.astype(m.dtype)


def implied_labels(matrix: LabelRows, class_names: Sequence[str], parents: ParentMap | None) -> sp.csr_array | None:
    """Per row of multi-hot ``matrix``, the positives a positive descendant in the same row implies
    (an ancestor set by :func:`expand_label_matrix`, or named beside its child), as 0/1 float32 CSR;
    None without a hierarchy. A training lets these move only their own row (:mod:`.ranking`)."""
    tree = Hierarchy.build(class_names, parents)
    if tree.empty:
        return None
    m = _rows_of(tree, matrix, np.float32)
    n_cols = m.shape[1]
    proper = _closure(tree, n_cols).astype(np.float32) - sp.eye_array(n_cols, dtype=np.float32, format="csr")
    proper.eliminate_zeros()
    raised = as_csr(m @ proper, np.float32)
    out = as_csr(raised.multiply(m > 0), np.float32)
    out.eliminate_zeros()
    out.data[:] = 1.0
    return out
