"""What the app keeps between requests: how it reaches the catalog, the search model and indexes
(loaded once per server), and the image renditions it serves.

The catalog is opened per request, read-only and sealed as ``tagger sql`` opens it, so jobs (which
hold the file only for their short write transactions) and the app take turns; a write opens it
writable just for the decision, as ``tagger review`` does. One lock orders the app's own opens
(DuckDB refuses a read-only and a writable connection to one file in one process).
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CatalogError, StoreError
from ..report.thumbs import ThumbnailCache

if TYPE_CHECKING:
    from ..catalog import Catalog
    from ..workspace import Workspace

__all__ = ["CatalogAccess", "Renditions", "Searcher"]

logger = logging.getLogger(__name__)

#: Longest side of the picture on an image's page.
PREVIEW_SIZE = 1024


class CatalogAccess:
    """Per-request opens of the workspace catalog: :meth:`read` (read-only, sealed) and :meth:`write`."""

    def __init__(self, ws: "Workspace", wait: float) -> None:
        self.path, self.wait = ws.catalog, float(wait)
        self._lock = threading.Lock()

    def _exists(self) -> None:
        if not self.path.exists():
            raise CatalogError(f"no catalog at {self.path}: run `tagger encode SOURCE -w {self.path.parent}` first")

    @contextmanager
    def read(self) -> Iterator["Catalog"]:
        from ..catalog import Catalog
        self._exists()
        with self._lock, Catalog.open(self.path, read_only=True, external_access=False, wait=self.wait) as cat:
            yield cat

    @contextmanager
    def write(self) -> Iterator["Catalog"]:
        """The catalog opened for writing; never a new one (a catalog moved away is not replaced by an empty one)."""
        from ..catalog import Catalog
        self._exists()
        with self._lock, Catalog.open(self.path, read_only=False, wait=self.wait) as cat:
            yield cat


@dataclass
class _Loaded:
    key: tuple
    exact: Any
    ann: Any


class Searcher:
    """The workspace's CLIP model (loaded on first use, once) and its global index (reloaded when the
    files change, e.g. after a nightly): text and "more like this" queries."""

    def __init__(self, ws: "Workspace", model: str | None = None, pretrained: str | None = None,
                 device: str | None = None) -> None:
        self.ws, self._model, self._pretrained, self._device = ws, model, pretrained, device
        self._clip: Any = None
        self._index: _Loaded | None = None
        self._lock = threading.Lock()

    def model_id(self) -> str:
        from ..models.registry import model_id_for
        name, weights = self.ws.model(self._model, self._pretrained)
        return model_id_for(name, weights)

    def clip(self) -> Any:
        """The model, loaded at the first call."""
        with self._lock:
            if self._clip is None:
                from ..models import load_clip
                name, weights = self.ws.model(self._model, self._pretrained)
                self._clip = load_clip(name, weights, device=self._device or "cpu")
                logger.info("search model %s loaded", self._clip.model_id)
            return self._clip

    def _indexes(self) -> _Loaded:
        from ..pipeline.search import _index_config
        from ..store import GlobalIndex, index_paths
        from ..store.ann import ann_path
        from ..store.annsync import load_ann
        path = index_paths(self.ws.root, self.model_id())[0]
        if not path.exists():
            raise StoreError(f"no global index at {path}: run `tagger encode` first")
        stats = [(p.stat().st_mtime_ns, p.stat().st_size) if p.exists() else None for p in (path, ann_path(path))]
        key = (str(path), *stats)
        with self._lock:
            if self._index is None or self._index.key != key:
                exact = GlobalIndex.load(path, _index_config(path.parent), mmap=True)
                self._index = _Loaded(key, exact, load_ann(path))
                logger.info("global index of %d images loaded%s", exact.ntotal,
                            " with its approximate index" if self._index.ann is not None else "")
            return self._index

    def vector_of(self, image_id: int) -> np.ndarray | None:
        """The stored global embedding of an encoded image (None when it has none)."""
        exact = self._indexes().exact
        ids = np.array([int(image_id)], np.int64)
        return exact.reconstruct(ids)[0] if exact.contains(ids)[0] else None

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(image_id, score) of the ``k`` nearest images, best first."""
        loaded = self._indexes()
        q = np.asarray(query, np.float32)[None, :]
        if loaded.ann is not None:
            scores, ids = loaded.ann.search(q, k, use_gpu=False)
        else:
            scores, ids = loaded.exact.search(q, k)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def text(self, text: str, k: int) -> list[tuple[int, float]]:
        return self.search(self.clip().encode_text([text])[0], k)

    def like(self, image_id: int, k: int) -> list[tuple[int, float]]:
        vec = self.vector_of(image_id)
        if vec is None:
            raise StoreError(f"image {image_id} is not encoded yet: no neighbours to show")
        return self.search(vec, k)


class Renditions:
    """Thumbnails and page-size previews of catalogued images (cached under the workspace's
    ``thumbnails/``, or a private folder when the workspace cannot be written)."""

    def __init__(self, ws: "Workspace") -> None:
        base = ws.thumbnails_dir
        try:
            (base / "preview").mkdir(parents=True, exist_ok=True)
            writable = os.access(base, os.W_OK) and os.access(base / "preview", os.W_OK)
        except OSError:
            writable = False
        if not writable:  # a read-only workspace: a private folder, removed with the process
            self._private = tempfile.TemporaryDirectory(prefix="tagger-serve-")
            base = Path(self._private.name)
            (base / "preview").mkdir()
        self.thumbs = ThumbnailCache(base)
        self.previews = ThumbnailCache(base / "preview", size=PREVIEW_SIZE)
        self._lock = threading.Lock()

    def get(self, uri: str, content_hash: str | None, preview: bool) -> Path | None:
        cache = self.previews if preview else self.thumbs
        with self._lock:
            return cache.thumbnail(uri, content_hash)
