"""The run report: a static site (overview, a page per label, a run diff, a review queue) built from
the catalog and opened straight from disk; and the files of review decisions it hands back."""
from __future__ import annotations

from .review_file import FILE_FORMAT, decisions_document, read_decisions

__all__ = ["FILE_FORMAT", "decisions_document", "read_decisions"]
