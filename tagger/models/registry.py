"""Model registry: the project's own open_clip configs and the weights shipped with them.

The toy models are ordinary open_clip configs (``configs/*.json``) registered with
``open_clip.add_model_config`` by :func:`register_configs` (explicitly, never on import: the loader,
``pixel_spec`` and the toy trainers call it), so after it ``open_clip.create_model("toy-vit",
pretrained=path)`` works exactly like it does for ``ViT-B-32``.
Their weights live in ``weights/<name>.pt`` with a manifest ``weights/<name>.json`` recording
the sha256 that the loader verifies.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import logging
import os
import re
import struct
import zipfile
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


def _open_clip_config_dirs() -> list[Path]:
    """open_clip's ``model_configs`` folders, found without importing open_clip (or torch)."""
    spec = importlib.util.find_spec("open_clip")
    roots = list(spec.submodule_search_locations or []) if spec else []
    return [Path(r) / "model_configs" for r in roots]


def model_config(name: str) -> dict[str, Any] | None:
    """An architecture's open_clip config read from its JSON file (shipped, then open_clip's own)
    without importing open_clip; None when there is no such file (e.g. ``hf-hub:`` names)."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.exists():
        path = next((d / f"{name}.json" for d in _open_clip_config_dirs() if (d / f"{name}.json").exists()), path)
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


def absolute_checkpoint(pretrained: str | None) -> str | None:
    """A local checkpoint path made absolute (a Ray worker does not share the driver's current
    directory, and the workspace settings outlive it); hub tags and None unchanged."""
    return os.path.abspath(pretrained) if pretrained and os.path.isfile(pretrained) else pretrained


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


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")


def _checkpoint_format(path: Path) -> str | None:
    """``zip`` (torch.save, .npz), ``pickle`` (legacy torch.save) or ``safetensors`` from the
    file's first bytes; None when it is none of them (an empty, truncated or foreign file)."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if head[:4] == b"PK\x03\x04":
        return "zip" if zipfile.is_zipfile(path) else None
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < path.stat().st_size:
        return "safetensors"
    return None


def check_model(name: str, pretrained: str | None = None) -> None:
    """Refuse, with :class:`ModelLoadError`, a model that :func:`~tagger.models.load_clip` could
    not load, without importing torch or open_clip: an architecture with no config file, a
    checkpoint path that is missing or not a checkpoint, shipped weights that fail their
    checksum, a hub tag for a shipped toy model. Hub tags of open_clip architectures and
    ``hf-hub:`` names are resolved only when the model loads.
    """
    if not name or not name.strip():
        raise ModelLoadError("empty model name")
    if ":" not in name and model_config(name) is None:
        known = shipped_models() + sorted({p.stem for d in _open_clip_config_dirs() for p in d.glob("*.json")})
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else f"; shipped: {', '.join(shipped_models())}"
        raise ModelLoadError(f"unknown model {name!r}: no open_clip config of that name{hint}")
    if pretrained is None:
        if name in shipped_models() and manifest_path(name).exists():
            verified_weights(name)
        return
    path = Path(pretrained).expanduser()
    if path.is_dir():
        raise ModelLoadError(f"--pretrained is a directory, not a checkpoint file: {pretrained}")
    if path.is_file():
        if _checkpoint_format(path) is None:
            raise ModelLoadError(f"not a model checkpoint (torch, safetensors or npz): {pretrained}")
    elif os.path.sep in pretrained or path.suffix.lower() in CHECKPOINT_SUFFIXES or path.exists():
        raise ModelLoadError(f"checkpoint file not found: {pretrained}")
    elif name in shipped_models():
        raise ModelLoadError(f"{name!r} has no hub tags (got {pretrained!r}): pass a checkpoint file, "
                             "or no --pretrained for its shipped weights")
