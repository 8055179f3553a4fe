"""Evaluation harness: metrics, seen/unseen label splits and dataset readers."""
from .datasets import (
    DATASETS,
    SMALL_OBJECTS,
    VOC_CLASSES,
    EvalDataset,
    open_dataset,
    read_coco2014,
    read_nuswide,
    read_nuswide_zsl,
    read_toy,
    read_voc2007,
)
from .metrics import average_precision, mean_average_precision, per_class_ap, summarize, topk_prf
from .splits import LabelSplit, make_split, split_from_names, zsl_gzsl_metrics

__all__ = [
    "DATASETS", "SMALL_OBJECTS", "VOC_CLASSES", "EvalDataset", "LabelSplit", "average_precision",
    "make_split", "mean_average_precision", "open_dataset", "per_class_ap", "read_coco2014",
    "read_nuswide", "read_nuswide_zsl", "read_toy", "read_voc2007", "split_from_names", "summarize", "topk_prf",
    "zsl_gzsl_metrics",
]
