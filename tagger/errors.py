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


class ExternalAccessError(ReadOnlyQueryError):
    """A query on the read-only SQL interface tried to reach files, the network, extensions or settings."""


class QueryLimitError(CatalogError):
    """A query on the read-only SQL interface ran past its time, memory or temp-space limit."""


class JobLockedError(CatalogLockedError):
    """Another job driver (encode, tag, nightly, ...) is running on the same catalog."""


class TextGenerationError(TaggerError):
    """The text generator could not produce valid sentences."""


class IncompleteCorpusError(TextGenerationError):
    """More label sets lack a sentence than the tolerance allows; nothing was saved."""

    def __init__(self, missing: int, total: int, allowed: int, detail: str = "") -> None:
        self.missing, self.total, self.allowed = missing, total, allowed
        why = f" ({detail})" if detail else ""
        super().__init__(
            f"corpus incomplete: {missing} of {total} label sets have no sentence{why}, {allowed} allowed; "
            "nothing was saved, a rerun requests only the missing ones (finished sentences are cached)")


class StoreError(TaggerError):
    """The embedding store (shards, FAISS indexes, patch codes) refused an operation."""


class ShardError(StoreError):
    """An embedding shard is malformed, inconsistent with its siblings, or unreadable."""


class UnknownIdError(StoreError, KeyError):
    """One or more requested image ids are not in the index or store."""


class SourceError(TaggerError):
    """An image source (folder, glob, manifest, URI) is missing or cannot be read."""


class WorkspaceError(TaggerError):
    """The workspace directory cannot be used (e.g. it is not writable for a job)."""


class SidecarError(TaggerError, ValueError):
    """An XMP sidecar the export leaves as it is: not XMP, or in a form it cannot merge into without
    changing what a person wrote or what their photo tool reads."""


class NoWorkspaceError(WorkspaceError):
    """A verb that works on a workspace was given a folder that holds none (no catalog)."""


class ModelChangeError(WorkspaceError):
    """A model other than the workspace's was given where it would be recorded, while the workspace holds
    what its own model made (shards, indexes, text embeddings)."""


class ClusterError(TaggerError):
    """The Ray cluster could not be reached or refused the connection."""


class SimulatedCrash(BaseException):
    """A test's crash point was reached (``--crash-after``, ``--crash-at``).

    A ``BaseException`` so that no ``except Exception`` handler absorbs it; the command-line entry
    points end the process with :data:`CRASH_EXIT_CODE` when it reaches them.
    """


#: Exit status of a process ended by :class:`SimulatedCrash`.
CRASH_EXIT_CODE = 17
