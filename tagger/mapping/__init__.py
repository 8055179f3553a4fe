"""Cross-modal mapping of image embeddings with a memory bank of text embeddings."""
from .memory import MemoryBank, attend, cross_modal_map, mapped_scores

__all__ = ["MemoryBank", "attend", "cross_modal_map", "mapped_scores"]
