"""Exports of a tag run in the formats other tools read: XMP sidecars for photo tools (merged into a
person's own, :mod:`tagger.export.xmp`), and CSV, JSON lines or Parquet tables (one row per tag:
uri, run, label, score, confidence, positive, provenance), streamed from the catalog in batches.
Every file written outside the workspace goes through :mod:`tagger.targets`."""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import atomic_open
from ..errors import ConfigError
from ..targets import STDOUT, check_out_dir, check_out_file
from ..workspace import Workspace
from .sidecars import NAMINGS, SidecarPlan, sidecar_path, write_sidecars
from .tables import EXPORT_SCHEMA, TABLE_FORMATS, write_table_export
from .xmp import MachineTag, iso_utc, label_paths, merge_sidecar
from .xmpdoc import xml_unsafe

if TYPE_CHECKING:
    from ..catalog import Catalog

__all__ = ["EXPORT_FORMATS", "EXPORT_SCHEMA", "NAMINGS", "TABLE_FORMATS", "ExportOptions", "MachineTag",
           "default_out", "export_run", "label_paths", "merge_sidecar", "sidecar_path", "write_sidecars",
           "write_table_export"]

logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("xmp", *TABLE_FORMATS)
#: The file in a mirror folder that records the source root its layout is relative to.
MIRROR_MARKER = ".tagger-mirror.json"


@dataclass(frozen=True)
class ExportOptions:
    """What an export writes where (:func:`export_run`)."""

    out: str | os.PathLike | None = None
    force: bool = False
    positive_only: bool = False
    mirror: str | os.PathLike | None = None
    source_root: str | os.PathLike | None = None
    naming: str = NAMINGS[0]
    root_label: str | None = None
    workspace: str | os.PathLike | None = None
    batch_rows: int = 8192
    crash_after: int | None = None


def default_out(fmt: str, run_id: int) -> Path:
    """The table file written when no ``--out`` is given: ``tags-run<N>.<fmt>`` in the working folder."""
    return Path(f"tags-run{run_id}.{fmt}")


def _images(cat: "Catalog", run_id: int) -> Iterator[tuple[str, list[MachineTag]]]:
    from ..catalog.keywords import sidecar_batches
    for batch in sidecar_batches(cat, run_id):
        for uri, tags in zip(batch.column("uri").to_pylist(), batch.column("tags").to_pylist()):
            yield uri, [MachineTag(t["label"], t["confidence"], t["provenance"],
                                   None if t["decided_at"] is None else iso_utc(t["decided_at"])) for t in tags]


def _recorded_root(marker: Path) -> str | None:
    """The source root an earlier export recorded in ``marker``; None, with a warning, for a marker that
    is not JSON or records no absolute folder name (it is then written anew)."""
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        logger.warning("ignoring %s: %s", marker, e)
        return None
    root = data.get("source_root") if isinstance(data, dict) else None
    if not isinstance(root, str) or not os.path.isabs(root) or "\0" in root:
        logger.warning("ignoring %s: it records no absolute source_root folder (%.80r)", marker, data)
        return None
    return root


def _mirror_root(cat: "Catalog", run_id: int, mirror: Path, given: str | os.PathLike | None) -> str | None:
    """The source root of a mirror: ``given``, else the one recorded in the mirror folder by an earlier
    export, else the deepest folder common to the run's local images; recorded in the folder."""
    from ..catalog.keywords import run_common_folder
    marker = mirror / MIRROR_MARKER
    recorded = _recorded_root(marker)
    root = os.path.abspath(os.fspath(given)) if given is not None else recorded or run_common_folder(cat, run_id)
    if root is not None and root != recorded:
        try:
            with atomic_open(marker, parents=False) as fh:
                fh.write(json.dumps({"source_root": root}, indent=1).encode("utf-8"))
        except OSError as e:
            raise ConfigError(f"cannot write into --mirror {mirror}: {(e.strerror or str(e)).lower()}") from e
    return root


def _export_xmp(cat: "Catalog", run_id: int, opts: ExportOptions) -> dict[str, Any]:
    if opts.naming not in NAMINGS:
        raise ConfigError(f"--sidecar-name must be one of {', '.join(NAMINGS)}, got {opts.naming!r}")
    if opts.root_label is not None and (not opts.root_label.strip() or "|" in opts.root_label
                                        or "/" in opts.root_label or xml_unsafe(opts.root_label)
                                        or any(c.isspace() and c != " " for c in opts.root_label)):
        raise ConfigError(f"--root must be a non-empty name without '|', '/', tabs, line breaks or characters XML "
                          f"cannot hold, got {opts.root_label!r}")
    if opts.source_root is not None and opts.mirror is None:
        raise ConfigError("--source-root is for --mirror DIR")
    if opts.source_root is not None and not os.path.isdir(os.path.expanduser(os.fspath(opts.source_root))):
        raise ConfigError(f"--source-root {opts.source_root} is not a folder: give the folder the photos are under "
                          "(nothing was written)")
    mirror = root = None
    if opts.mirror is not None:
        mirror = check_out_dir(opts.mirror, opts.workspace, option="--mirror")
        root = _mirror_root(cat, run_id, mirror, opts.source_root)
    plan = SidecarPlan(opts.naming, mirror, root, Path(opts.workspace) if opts.workspace else None,
                       cat.active_hierarchy() if hasattr(cat, "active_hierarchy") else {},
                       opts.root_label.strip() if opts.root_label else None,
                       Workspace.at(Path(opts.workspace)).identity() if opts.workspace else None)
    summary = write_sidecars(_images(cat, run_id), plan, run=run_id, crash_after=opts.crash_after)
    return {"format": "xmp", "run": run_id, "naming": opts.naming, "mirror": str(mirror) if mirror else None,
            "source_root": root, **summary}


#: File name endings that say a table format: a --out name ending in another format's is refused.
_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
             ".parquet": "parquet", ".pq": "parquet", ".xmp": "xmp"}


def _check_suffix(fmt: str, out: str | os.PathLike | None) -> None:
    """ConfigError when ``out``'s name says another format than ``fmt`` (``x.parquet`` for csv): a reader
    that trusts the name would fail on the file. Names without a known ending are taken as given."""
    if out is None or os.fspath(out) == STDOUT:
        return
    said = _SUFFIXES.get(Path(os.fspath(out)).suffix.lower())
    if said is not None and said != fmt:
        raise ConfigError(f"--out {os.fspath(out)} is named as a {said} file, but --format is {fmt}: "
                          f"give --format {said} or a name ending in .{fmt}")


def export_run(cat: "Catalog", fmt: str, *, run_id: int | None = None,
               options: ExportOptions | None = None) -> dict[str, Any]:
    """Export run ``run_id`` (default: the current one) as ``fmt`` (:data:`EXPORT_FORMATS`).

    Tables go to ``options.out`` (default :func:`default_out`), a new file unless ``force``, never
    inside ``options.workspace``; ``positive_only`` keeps positive tags only. XMP merges each image's
    positive labels into its sidecar (see :mod:`tagger.export.sidecars`). Returns a summary; unknown
    runs, formats or refused targets raise CatalogError / ConfigError.
    """
    opts = options or ExportOptions()
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    run = cat.tag_run(run_id)
    if fmt == "xmp":
        if opts.out is not None:
            raise ConfigError("--out is for table formats; XMP sidecars go beside the images, or under --mirror DIR")
        return _export_xmp(cat, run.run_id, opts)
    for name, value in (("--mirror", opts.mirror), ("--source-root", opts.source_root), ("--root", opts.root_label)):
        if value is not None:
            raise ConfigError(f"{name} is for --format xmp")
    target = STDOUT if opts.out is not None and os.fspath(opts.out) == STDOUT else \
        check_out_file(opts.out if opts.out is not None else default_out(fmt, run.run_id), opts.workspace,
                       force=opts.force)
    _check_suffix(fmt, opts.out)  # after the target's own refusals (the workspace, an existing file...)
    _check_suffix(fmt, target)  # the file a link given as --out leads to
    batches = cat.tag_batches(run.run_id, positive_only=opts.positive_only, batch_rows=opts.batch_rows)
    return {"run": run.run_id, **write_table_export(batches, fmt, target)}
