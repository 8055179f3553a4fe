"""Keep the approximate global index in step with the exact one (called by the index update).

:func:`sync_ann` runs after the exact file is saved and before the index state is: it adds the new
rows to the approximate index's lists when its layout still fits the corpus, and rebuilds it from the
exact file (memory-mapped) when the layout is outgrown, missing, unreadable or out of step. Adding
removes the ids first, so re-applying the same shards after a kill gives the same index; the file is
replaced atomically, so a kill at any point leaves the old index usable.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from tagger.store.ann import AnnConfig, AnnIndex, Exact, ann_path, build_ann, choose_layout, read_meta
from tagger.store.global_index_file import mapped_rows

__all__ = ["load_ann", "sync_ann"]

logger = logging.getLogger(__name__)


def _why_rebuild(meta: dict[str, Any] | None, layout_factory: str, n_now: int | None) -> str | None:
    if meta is None:
        return "no readable approximate index"
    if meta.get("factory") != layout_factory:
        return f"layout {meta.get('factory')} outgrown: {layout_factory} fits the corpus now"
    if n_now is not None and meta.get("ntotal") != n_now:
        return f"approximate index holds {meta.get('ntotal')} vectors, the exact one {n_now}"
    return None


def sync_ann(global_path: str | os.PathLike[str], added: Iterable[tuple[np.ndarray, np.ndarray]] | None,
             cfg: AnnConfig | None = None, *, normalize: bool = True,
             use_gpu: bool = True, rebuild: bool = False) -> dict[str, Any]:
    """Bring ``global.ann`` beside the exact file ``global_path`` up to date.

    ``added``: the ``(ids, vectors)`` batches just added to the exact file (None: nothing new, check
    only). After adding them the approximate index must hold as many vectors as the exact file, else
    it is rebuilt. Returns what was done (``ann_mode``: none, exact, unchanged,
    incremental or rebuild) with the layout and timings.
    """
    cfg = cfg or AnnConfig()
    path = ann_path(global_path)
    rows = mapped_rows(global_path)
    if rows is None:  # another global factory: that index is the one searched
        return {"ann_mode": "none"}
    ids, vecs, metric = rows
    layout = choose_layout(ids.size, vecs.shape[1], cfg)
    if layout.exact:
        if path.exists():
            path.unlink()
            logger.info("corpus of %d is searched exactly; removed %s", ids.size, path)
        return {"ann_mode": "exact", "ann_factory": "exact"}
    meta = read_meta(path)
    why = "forced" if rebuild else _why_rebuild(meta, layout.factory, None if added is not None else ids.size)
    t0 = time.perf_counter()
    if why is None and added is None:
        return {"ann_mode": "unchanged", "ann_factory": layout.factory, "ann_nprobe": meta["nprobe"]}  # type: ignore[index]
    if why is None:
        ann = AnnIndex.load(path, Exact(ids, vecs, metric))
        for batch_ids, batch_vecs in added:  # type: ignore[union-attr]
            ann.add(batch_ids, batch_vecs)
        mode = "incremental"
        if ann.ntotal != ids.size:
            why = f"after adding, {ann.ntotal} approximate vectors for {ids.size} exact ones"
    if why is not None:
        logger.info("building the approximate index %s over %d vectors: %s", layout.factory, ids.size, why)
        ann = build_ann(ids, vecs, layout, cfg, metric=metric, normalize=normalize, use_gpu=use_gpu)
        mode = "rebuild"
    ann.save(path)
    return {"ann_mode": mode, "ann_factory": layout.factory, "ann_nprobe": ann.nprobe,
            "ann_s": round(time.perf_counter() - t0, 2)}


def ann_in_step(global_path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The header of the approximate index beside ``global_path`` when it is in step with the exact file
    (as many vectors), else None; the index itself is not read."""
    path = Path(ann_path(global_path))
    meta = read_meta(path) if path.exists() else None
    if meta is None:
        return None
    rows = mapped_rows(global_path)
    if rows is None or meta.get("ntotal") != rows[0].size:
        logger.warning("%s is not in step with the exact index: searching exactly (run an index update)", path)
        return None
    return meta


def load_ann(global_path: str | os.PathLike[str]) -> AnnIndex | None:
    """The approximate index beside ``global_path`` when there is one in step with it (as many vectors
    as the exact file), else None: then the exact index is searched."""
    meta = ann_in_step(global_path)
    if meta is None:
        return None
    rows = mapped_rows(global_path) if int(meta.get("rerank", 1)) > 1 else None
    return AnnIndex.load(ann_path(global_path), Exact(*rows) if rows is not None else None)
