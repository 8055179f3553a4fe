"""The evaluation metrics, re-exported from :mod:`tagger.method.metrics` (their one home)."""
from __future__ import annotations

from ..method.metrics import average_precision, mean_average_precision, per_class_ap, summarize, topk_prf

__all__ = ["average_precision", "mean_average_precision", "per_class_ap", "summarize", "topk_prf"]
