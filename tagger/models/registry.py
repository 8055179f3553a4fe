"""Model registry: the project's own open_clip configs and the weights shipped with them.

The toy models are ordinary open_clip configs (``configs/*.json``) registered with
``open_clip.add_model_config`` by :func:`register_configs` (the loader calls it), so
``open_clip.create_model("toy-vit", pretrained=path)`` works exactly like it does for ``ViT-B-32``.
Their weights live in ``weights/<name>.pt`` with a manifest ``weights/<name>.json`` recording
the sha256 that the loader verifies.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import ChecksumError, ModelLoadError

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs"
WEIGHTS_DIR = Path(__file__).parent / "weights"

_REGISTERED = False


def register_configs() -> None:
    """Make open_clip know the shipped configs (imports open_clip; idempotent)."""
    global _REGISTERED
    if not _REGISTERED:
        import open_clip
        open_clip.add_model_config(CONFIG_DIR)
        _REGISTERED = True


def model_config(name: str) -> dict[str, Any] | None:
    """An architecture's open_clip config read from its JSON file (shipped, then open_clip's own)
    without importing open_clip; None when there is no such file (e.g. ``hf-hub:`` names)."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.exists():
        spec = importlib.util.find_spec("open_clip")
        roots = list(spec.submodule_search_locations or []) if spec else []
        path = next((Path(r) / "model_configs" / f"{name}.json" for r in roots
                     if (Path(r) / "model_configs" / f"{name}.json").exists()), path)
    if not path.exists():
        return None
    cfg = json.loads(path.read_text())
    return cfg if all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")) else None


def model_id_for(name: str, pretrained: str | None = None) -> str:
    """Stable id of (architecture, weights), computed without loading the model (or torch)."""
    if pretrained is None and name in shipped_models() and manifest_path(name).exists():
        tag = read_manifest(name)["sha256"][:12]
    elif pretrained and os.path.isfile(pretrained):
        tag = os.path.splitext(os.path.basename(pretrained))[0]
    else:
        tag = pretrained or "random"
    return re.sub(r"[^A-Za-z0-9._@+=-]", "_", f"{name}@{tag}")


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
