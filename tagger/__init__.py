"""tagger: tag very large image collections with labels nobody annotated.

The verbs a Python user calls, each the stage the ``tagger`` command's verb runs, in one shape
(``verb(ws, [input,] cfg=None, *, model=None, pretrained=None, ...)``, :mod:`tagger.api`)::

    import tagger
    ws = tagger.Workspace.at("ws")
    tagger.encode(ws, "photos/", model="toy-rn")     # the workspace's model from now on
    tagger.generate_text(ws)                         # after ``tagger labels add ...``
    tagger.train(ws)                                 # head="ovml", annotations="a.csv": an image head
    tagger.tag(ws, tagger.TagConfig(top_k=5))
    with tagger.Catalog.open(ws.catalog, read_only=True) as cat:
        cat.safe_query("SELECT uri, label FROM current_tags WHERE positive")

Names are imported on first use, so ``import tagger`` stays light (no torch, no Ray).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, tuple[str, str | None]] = {
    "Workspace": ("tagger.workspace", "Workspace"),
    "Catalog": ("tagger.catalog", "Catalog"),
    "EncodeConfig": ("tagger.pipeline.encode", "EncodeConfig"),
    "TagConfig": ("tagger.pipeline.tag", "TagConfig"),
    "NightlyConfig": ("tagger.pipeline.nightly", "NightlyConfig"),
    "encode": ("tagger.api", "encode"),
    "generate_text": ("tagger.pipeline.text", "run_generate_text"),
    "train": ("tagger.api", "train"),
    "tag": ("tagger.api", "tag"),
    "nightly": ("tagger.api", "nightly"),
    "search": ("tagger.pipeline.search", "search_text"),
    "load_clip": ("tagger.models", "load_clip"),
    "TaggerError": ("tagger.errors", "TaggerError"),
    "errors": ("tagger.errors", None),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'tagger' has no attribute {name!r}") from None
    value = importlib.import_module(module)
    return value if attr is None else getattr(value, attr)


def __dir__() -> list[str]:
    return sorted(__all__)
