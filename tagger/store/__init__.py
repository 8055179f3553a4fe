"""Embedding store: atomic embedding shards (source of truth) and the FAISS stores built from them.

- :mod:`.shards`: ``embeddings/<model_id>/<shard>/`` directories written atomically by encode
  workers, each with a ``_DONE`` marker.
- :mod:`.global_index`: exact, reconstructable index of global embeddings keyed by image_id.
- :mod:`.patches`: PQ-compressed patch embeddings, image-major, fast batch decoding.
"""
from .config import IndexConfig
from .global_index import GlobalIndex, build_global_index
from .patches import PatchStore, build_patch_store, patch_ids, split_patch_ids
from .shards import (
    Shard,
    ShardWriter,
    SimulatedCrash,
    exists_done,
    index_paths,
    iter_shards,
    list_done_shards,
    load_shard,
    model_dir,
    remove_stale_temp,
    shard_name_for,
    write_shard,
    write_shards,
)
from .shard_table import ShardSet

__all__ = [
    "GlobalIndex",
    "IndexConfig",
    "PatchStore",
    "Shard",
    "ShardSet",
    "ShardWriter",
    "SimulatedCrash",
    "build_global_index",
    "build_patch_store",
    "exists_done",
    "index_paths",
    "iter_shards",
    "list_done_shards",
    "load_shard",
    "model_dir",
    "patch_ids",
    "remove_stale_temp",
    "shard_name_for",
    "split_patch_ids",
    "write_shard",
    "write_shards",
]
