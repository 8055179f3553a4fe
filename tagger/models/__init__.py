"""CLIP models: the registry of shipped toy models and the loader for any open_clip model.

Names are imported on first use, so that ``tagger.models.pixels`` (what the decode stage needs)
does not pull in torch and open_clip.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"ClipModel": ".loader", "default_device": ".loader", "load_clip": ".loader",
         "shipped_models": ".registry"}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name], __name__), name)
