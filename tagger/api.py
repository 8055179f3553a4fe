"""The verbs a Python user calls, in one shape, each the very stage the ``tagger`` command's verb runs:

    verb(ws, [input,] cfg=None, *, model=None, pretrained=None, ...options) -> summary dict

``model``/``pretrained`` pick the model as the CLI's ``--model``/``--pretrained`` do: given ones win,
else the workspace's (:meth:`tagger.workspace.Workspace.model`), else the toy ViT. ``cfg`` is the
stage's config (``EncodeConfig``, ``TagConfig``, ``NightlyConfig``, a head's config for ``train``;
None: its defaults). The CLI's ``encode``, ``train``, ``tag`` and ``nightly`` call these functions
(``STAGES`` names the stage each one runs; ``tests/test_api.py`` holds both to it).

Light on import: every stage is imported when it is called.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .workspace import Workspace

if TYPE_CHECKING:
    from .pipeline.encode import EncodeConfig
    from .pipeline.nightly import NightlyConfig
    from .pipeline.tag import TagConfig

__all__ = ["STAGES", "encode", "nightly", "tag", "train"]

#: The stage each verb runs (module, function): the Python verb and the CLI verb both run it.
STAGES: dict[str, tuple[str, str]] = {
    "encode": ("tagger.pipeline.encode", "run_encode"),
    "train": ("tagger.pipeline.heads", "run_train_head"),
    "tag": ("tagger.pipeline.tag", "run_tag"),
    "nightly": ("tagger.pipeline.nightly", "run_nightly"),
}


def _encode_config(ws: Workspace, cfg: "EncodeConfig | None", model: str | None,
                   pretrained: str | None) -> "EncodeConfig":
    """``cfg`` (default: the stage's defaults) with the model chosen as the CLI chooses it; a ``cfg``
    given without ``model`` names its own model."""
    from .models.registry import absolute_checkpoint
    from .pipeline.encode import EncodeConfig
    if cfg is not None and model is None:
        model, pretrained = cfg.model, pretrained or cfg.pretrained
    name, weights = ws.model(model, absolute_checkpoint(pretrained))
    return replace(cfg or EncodeConfig(), model=name, pretrained=weights)


def encode(ws: Workspace, source: str | None, cfg: "EncodeConfig | None" = None, *, model: str | None = None,
           pretrained: str | None = None, crash_after: int | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Register ``source``'s images (None: only the pending ones), encode them and update the indexes; a
    model other than the workspace's is checked, then recorded as the workspace's while the workspace holds
    nothing its own model made, else refused (:func:`~tagger.models.resolve.check_model_change`;
    ``tagger encode`` records it before taking the job lock)."""
    from .models.resolve import record_model
    from .pipeline.encode import run_encode
    cfg = _encode_config(ws, cfg, model, pretrained)
    if ws.settings().get("model") != cfg.model or ws.settings().get("pretrained") != cfg.pretrained:
        record_model(ws, cfg.model, cfg.pretrained)
    return run_encode(ws, source, cfg, crash_after=crash_after, progress=progress)


def train(ws: Workspace, cfg: Any = None, *, model: str | None = None, pretrained: str | None = None,
          head: str = "comc", annotations: str | os.PathLike[str] | None = None, corpus_id: str | None = None,
          reviewed: bool = False, force: bool = False) -> dict[str, Any]:
    """Train the text-only classifier, or with ``annotations`` and/or ``reviewed`` the image ``head``
    behind the guard (``tagger train``); ``cfg`` is the head's config."""
    from .pipeline.heads import run_train_head
    name, weights = ws.model(model, pretrained)
    return run_train_head(ws, name, weights, head, annotations, corpus_id, cfg, reviewed=reviewed, force=force)


def tag(ws: Workspace, cfg: "TagConfig | None" = None, *, model: str | None = None, pretrained: str | None = None,
        classifier_id: str | None = None, make_current: bool = True, crash_after: int | None = None,
        calibrate_with: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Tag every encoded image into a new run and make it current (``tagger tag``). The model is
    checked here (a bad one: ModelLoadError) and the classifier by the stage, before any work."""
    from .models.registry import check_model, model_id_for
    from .pipeline.tag import run_tag
    name, weights = ws.model(model, pretrained)
    check_model(name, weights)
    return run_tag(ws, model_id_for(name, weights), cfg, classifier_id, make_current=make_current,
                   crash_after=crash_after, calibrate_with=calibrate_with)


def nightly(ws: Workspace, source: str | None = None, cfg: "NightlyConfig | None" = None, *,
            model: str | None = None, pretrained: str | None = None, encode_cfg: "EncodeConfig | None" = None,
            crash_at: str | None = None, calibrate_with: str | None = None) -> dict[str, Any]:
    """Encode, follow label edits, retrain, re-tag, switch and prune (``tagger nightly``); a model other
    than the workspace's is checked, then recorded or refused as :func:`encode` does (the next nightly
    without ``model`` would otherwise encode every image again with the default one)."""
    from .models.resolve import record_model
    from .pipeline.nightly import run_nightly
    enc = _encode_config(ws, encode_cfg, model, pretrained)
    if ws.settings().get("model") != enc.model or ws.settings().get("pretrained") != enc.pretrained:
        record_model(ws, enc.model, enc.pretrained)
    return run_nightly(ws, source, enc, cfg, crash_at=crash_at, calibrate_with=calibrate_with)
