"""The atomic writer, re-exported where the store has always imported it: see :mod:`tagger.atomic`."""
from __future__ import annotations

from ..atomic import (TMP_PREFIX, atomic_dir, atomic_open, atomic_write_bytes, atomic_write_text, commit_dir,
                      fsync_dir, temp_name)

__all__ = ["TMP_PREFIX", "atomic_dir", "atomic_open", "atomic_write_bytes", "atomic_write_text", "commit_dir",
           "fsync_dir", "temp_name"]
