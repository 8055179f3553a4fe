"""Which model a workspace uses: its recorded name and weights (:meth:`tagger.workspace.Workspace.model`)
resolved into the id its shards, indexes and classifiers are kept under, and a model checked before the
workspace records it. Light: neither torch nor open_clip is imported."""
from __future__ import annotations

from typing import Any

from ..workspace import Workspace
from .registry import check_model, model_id_for

__all__ = ["record_model", "workspace_model_id"]


def workspace_model_id(ws: Workspace, name: str | None = None, pretrained: str | None = None) -> str:
    """The id of the model :meth:`Workspace.model` picks (explicit arguments, else the workspace's)."""
    return model_id_for(*ws.model(name, pretrained))


def record_model(ws: Workspace, name: str, pretrained: str | None = None) -> dict[str, Any]:
    """Check the model without loading it (:func:`~tagger.models.registry.check_model`: a bad one is
    refused with :class:`~tagger.errors.ModelLoadError` and never recorded), then record it in the
    workspace's settings; returns the settings."""
    check_model(name, pretrained)
    return ws.update_settings(model=name, pretrained=pretrained)
