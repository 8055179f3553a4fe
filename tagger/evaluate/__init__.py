"""Evaluation harness: metrics and dataset readers."""
from .metrics import average_precision, mean_average_precision, per_class_ap

__all__ = ["average_precision", "mean_average_precision", "per_class_ap"]
