"""Index stage: (re)build the FAISS global index and the PQ patch store from done shards."""
from __future__ import annotations

import logging
import time
from typing import Any

from .store import IndexConfig, build_global_index, build_patch_store, index_paths, list_done_shards

logger = logging.getLogger(__name__)


def update_indexes(workspace, model_id: str, cfg: IndexConfig | None = None) -> dict[str, Any]:
    """Build both stores from every done shard of ``model_id`` and save them atomically.

    The build is deterministic (ascending image id, seeded codec training), so a rerun after a
    crash produces the same files as an uninterrupted run.
    """
    cfg = cfg or IndexConfig()
    root = str(workspace.root)
    if not list_done_shards(root, model_id):
        return {"indexed": 0}
    g_path, p_path = index_paths(root, model_id)
    g_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    gi = build_global_index(root, model_id, cfg)
    gi.save(g_path)
    t1 = time.time()
    ps = build_patch_store(root, model_id, cfg)
    ps.save(p_path)
    t2 = time.time()
    (g_path.parent / "index_config.json").write_text(cfg.to_json())
    logger.info("indexes for %s: %d global, %d images of patches", model_id, gi.ntotal, ps.n_images)
    return {"indexed": int(gi.ntotal), "global_build_s": round(t1 - t0, 2), "patch_build_s": round(t2 - t1, 2),
            "patch_bytes_per_image": ps.bytes_per_image()}
