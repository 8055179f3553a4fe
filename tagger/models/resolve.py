"""Which model a workspace uses: its recorded name and weights (:meth:`tagger.workspace.Workspace.model`)
resolved into the id its shards, indexes and classifiers are kept under, and a model checked before the
workspace records it. Light: neither torch nor open_clip is imported."""
from __future__ import annotations

import shlex
from typing import Any

from ..errors import ModelChangeError
from ..workspace import Workspace
from .registry import check_model, model_id_for

__all__ = ["check_model_change", "check_recordable", "record_model", "workspace_model_id"]


def workspace_model_id(ws: Workspace, name: str | None = None, pretrained: str | None = None) -> str:
    """The id of the model :meth:`Workspace.model` picks (explicit arguments, else the workspace's)."""
    return model_id_for(*ws.model(name, pretrained))


def _named(name: str, pretrained: str | None) -> str:
    return f"{name} (weights {pretrained})" if pretrained else name


def check_model_change(ws: Workspace, name: str, pretrained: str | None = None) -> None:
    """Refuse, with :class:`~tagger.errors.ModelChangeError`, to record ``name``/``pretrained`` over the
    workspace's recorded model once the workspace holds what that model made
    (:meth:`~tagger.workspace.Workspace.holds_model`): its images, classifiers and runs would be left
    behind. A workspace with no recorded model, or nothing made with it yet, may take another."""
    s = ws.settings()
    old, old_weights = s.get("model"), s.get("pretrained")
    if not old or (old, old_weights) == (name, pretrained) or not ws.holds_model(model_id_for(old, old_weights)):
        return
    start = f"tagger init NEW_FOLDER --model {shlex.quote(name)}" + (
        f" --pretrained {shlex.quote(pretrained)}" if pretrained else "")
    raise ModelChangeError(
        f"workspace {ws.root} uses model {_named(old, old_weights)}, which made what it holds, not "
        f"{_named(name, pretrained)}: leave out --model and --pretrained to keep using it, or start a new "
        f"workspace for the other model ({start})")


def check_recordable(ws: Workspace, name: str, pretrained: str | None = None) -> None:
    """Check the model without loading it (:func:`~tagger.models.registry.check_model`: a bad one is
    refused with :class:`~tagger.errors.ModelLoadError`), then that it may replace the workspace's
    (:func:`check_model_change`); nothing is written."""
    check_model(name, pretrained)
    check_model_change(ws, name, pretrained)


def record_model(ws: Workspace, name: str, pretrained: str | None = None) -> dict[str, Any]:
    """Record the model in the workspace's settings once :func:`check_recordable` lets it (else nothing
    is recorded); returns the settings."""
    check_recordable(ws, name, pretrained)
    return ws.update_settings(model=name, pretrained=pretrained)
