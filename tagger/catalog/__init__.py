"""The DuckDB catalog: images, encodings, labels, corpora, classifiers, runs and tags.

One process writes at a time, in short transactions; readers open it read-only in between
(``wait`` rides out a transaction in progress). A job driver holds the job lock from start to
end and the file only for each of its calls::

    with Catalog.for_job("ws/catalog.duckdb", "encode") as cat:
        ids = cat.register_images(list_images("photos/"))  # connects, writes, disconnects
        ...  # the long part: readers can open the catalog meanwhile
    with Catalog.open("ws/catalog.duckdb", read_only=True, external_access=False, wait=10) as cat:
        cat.safe_query("SELECT label, count(*) FROM current_tags WHERE positive GROUP BY 1")
"""
from __future__ import annotations

import logging

from .base import SEALED_CONFIG
from .thresholds import DecisionsMixin, check_threshold
from .hierarchy import HierarchyMixin
from .images import ImagesMixin, records_table
from .joblock import JOB_LOCK_WAIT, JobLock, job_driver, job_lock_path, running_job
from .migrations import apply_migrations, default_schema_dir, load_migrations
from .readonly import check_read_only
from .review import ReviewMixin
from .runs import RUN_STATUSES, Run, RunsMixin
from .vocab import Label, VocabMixin

logger = logging.getLogger(__name__)


class Catalog(ImagesMixin, VocabMixin, RunsMixin, DecisionsMixin, HierarchyMixin, ReviewMixin):
    """The workspace catalog. Open with ``Catalog.open(path, read_only=False)``; use as a
    context manager or call ``close()``. Writer methods raise CatalogError on a read-only one."""


__all__ = [
    "Catalog", "DecisionsMixin", "JOB_LOCK_WAIT", "JobLock", "Label", "Run", "RUN_STATUSES", "SEALED_CONFIG", "apply_migrations",
    "check_read_only", "check_threshold", "default_schema_dir", "job_driver", "job_lock_path", "load_migrations", "records_table",
    "running_job",
]
