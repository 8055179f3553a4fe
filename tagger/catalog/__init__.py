"""The DuckDB catalog: images, encodings, labels, corpora, classifiers, runs and tags.

One process writes (the job driver); readers open it read-only::

    with Catalog.open("ws/catalog.duckdb") as cat:
        ids = cat.register_images(list_images("photos/"))
    with Catalog.open("ws/catalog.duckdb", read_only=True) as cat:
        cat.safe_query("SELECT label, count(*) FROM current_tags WHERE positive GROUP BY 1")
"""
from __future__ import annotations

import logging

from .images import ImagesMixin, records_table
from .migrations import apply_migrations, default_schema_dir, load_migrations
from .readonly import check_read_only
from .runs import RUN_STATUSES, Run, RunsMixin
from .vocab import Label, VocabMixin

logger = logging.getLogger(__name__)


class Catalog(ImagesMixin, VocabMixin, RunsMixin):
    """The workspace catalog. Open with ``Catalog.open(path, read_only=False)``; use as a
    context manager or call ``close()``. Writer methods raise CatalogError on a read-only one."""


__all__ = [
    "Catalog", "Label", "Run", "RUN_STATUSES", "apply_migrations", "check_read_only",
    "default_schema_dir", "load_migrations", "records_table",
]
