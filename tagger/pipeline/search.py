"""Search stored images by a text or a vector: the FAISS global index or the PQ patch store."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, StoreError

if TYPE_CHECKING:
    from ..workspace import Workspace

logger = logging.getLogger(__name__)

LEVELS = ("global", "patch")
EXTRA_ASKED = 64  # results asked for beyond k at first, for unreadable images to leave out


@dataclass(frozen=True)
class Hit:
    """One search result: ``patch`` is the best-matching patch index (patch level only)."""

    rank: int
    score: float
    image_id: int
    uri: str | None = None
    patch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _index_config(directory: Path):
    """The IndexConfig the indexes were built with (written beside them), or None."""
    from ..store import IndexConfig
    path = directory / "index_config.json"
    return IndexConfig.from_json(path.read_text()) if path.exists() else None


def _capped(k: int, stored: int) -> int:
    """``k`` no larger than the images stored (and at least 1): a larger k only costs memory."""
    return max(1, min(k, stored))


def _raw_search(root: Path, model_id: str, query: np.ndarray, k: int, level: str,
                exact: bool = False, shards: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One query's (scores, ids, patches or None). Each level searches its approximate index when one
    is in step with the exact store (and ``exact`` is not asked), else the exact index or the scan."""
    from ..store import GlobalIndex, PatchStore, index_paths
    from ..store.annsync import load_ann
    g_path, p_path = index_paths(root, model_id)
    path = g_path if level == "global" else p_path
    if not path.exists():
        raise StoreError(f"no {level} index for model {model_id} at {path}: run `tagger encode` first")
    if shards is not None:
        return _sharded(path, query, k, level, exact, shards)
    if level == "global":
        cfg = _index_config(path.parent)
        ann = None if exact else load_ann(path)
        if ann is not None:
            scores, ids = ann.search(query, _capped(k, ann.ntotal), use_gpu=cfg.use_gpu if cfg else True)
        else:
            index = GlobalIndex.load(path, cfg, mmap=True)
            scores, ids = index.search(query, _capped(k, index.ntotal))
        return scores[0], ids[0], None
    from ..store.patchannsync import load_patch_ann
    patch_ann = None if exact else load_patch_ann(path)
    if patch_ann is not None:
        scores, ids, patches = patch_ann.search(query, _capped(k, patch_ann.ntotal // patch_ann.patches_per_image))
    else:
        store = PatchStore.load(path, mmap=True)
        scores, ids, patches = store.search(query, _capped(k, store.n_images))
    return scores[0], ids[0], patches[0]


def _sharded(path: Path, query: np.ndarray, k: int, level: str, exact: bool,
             shards: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``level``'s approximate index split in ``shards``, searched by Ray actors (:mod:`.shardsearch`)."""
    from ..store.ann import ann_path
    from ..store.annsync import ann_in_step
    from ..store.patchannsync import patch_ann_in_step, patch_ann_path
    from .shardsearch import search_sharded
    if exact:
        raise ConfigError("--shards searches an approximate index: not with --exact")
    meta = ann_in_step(path) if level == "global" else patch_ann_in_step(path)  # headers only: the shards
    if meta is None:                                                             # hold the lists
        raise StoreError(f"no approximate {level} index in step beside {path} to split (a small corpus is "
                         "searched exactly; run `tagger encode` to update the indexes)")
    if level == "patch":
        stored = int(meta["ntotal"]) // int(meta["patches_per_image"])
        scores, ids, patches = search_sharded(patch_ann_path(path), query, _capped(k, stored), shards)
        return scores[0], ids[0], patches[0]
    scores, ids = search_sharded(ann_path(path), query, _capped(k, int(meta["ntotal"])), shards, exact_path=path)
    return scores[0], ids[0], None


def image_uris(catalog, image_ids: list[int]) -> dict[int, str]:
    """URIs of ``image_ids`` from the catalog (ids it does not know are left out)."""
    if not image_ids:
        return {}
    return catalog.uris_of(image_ids)


@contextmanager
def _catalog(workspace: "Workspace", catalog) -> Iterator[Any]:
    """``catalog`` when given, else the workspace's opened read-only (None when there is none yet)."""
    if catalog is not None or not workspace.catalog.exists():
        yield catalog
        return
    from ..catalog import Catalog
    with Catalog.open(workspace.catalog, read_only=True) as cat:
        yield cat


def search_vector(workspace: "Workspace", model_id: str, query: np.ndarray, k: int = 10, level: str = "global", *,
                  catalog=None, with_uris: bool = True, exact: bool = False,
                  shards: int | None = None) -> list[Hit]:
    """Top-``k`` images for one query vector, best first.

    ``level="global"`` ranks images by their global embedding (the approximate index when the corpus
    has one, unless ``exact``; split in ``shards`` searched by Ray actors when given); ``"patch"`` by their
    best patch (``Hit.patch``; the approximate patch index when there is one, unless ``exact``). Images whose
    file could not be read when last listed or read (deleted, broken) are left out. URIs come from
    ``catalog`` when given, else from the workspace catalog opened read-only. Raises StoreError when the
    indexes are not built yet.
    """
    if level not in LEVELS:
        raise ConfigError(f"level must be one of {LEVELS}, got {level!r}")
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    q = np.asarray(query, np.float32)
    if q.ndim != 1:
        raise ConfigError(f"search_vector takes one query vector, got shape {q.shape}")
    with _catalog(workspace, catalog) as cat:
        # a deleted or broken file's embeddings stay in the stores until it is read again: left out of the
        # results, asked for beyond k (a few first, more while they crowd the top; never k times the corpus)
        unreadable = set(cat.unreadable_ids()) if cat is not None else set()
        want, most = k + min(len(unreadable), max(k, EXTRA_ASKED)), k + len(unreadable)
        while True:
            scores, ids, patches = _raw_search(workspace.root, model_id, q[None, :], want, level, exact, shards)
            found = np.flatnonzero(ids >= 0)  # -1: k > stored
            valid = [i for i in found if int(ids[i]) not in unreadable][:k]
            if len(valid) >= k or len(found) < want or want >= most:
                break
            want = min(most, want * 4)
        uris = image_uris(cat, [int(ids[i]) for i in valid]) if with_uris and cat is not None else {}
    return [Hit(rank=r + 1, score=float(scores[i]), image_id=int(ids[i]), uri=uris.get(int(ids[i])),
                patch=None if patches is None else int(patches[i])) for r, i in enumerate(valid)]


def search_text(workspace: "Workspace", text: str, k: int = 10, level: str = "global", *, model: str | None = None,
                pretrained: str | None = None, device: str | None = None, catalog=None,
                exact: bool = False, shards: int | None = None) -> list[Hit]:
    """Encode ``text`` with the workspace's model (or ``model``/``pretrained``) and search."""
    from ..models import load_clip
    if not text.strip():
        raise ConfigError("empty search text")
    name, weights = workspace.model(model, pretrained)
    clip = load_clip(name, weights, device=device)
    q = clip.encode_text([text])[0]
    logger.info("searching %s (%s level) for %r", clip.model_id, level, text)
    return search_vector(workspace, clip.model_id, q, k, level, catalog=catalog, exact=exact, shards=shards)


def encode_image_files(paths: list[str], model: str, pretrained: str | None,
                       device: str | None = None) -> np.ndarray:
    """Global embeddings (float32 [n, d]) of image files, decoded and encoded as ``tagger encode`` does
    (same preprocessing and features). A file that cannot be decoded raises SourceError."""
    from ..errors import SourceError
    from ..models.preprocess import pixel_spec
    from ..models.registry import model_id_for
    from .decode import Decoder
    from .encode import EncodeConfig, EncodePartitions
    spec = pixel_spec(model, pretrained)
    decoder = Decoder(preprocess=spec.to_uint8, size=spec.image_size)
    pixels = []
    for path in paths:
        row = decoder.decode(path)
        if row["status"] != "ok":
            raise SourceError(f"cannot use {path} as a query image: {row['error']}")
        pixels.append(np.asarray(row["pixels"]))
    encoder = EncodePartitions(EncodeConfig(model=model, pretrained=pretrained, device=device), "",
                               model_id_for(model, pretrained))
    g, _ = encoder.embed(np.stack(pixels))
    return g.astype(np.float32)


def like_vector(workspace: "Workspace", like: str, model_id: str, model: str, pretrained: str | None,
                device: str | None = None) -> tuple[np.ndarray, int | None]:
    """The query of ``--like``: (global embedding, image id or None). An image the catalog knows by
    ``like`` (a URI or a path, normalised as sources are) and that is encoded gives its stored vector;
    otherwise a readable local file is encoded now."""
    from ..catalog import Catalog
    from ..errors import SourceError
    from ..store import GlobalIndex, index_paths
    from .sources import normalize_uri, to_local_path
    uri = normalize_uri(like)
    image_id = None
    if workspace.catalog.exists():
        with Catalog.open(workspace.catalog, read_only=True) as cat:
            image_id = cat.image_ids([uri]).get(uri)
    g_path = index_paths(workspace.root, model_id)[0]
    if image_id is not None and g_path.exists():
        gi = GlobalIndex.load(g_path, _index_config(g_path.parent), mmap=True)
        if gi.contains(np.array([image_id]))[0]:
            return gi.reconstruct(np.array([image_id]))[0], image_id
    local = to_local_path(uri)
    if local is None or not Path(local).is_file():
        raise SourceError(f"{like} is neither an encoded image of this workspace nor a readable image file")
    logger.info("encoding %s to search for images like it", local)
    return encode_image_files([local], model, pretrained, device)[0], image_id


def search_like(workspace: "Workspace", like: str, k: int = 10, level: str = "global", *, model: str | None = None,
                pretrained: str | None = None, device: str | None = None, catalog=None,
                exact: bool = False, shards: int | None = None) -> list[Hit]:
    """Images like the image ``like`` (its global embedding as the query), best first: the image itself
    (when stored) and its near-duplicates come first. At the patch level, images with a patch close to
    the query image's global embedding."""
    from ..models.registry import model_id_for
    name, weights = workspace.model(model, pretrained)
    q, _ = like_vector(workspace, like, model_id_for(name, weights), name, weights, device)
    return search_vector(workspace, model_id_for(name, weights), q, k, level, catalog=catalog, exact=exact,
                         shards=shards)
