"""Index configuration as plain data: a frozen dataclass that round-trips through JSON."""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any

import faiss

from tagger.errors import ConfigError

logger = logging.getLogger(__name__)

_METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}


@dataclass(frozen=True)
class IndexConfig:
    """How the global index and the patch store are built.

    Attributes:
        global_factory: FAISS factory string of the global index. The default is exact and
            reconstructable by id. IVF factories get a hashtable direct map so that
            reconstruct-by-id and replacement keep working.
        metric: "ip" (inner product; cosine when ``normalize``) or "l2".
        normalize: L2-normalise global vectors, patch vectors and queries before use.
        nprobe: lists visited per query when the global factory is IVF-based.
        patch_bytes: code bytes per patch vector (PQ with ``nbits=8``: the number of
            sub-quantizers m).
        nbits: bits per PQ sub-quantizer code.
        patch_factory: optional FAISS factory overriding the PQ string, e.g. "Flat"
            (uncompressed float32), "SQ8" or "OPQ16,PQ16". It must yield a flat-codes index
            (codes stored contiguously, searched exhaustively), possibly behind a transform.
        train_size: cap on the vectors sampled (seeded) to train a codec or an IVF, raised to the
            fewest the layout accepts (PQ: ``2**nbits``); a corpus with fewer vectors than that
            is stored exact and uncompressed until it has them (:mod:`tagger.store.codec`).
        seed: seed of every sample drawn while building.
        use_gpu: move search indexes to GPU when FAISS sees one.
        batch_size: images per encode/add batch when building from shards.
    """

    global_factory: str = "IDMap2,Flat"
    metric: str = "ip"
    normalize: bool = True
    nprobe: int = 16
    patch_bytes: int = 16
    nbits: int = 8
    patch_factory: str | None = None
    train_size: int = 65536
    seed: int = 1234
    use_gpu: bool = True
    batch_size: int = 4096

    def __post_init__(self) -> None:
        if self.metric not in _METRICS:
            raise ConfigError(f"metric must be one of {sorted(_METRICS)}, got {self.metric!r}")
        if not self.global_factory.strip():
            raise ConfigError("global_factory must be a non-empty FAISS factory string")
        if self.patch_factory is not None and not self.patch_factory.strip():
            raise ConfigError("patch_factory must be None or a non-empty FAISS factory string")
        if not 1 <= self.nbits <= 16:
            raise ConfigError(f"nbits must be in [1, 16], got {self.nbits}")
        if self.patch_bytes < 1 or (self.patch_bytes * 8) % self.nbits:
            raise ConfigError(
                f"patch_bytes={self.patch_bytes} must be positive and hold a whole number of "
                f"{self.nbits}-bit codes")
        for name in ("nprobe", "train_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def faiss_metric(self) -> int:
        """The FAISS metric constant of ``metric``."""
        return _METRICS[self.metric]

    @property
    def pq_m(self) -> int:
        """Number of PQ sub-quantizers implied by ``patch_bytes`` and ``nbits``."""
        return self.patch_bytes * 8 // self.nbits

    @property
    def patch_factory_string(self) -> str:
        """The factory string actually used for patches (override or ``PQ{m}x{nbits}``)."""
        return self.patch_factory or f"PQ{self.pq_m}x{self.nbits}"

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-ready)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, missing keys take defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown IndexConfig keys: {unknown}")
        return cls(**data)

    def to_json(self) -> str:
        """Stable JSON text (sorted keys)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> IndexConfig:
        """Parse the output of :meth:`to_json`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"IndexConfig JSON is invalid: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError("IndexConfig JSON must be an object")
        return cls.from_dict(data)
