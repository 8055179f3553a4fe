"""A workspace: one directory that holds everything a deployment owns.

    catalog.duckdb                         the DuckDB catalog (one writer: the job driver)
    embeddings/<model_id>/<shard>/...      encoder output shards (atomic, done-markers)
    indexes/<model_id>/{global,patches}.*  FAISS global index and PQ patch store
    text/<corpus_id>/...                   text corpora (sentences + label sets, text embeddings)
    text/prompts-<model_id>.npz            CLIP text embeddings of class prompts (reused by later trains)
    classifiers/<classifier_id>/...        trained text-only classifiers + memory banks
    runs/<run_id>/tags-*.parquet           tag shards of a run (the driver loads them)
    cache/llm/                             LLM sentence cache
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import atomic_write_bytes
from .errors import WorkspaceError

__all__ = ["DEFAULT_MODEL", "Workspace"]

#: The model of a workspace that was never told one: the shipped toy ViT.
DEFAULT_MODEL = "toy-vit"


def _not_writable(root: Path, e: OSError) -> WorkspaceError:
    return WorkspaceError(f"workspace {root} is not writable ({e.strerror or type(e).__name__}): jobs write "
                          "the catalog, shards and indexes there; use a writable copy, or read it with "
                          "`tagger sql` and `tagger search`")


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def at(cls, root: str | Path) -> "Workspace":
        r = Path(root).expanduser().resolve()
        try:
            r.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise WorkspaceError(f"cannot create workspace {r}: {e.strerror or type(e).__name__}") from e
        return cls(r)

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.duckdb"

    def text_dir(self, corpus_id: str) -> Path:
        return self.root / "text" / corpus_id

    def text_embeddings(self, corpus_id: str, model_id: str) -> Path:
        """The cached CLIP text embeddings of corpus ``corpus_id``'s sentences under ``model_id``."""
        return self.text_dir(corpus_id) / f"embeddings-{model_id}.npy"

    def prompt_embeddings(self, model_id: str) -> Path:
        """The cached CLIP text embeddings of class prompts under ``model_id``."""
        return self.root / "text" / f"prompts-{model_id}.npz"

    def classifier_dir(self, classifier_id: str) -> Path:
        return self.root / "classifiers" / classifier_id

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def relative(self, path: str | Path) -> str:
        """``path`` as the catalog records it: relative to the workspace root when inside it (so a
        moved or copied workspace reads its own files), else absolute."""
        p = Path(path).resolve()
        return str(p.relative_to(self.root)) if p.is_relative_to(self.root) else str(p)

    @property
    def llm_cache(self) -> Path:
        return self.root / "cache" / "llm"

    @property
    def settings_path(self) -> Path:
        return self.root / "workspace.json"

    def settings(self) -> dict[str, Any]:
        """Workspace-wide settings (model name and weights), written by the first encode."""
        p = self.settings_path
        return json.loads(p.read_text()) if p.exists() else {}

    def update_settings(self, **kw: Any) -> dict[str, Any]:
        """Merge ``kw`` into the settings and write them atomically (creating the workspace).

        A model (``model``, ``pretrained``) is checked first, without loading it
        (:func:`~tagger.models.registry.check_model`), so a bad one is refused with
        :class:`~tagger.errors.ModelLoadError` and never recorded.
        """
        s = {**self.settings(), **kw}
        if "model" in kw or "pretrained" in kw:
            from .models.registry import check_model
            check_model(s.get("model", DEFAULT_MODEL), s.get("pretrained"))
        try:
            atomic_write_bytes(self.settings_path, json.dumps(s, indent=2).encode("utf-8"))
        except OSError as e:
            raise _not_writable(self.root, e) from e
        return s

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

    def model_id(self, name: str | None = None, pretrained: str | None = None) -> str:
        """The id under which the model of :meth:`model` keeps its shards, indexes and classifiers."""
        from .models.registry import model_id_for
        return model_id_for(*self.model(name, pretrained))
