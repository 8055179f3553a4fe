"""A workspace: one directory that holds everything a deployment owns, and the one place its paths
are built (every other module asks a :class:`Workspace` for a path; ``tests/test_ownership.py`` fails
on a workspace name spelled anywhere else).

    catalog.duckdb                         the DuckDB catalog (one writer: the job driver)      catalog
    workspace.json                         settings: the model and weights the workspace uses,  settings_path
                                           and its id (identity)
    embeddings/<model_id>/<shard>/...      encoder output shards (atomic, done-markers)         embeddings_dir()
    indexes/<model_id>/{global,patches}.*  FAISS global index and PQ patch store                index_dir()
    text/<corpus_id>/...                   text corpora (sentences + label sets, text embeddings) text_dir()
    text/prompts-<model_id>.npz            CLIP text embeddings of class prompts                prompt_embeddings()
    classifiers/<classifier_id>/...        trained classifiers and heads (+ memory banks)       classifier_dir()
    runs/<run_id>/tags-<shard>.parquet     tag shards of a run (the driver loads them)          run_dir(), tag_file()
    cache/llm/                             LLM sentence cache                                   llm_cache
    thumbnails/                            thumbnails and previews (report, serve)              thumbnails_dir
    report/                                the default folder of ``tagger report``              report_dir

The files inside a per-model or per-id folder are the formats of the layer that writes them (a shard's
``ids.npy``, an index's header, a classifier's ``head.json``). The workspace records its model's name
and weights (:meth:`Workspace.model`); turning them into a model id and checking them is
:mod:`tagger.models.registry`'s (``model_id_for``, ``check_model``, ``record_model``). This module is on
the ground floor: it imports only the atomic writer and the errors, so every layer may ask it for a path.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import atomic_write_bytes
from .errors import NoWorkspaceError, WorkspaceError

logger = logging.getLogger(__name__)

__all__ = ["CATALOG_FILE", "CLASSIFIERS_DIR", "DEFAULT_MODEL", "EMBEDDINGS_DIR", "INDEXES_DIR", "OWNED", "REPORT_DIR",
           "RUNS_DIR", "SETTINGS_FILE", "TEXT_DIR", "THUMBNAILS_DIR", "Workspace"]

#: The model of a workspace that was never told one: the shipped toy ViT.
DEFAULT_MODEL = "toy-vit"

CATALOG_FILE = "catalog.duckdb"
SETTINGS_FILE = "workspace.json"
EMBEDDINGS_DIR = "embeddings"
INDEXES_DIR = "indexes"
TEXT_DIR = "text"
CLASSIFIERS_DIR = "classifiers"
RUNS_DIR = "runs"
CACHE_DIR = "cache"
THUMBNAILS_DIR = "thumbnails"
REPORT_DIR = "report"
#: Every top-level entry of a workspace that belongs to tagger (a sidecar or export never lands there).
OWNED = (CATALOG_FILE, SETTINGS_FILE, EMBEDDINGS_DIR, INDEXES_DIR, TEXT_DIR, CLASSIFIERS_DIR, RUNS_DIR, CACHE_DIR,
         THUMBNAILS_DIR, REPORT_DIR)


#: What a file system or a desktop puts in any folder: not a person's files.
SYSTEM_NAMES = frozenset({".DS_Store", ".localized", "lost+found", "Thumbs.db", "desktop.ini"})


def _ours(name: str) -> bool:
    """Whether an entry of a folder without a catalog is tagger's (a catalog's lock or log left behind,
    a temp file) or the system's, so that a workspace may still be made there."""
    return name in OWNED or name in SYSTEM_NAMES or name.startswith((CATALOG_FILE, ".tagger"))


def _not_writable(root: Path, e: OSError) -> WorkspaceError:
    return WorkspaceError(f"workspace {root} is not writable ({e.strerror or type(e).__name__}): jobs write "
                          "the catalog, shards and indexes there; use a writable copy, or read it with "
                          "`tagger sql` and `tagger search`")


@dataclass(frozen=True)
class Workspace:
    root: Path

    def __post_init__(self) -> None:
        try:
            str(self.root).encode("utf-8")
        except UnicodeEncodeError:
            raise WorkspaceError(f"workspace path {os.fsencode(self.root)!r} is not UTF-8: the catalog (DuckDB) "
                                 "cannot be opened there; rename the folder or choose another") from None

    @classmethod
    def at(cls, root: str | Path) -> "Workspace":
        r = Path(root).expanduser().resolve()
        ws = cls(r)  # its path checked before anything is made
        try:
            r.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise WorkspaceError(f"cannot create workspace {r}: {e.strerror or type(e).__name__}") from e
        return ws

    def check_target(self) -> bool:
        """True when the root already is a workspace (it has a catalog); False when one may be made there
        (no such folder, an empty one, or one holding only what tagger makes). A file, or a folder
        holding files of its own (a photo folder), raises WorkspaceError: a workspace is never made
        among someone's files."""
        r = self.root
        if r.exists() and not r.is_dir():
            raise WorkspaceError(f"{r} is a file, not a folder: give a new or empty folder for the workspace")
        if self.catalog.exists():
            return True
        try:
            foreign = sorted(e.name for e in r.iterdir() if not _ours(e.name))
        except FileNotFoundError:
            return False
        except OSError as e:
            raise WorkspaceError(f"cannot read workspace folder {r}: {e.strerror or type(e).__name__}") from e
        if foreign:
            raise WorkspaceError(f"{r} holds files but no catalog ({', '.join(foreign[:3])}"
                                 f"{', ...' if len(foreign) > 3 else ''}): give a new or empty folder for the "
                                 "workspace (images are added with `tagger encode SOURCE`, they do not go inside it)")
        return False

    def require(self) -> "Workspace":
        """This workspace when its folder holds one (a catalog), else NoWorkspaceError naming how to start
        one; nothing is created either way."""
        if not self.catalog.exists():
            raise NoWorkspaceError(f"no workspace at {self.root} (start one with: tagger init "
                                   f"{shlex.quote(str(self.root))})")
        return self

    def holds_model(self, model_id: str) -> bool:
        """Whether anything here was made with ``model_id``: its encoder shards, its indexes, or text
        embeddings (what a trained classifier of that model learnt from)."""
        made = [self.embeddings_dir(model_id), self.index_dir(model_id)]
        if any(d.is_dir() and any(d.iterdir()) for d in made) or self.prompt_embeddings(model_id).exists():
            return True
        text = self.root / TEXT_DIR
        corpora = [d.name for d in text.iterdir() if d.is_dir()] if text.is_dir() else []
        return any(self.text_embeddings(c, model_id).exists() for c in corpora)

    @property
    def catalog(self) -> Path:
        return self.root / CATALOG_FILE

    def embeddings_dir(self, model_id: str) -> Path:
        """The folder of ``model_id``'s encoder shards."""
        return self.root / EMBEDDINGS_DIR / model_id

    def index_dir(self, model_id: str) -> Path:
        """The folder of ``model_id``'s global index and patch store."""
        return self.root / INDEXES_DIR / model_id

    def text_dir(self, corpus_id: str) -> Path:
        return self.root / TEXT_DIR / corpus_id

    def text_embeddings(self, corpus_id: str, model_id: str) -> Path:
        """The cached CLIP text embeddings of corpus ``corpus_id``'s sentences under ``model_id``."""
        return self.text_dir(corpus_id) / f"embeddings-{model_id}.npy"

    def prompt_embeddings(self, model_id: str) -> Path:
        """The cached CLIP text embeddings of class prompts under ``model_id``."""
        return self.root / TEXT_DIR / f"prompts-{model_id}.npz"

    def classifier_dir(self, classifier_id: str) -> Path:
        return self.root / CLASSIFIERS_DIR / classifier_id

    def train_checkpoint(self, classifier_id: str) -> Path:
        """Where a training in progress keeps its state (gone once the classifier is saved)."""
        return self.root / CLASSIFIERS_DIR / f"{classifier_id}.training.pt"

    def training_states(self) -> list[Path]:
        """The states of trainings in progress or interrupted (:meth:`train_checkpoint`), by name."""
        folder = self.root / CLASSIFIERS_DIR
        return sorted(folder.glob("*.training.pt")) if folder.is_dir() else []

    def run_dir(self, run_id: str) -> Path:
        return self.root / RUNS_DIR / run_id

    @staticmethod
    def tag_file(run_dir: str | Path, shard: str) -> Path:
        """The tags of one shard in a run's folder (:meth:`run_dir`): ``tags-<shard>.parquet``."""
        return Path(run_dir) / f"tags-{shard}.parquet"

    @staticmethod
    def readout_file(run_dir: str | Path, shard: str) -> Path:
        """The readout states of one shard's images in a run's folder: ``readout-<shard>.npz``."""
        return Path(run_dir) / f"readout-{shard}.npz"

    @property
    def thumbnails_dir(self) -> Path:
        """The thumbnail and preview cache the report and the browser share."""
        return self.root / THUMBNAILS_DIR

    @property
    def report_dir(self) -> Path:
        """Where ``tagger report`` writes its site unless told another folder."""
        return self.root / REPORT_DIR

    def relative(self, path: str | Path) -> str:
        """``path`` as the catalog records it: relative to the workspace root when inside it (so a
        moved or copied workspace reads its own files), else absolute."""
        p = Path(path).resolve()
        return str(p.relative_to(self.root)) if p.is_relative_to(self.root) else str(p)

    @property
    def llm_cache(self) -> Path:
        return self.root / CACHE_DIR / "llm"

    @property
    def settings_path(self) -> Path:
        return self.root / SETTINGS_FILE

    def settings(self) -> dict[str, Any]:
        """Workspace-wide settings (model name and weights), written by the first encode."""
        p = self.settings_path
        if not p.exists():
            return {}
        try:
            s = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            s, why = None, getattr(e, "strerror", None) or str(e) or type(e).__name__
        else:
            bad = [k for k in ("model", "pretrained") if isinstance(s, dict) and not isinstance(s.get(k), (str, type(None)))]
            why = (f"holds a JSON {type(s).__name__}, not an object" if not isinstance(s, dict)
                   else f"{', '.join(bad)} is not text" if bad else "")
        if why:
            raise WorkspaceError(f"workspace settings {p} cannot be read: {why}; restore the file, or delete it "
                                 "and give --model to the next encode (it records the model the images were "
                                 "encoded with)")
        return s

    def update_settings(self, **kw: Any) -> dict[str, Any]:
        """Merge ``kw`` into the settings and write them atomically (creating the workspace).

        A model is recorded through :func:`tagger.models.registry.record_model`, which checks it first.
        """
        s = {**self.settings(), **kw}
        s.setdefault("id", self._path_id())
        try:
            atomic_write_bytes(self.settings_path, json.dumps(s, indent=2).encode("utf-8"))
        except OSError as e:
            raise _not_writable(self.root, e) from e
        return s

    def identity(self) -> str:
        """The workspace's id, kept in its settings (made from the folder's real path at the first
        settings write, or the first call here): what it writes into a person's files (a sidecar's
        record) is marked with it, so another workspace leaves it alone. A moved workspace keeps its
        id; one rebuilt at the same path gets the same one; one whose settings cannot be read or written
        uses it unkept (the settings file is left as it is)."""
        try:
            ident = self.settings().get("id")
            if isinstance(ident, str) and ident.strip():
                return ident.strip()
            return str(self.update_settings()["id"])
        except WorkspaceError as e:  # unreadable or unwritable settings: never a reason to refuse an export
            logger.warning("workspace id not kept (%s)", e)
            return self._path_id()

    def _path_id(self) -> str:
        return hashlib.sha256(os.fsencode(os.path.realpath(self.root))).hexdigest()[:16]

    def check_writable(self) -> None:
        """Raise WorkspaceError unless a file can be created in the (existing) workspace folder."""
        if not self.root.is_dir():
            return  # created by the job itself
        try:
            with tempfile.TemporaryFile(dir=self.root):
                pass
        except OSError as e:
            raise _not_writable(self.root, e) from e

    def model(self, name: str | None = None, pretrained: str | None = None) -> tuple[str, str | None]:
        """The model to use: explicit arguments win, else the workspace's, else the toy ViT.

        ``pretrained`` alone keeps the workspace's architecture with those weights.
        """
        s = self.settings()
        if name:
            return name, pretrained
        return s.get("model", DEFAULT_MODEL), pretrained or s.get("pretrained")
