"""The toy world: a procedural multi-label scene generator with captions and ground truth."""
from .captions import make_caption
from .scenes import SMALL_AREA, SPLITS, Scene, SceneConfig, make_scene
from .vocab import LABEL_SYNONYMS, LABELS

__all__ = ["LABELS", "LABEL_SYNONYMS", "SMALL_AREA", "SPLITS", "Scene", "SceneConfig", "make_caption", "make_scene"]
