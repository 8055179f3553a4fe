"""Exports of a tag run in the formats other tools read: XMP sidecars for photo tools, and CSV,
JSON lines or Parquet tables (one row per tag: uri, run, label, score, confidence, positive,
provenance), streamed from the catalog in batches."""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CatalogError, ConfigError
from .tables import EXPORT_SCHEMA, TABLE_FORMATS, write_table_export
from .xmp import label_paths, merge_sidecar, sidecar_path, write_sidecars

if TYPE_CHECKING:
    from ..catalog import Catalog

__all__ = ["EXPORT_FORMATS", "EXPORT_SCHEMA", "TABLE_FORMATS", "default_out", "export_run", "label_paths",
           "merge_sidecar", "sidecar_path", "write_sidecars", "write_table_export"]

logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("xmp", *TABLE_FORMATS)


def default_out(fmt: str, run_id: int) -> Path:
    """The table file written when no ``--out`` is given: ``tags-run<N>.<fmt>`` in the working folder."""
    return Path(f"tags-run{run_id}.{fmt}")


def _hierarchy(cat: "Catalog") -> dict[str, tuple[str, ...]]:
    """The active label hierarchy, or none where the catalog has no hierarchy."""
    try:
        return dict(cat.active_hierarchy())
    except (AttributeError, CatalogError) as e:
        logger.debug("no label hierarchy: %s", e)
        return {}


def _keywords(cat: "Catalog", run_id: int) -> Iterator[tuple[str, list[str]]]:
    for batch in cat.keyword_batches(run_id):
        yield from zip(batch.column("uri").to_pylist(), batch.column("labels").to_pylist())


def export_run(cat: "Catalog", fmt: str, *, run_id: int | None = None, out: str | os.PathLike | None = None,
               positive_only: bool = False, mirror: str | os.PathLike | None = None,
               batch_rows: int = 8192) -> dict[str, Any]:
    """Export run ``run_id`` (default: the current one) as ``fmt`` (:data:`EXPORT_FORMATS`).

    Tables go to ``out`` (default :func:`default_out`); ``positive_only`` keeps positive tags only.
    XMP writes one sidecar per tagged image with its positive labels, beside it or under ``mirror``.
    Returns a summary; unknown runs or formats raise CatalogError / ConfigError.
    """
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    run = cat.tag_run(run_id)
    if fmt == "xmp":
        if out is not None:
            raise ConfigError("--out is for table formats; XMP sidecars go beside the images, or under --mirror DIR")
        summary = write_sidecars(_keywords(cat, run.run_id), mirror=mirror, parents=_hierarchy(cat))
        return {"format": "xmp", "run": run.run_id, "mirror": str(mirror) if mirror else None, **summary}
    if mirror is not None:
        raise ConfigError("--mirror is for --format xmp")
    target = Path(out) if out is not None else default_out(fmt, run.run_id)
    batches = cat.tag_batches(run.run_id, positive_only=positive_only, batch_rows=batch_rows)
    return {"run": run.run_id, **write_table_export(batches, fmt, target)}
