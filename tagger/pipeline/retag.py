"""Re-tag a few images of shards a run carried over: those whose ancestors a person's decision raises.

A run that carries shards from its base run (mode ``carried`` or ``incremental``) keeps their tag
files. Under a label hierarchy the tags of an image a person decided on depend on those decisions
(an accepted child raises its ancestors when the shard is tagged), so the images with a decision on
a label that has parents, now or when the base run was tagged (an undone one), are tagged again
in each carried shard: their rows are replaced by what tagging the shard in full would write for
them, every other image's rows kept. The work follows the reviewed images, not the corpus; a rerun
does the same again (each image's rows are dropped before they are written).
"""
from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..workspace import Workspace
from .tag import TagShards, tag_rows, write_parquet_atomic

__all__ = ["retag_images", "reviewed_again"]

logger = logging.getLogger(__name__)


def retag_images(cat, tagger: TagShards, run_dir: Path, image_ids: Collection[int], fresh: Collection[str]) -> int:
    """Tag ``image_ids`` again in the run's carried shards (not in ``fresh``, the shards this run tagged
    in full) with ``tagger``'s model, statistics, decisions, hierarchy and review decisions; returns
    the images tagged again."""
    if not image_ids:
        return 0
    by_shard: dict[str, list[int]] = {}
    for image_id, shard in cat.shards_of(tagger.model_id, sorted(int(i) for i in image_ids)):
        if shard not in fresh:
            by_shard.setdefault(shard, []).append(int(image_id))
    done = 0
    for name in sorted(by_shard):
        path = Workspace.tag_file(run_dir, name)
        if not path.is_file():
            continue
        shard = tagger.load(name)
        ids = np.asarray(shard.ids, np.int64)
        rows = np.flatnonzero(np.isin(ids, by_shard[name]))
        if not len(rows):
            continue
        sub = replace(shard, ids=ids[rows], global_vecs=np.asarray(shard.global_vecs)[rows],
                      patches=None if shard.patches is None else np.asarray(shard.patches)[rows])
        new = tag_rows(sub.ids, tagger.calibrated(sub), tagger.model.labels, tagger.cfg, tagger.decisions,
                       tagger.hierarchy, tagger.reviewed)
        old = pq.read_table(path)
        kept = old.filter(pc.invert(pc.is_in(old.column("image_id"), pa.array(sub.ids, pa.int64()))))
        write_parquet_atomic(pa.concat_tables([kept, new.cast(kept.schema)]), path)
        done += len(rows)
    if done:
        logger.info("tagged %d reviewed images again in %d carried shards", done, len(by_shard))
    return done


def reviewed_again(cat, run_id: int, base_run: int) -> list[int]:
    """The images a run made from ``base_run`` tags again in the shards it carries: those whose
    ancestors a person's decision raised when either run was tagged (both runs' ``lifted``)."""
    a, b = ((cat.get_run(r).config or {}).get("lifted") or [] for r in (run_id, base_run))
    return sorted(set(a) | set(b))
