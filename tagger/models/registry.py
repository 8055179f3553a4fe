"""Model registry: the project's own open_clip configs and the weights shipped with them.

The toy models are ordinary open_clip configs (``configs/*.json``) registered with
``open_clip.add_model_config`` at import, so ``open_clip.create_model("toy-vit", pretrained=path)``
works exactly like it does for ``ViT-B-32``. Their weights live in ``weights/<name>.pt`` with a
manifest ``weights/<name>.json`` recording the sha256 that the loader verifies.
"""
from __future__ import annotations

import hashlib
import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import open_clip

from ..errors import ChecksumError, ModelLoadError

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs"
WEIGHTS_DIR = Path(__file__).parent / "weights"

open_clip.add_model_config(CONFIG_DIR)


def shipped_models() -> list[str]:
    """Names of the models whose configs ship with the project."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def weights_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.pt"


def manifest_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.json"


def read_manifest(name: str) -> dict[str, Any]:
    """The manifest of shipped weights (sha256, training config, metrics)."""
    path = manifest_path(name)
    if not path.exists():
        raise ModelLoadError(f"no shipped weights for {name!r} (expected {path}); train them with scripts/train_toy_clip.py")
    return json.loads(path.read_text())


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=None)
def _verified(path: str, expected: str, mtime: float) -> bool:
    actual = sha256_file(Path(path))
    if actual != expected:
        raise ChecksumError(f"checksum mismatch for {path}: expected {expected[:12]}…, got {actual[:12]}…")
    return True


def verified_weights(name: str) -> Path:
    """Path of the shipped weights for ``name`` after checking their sha256."""
    manifest = read_manifest(name)
    path = weights_path(name)
    if not path.exists():
        raise ModelLoadError(f"weights file missing for {name!r}: {path}")
    _verified(str(path), manifest["sha256"], path.stat().st_mtime)
    return path
