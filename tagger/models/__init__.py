"""CLIP models: the registry of shipped toy models and the loader for any open_clip model."""
from .loader import ClipModel, default_device, load_clip
from .registry import shipped_models

__all__ = ["ClipModel", "default_device", "load_clip", "shipped_models"]
