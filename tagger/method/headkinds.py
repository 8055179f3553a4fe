"""The one registry of head kinds: every head ``tagger train --head`` fits, named once here.

The CLI's ``--head`` choices (:mod:`tagger.cli.options`), the guard's check of a kind
(:mod:`tagger.pipeline.heads`), the nightly retrain (:mod:`tagger.pipeline.retrain`), the seen/unseen
evaluation (:mod:`tagger.evaluate.seen_unseen`) and :mod:`tagger.method.heads` all read it. Light: the
torch module of an image head is imported only when that head is fitted or loaded.

Adding an image head is one file and one line: a module that defines its config and torch module and
calls :func:`register_head` with them, and a :func:`register_kind` call below
naming that module.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["FEWSHOT_HEAD", "TEXT_HEAD", "HeadKindSpec", "head_classes", "image_heads", "register_head", "register_kind", "spec",
           "train_heads"]

#: The text-only head (CoMC), trained on text alone; ``--head comc`` with labelled images fits
#: :data:`FEWSHOT_HEAD`, the text head updated with them (recorded under that name).
TEXT_HEAD = "comc"
FEWSHOT_HEAD = "comc-fewshot"


@dataclass(frozen=True)
class HeadKindSpec:
    """One image head: its name (the ``--head`` value, ``head.json``'s ``kind``, the catalog's record), the
    module that defines and registers its classes, and one line for ``--help``."""

    name: str
    module: str
    summary: str


_KINDS: dict[str, HeadKindSpec] = {}
_CLASSES: dict[str, tuple[type, type]] = {}


def register_kind(name: str, module: str, summary: str) -> HeadKindSpec:
    """Make image head ``name`` known to every reader of the registry; ``module`` (a dotted module name)
    calls ``register_head(name, ConfigClass, ModuleClass)`` when imported."""
    if name in (TEXT_HEAD, FEWSHOT_HEAD) or not name or name != name.strip().lower():
        raise ConfigError(f"head kind {name!r}: a new lower-case name other than {TEXT_HEAD!r} and {FEWSHOT_HEAD!r}")
    _KINDS[name] = HeadKindSpec(name, module, summary)
    return _KINDS[name]


def image_heads() -> tuple[str, ...]:
    """The image heads, in registration order."""
    return tuple(_KINDS)


def train_heads() -> tuple[str, ...]:
    """Every ``--head`` of ``tagger train``: the text head, then the image heads."""
    return (TEXT_HEAD, *_KINDS)


def spec(name: str) -> HeadKindSpec:
    """The registered image head ``name``; ConfigError naming the known ones otherwise."""
    try:
        return _KINDS[name]
    except KeyError:
        raise ConfigError(f"unknown head {name!r}; choose from {', '.join(_KINDS)}") from None


def register_head(name: str, config_cls: type, module_cls: type) -> None:
    """Give image head ``name`` its config and torch module classes (its module calls this on import)."""
    _CLASSES[name] = (config_cls, module_cls)


def head_classes(name: str) -> tuple[type, type]:
    """(config class, torch module class) of image head ``name``, its module imported on first use."""
    if name not in _CLASSES:
        importlib.import_module(spec(name).module)
    if name not in _CLASSES:
        raise ConfigError(f"head {name!r}: its module {spec(name).module} registered no classes (register_head)")
    return _CLASSES[name]


register_kind("ovml", "tagger.method.heads.ovml", "image-text attention over the patches, one feature per label")
register_kind("mkt", "tagger.method.heads.mkt", "global and local adapters with label prompt tuning")
register_kind("clip-decoder", "tagger.method.heads.clip_decoder",
              "a decoder layer whose queries are the labels' text embeddings")
