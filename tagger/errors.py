"""Named exceptions raised by the library; the CLI and jobs turn them into one-line messages."""
from __future__ import annotations


class TaggerError(Exception):
    """Base class of every error the library raises on purpose."""


class ModelLoadError(TaggerError):
    """A model name, tag or checkpoint could not be resolved or loaded."""


class ChecksumError(ModelLoadError):
    """A shipped weight file does not match the checksum recorded beside it."""


class DatasetError(TaggerError):
    """A dataset directory is missing files or has an unexpected layout."""


class ConfigError(TaggerError):
    """A configuration value is invalid."""


class CatalogError(TaggerError):
    """The DuckDB catalog refused an operation."""


class CatalogLockedError(CatalogError):
    """Another process holds the catalog's write lock."""


class ReadOnlyQueryError(CatalogError):
    """A statement other than a read-only query was sent to the read-only SQL interface."""


class TextGenerationError(TaggerError):
    """The text generator could not produce valid sentences."""
