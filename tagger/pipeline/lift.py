"""A label hierarchy in an incremental run: the re-decided labels raised by their descendants.

An incremental run scores and decides only some labels (added, re-worded, or whose positives the
hierarchy moved) and carries every other label's tags from the base run. The labels it decides are
closed upwards (:func:`~tagger.method.hierarchy.hierarchy_refits`), so a carried label's tags hold as
they are; a decided label that has descendants is raised, as in a full run, by each descendant:
the decided ones from their new columns, the carried ones from the rows the base run kept of them
(its positives and top-k), with the review decisions on them in place of the model's. An ancestor's
score is then the max over its own and the descendants' kept rows (a full run takes every
descendant's score; the two differ only below an image's top-k, where no row is written).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..method.hierarchy import Hierarchy, ParentMap, ancestors, normalise_parents
from ..method.reviewed import Reviewed, reviewed_columns, with_review

__all__ = ["Lift", "plan_lift"]


@dataclass(frozen=True)
class Lift:
    """The hierarchy over the decided labels' columns followed by their carried descendants' (``carried``)."""

    hierarchy: Hierarchy
    carried: tuple[str, ...]
    reviewed: Reviewed | None

    def apply(self, table: pa.Table, ids: np.ndarray, scores: np.ndarray, positive: np.ndarray,
              conf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The decided labels' (scores, positive, confidence) ``(n, N)`` of the images ``ids`` raised by
        their descendants; ``table`` holds the base run's carried rows of the shard."""
        n, extra = len(ids), len(self.carried)
        s = np.full((n, extra), -np.inf, np.float32)
        p = np.zeros((n, extra), bool)
        c = np.full((n, extra), -np.inf, np.float32)
        if extra and table.num_rows:
            mine = table.filter(pc.is_in(table.column("label"), pa.array(self.carried, pa.string())))
            order = np.argsort(ids, kind="stable")
            got = np.asarray(mine.column("image_id").to_numpy(), np.int64)
            row = order[np.searchsorted(ids, got, sorter=order)]
            col = {x: j for j, x in enumerate(self.carried)}
            cols = np.asarray([col[x] for x in mine.column("label").to_pylist()], np.int64)
            s[row, cols] = mine.column("score").to_numpy(zero_copy_only=False)
            p[row, cols] = mine.column("positive").to_numpy(zero_copy_only=False)
            c[row, cols] = np.nan_to_num(np.asarray(mine.column("confidence").to_numpy(zero_copy_only=False),
                                                    np.float32), nan=-np.inf)
        pos = np.concatenate([positive, p], 1)
        if self.reviewed is not None:
            pos = with_review(ids, pos, self.reviewed)
        k = scores.shape[1]
        s2, p2, c2 = self.hierarchy.propagate(np.concatenate([scores, s], 1), pos, np.concatenate([conf, c], 1))
        assert c2 is not None
        return s2[:, :k], p2[:, :k], c2[:, :k]


def plan_lift(decided: Sequence[str], kept: Sequence[str], parents: ParentMap | None,
              review_pairs: Sequence[tuple[int, str, bool]]) -> Lift | None:
    """The lift of an incremental run deciding ``decided`` and carrying ``kept`` under ``parents`` (the
    active hierarchy); None when no decided label has a descendant."""
    norm = normalise_parents(parents)
    if not norm:
        return None
    want, kept_set = set(decided), set(kept)
    below = {c for c in norm if ancestors(norm, [c]) & want}
    if not below:
        return None
    carried = tuple(sorted(below & kept_set))
    columns = list(decided) + list(carried)
    return Lift(Hierarchy.build(columns, norm), carried, reviewed_columns(review_pairs, columns))

