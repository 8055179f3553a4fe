"""Export a run's tags as CSV, JSON lines or Parquet, streamed: the tags are read from the catalog in
Arrow batches and each batch is written before the next is read, so memory stays flat."""
from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..atomic import atomic_open
from ..errors import ConfigError
from ..targets import STDOUT, os_reason

__all__ = ["EXPORT_SCHEMA", "TABLE_FORMATS", "write_table_export"]

logger = logging.getLogger(__name__)

#: Columns of the table exports (one row per tag).
EXPORT_SCHEMA = pa.schema([
    ("uri", pa.string()), ("run", pa.int64()), ("label", pa.string()), ("score", pa.float32()),
    ("confidence", pa.float32()), ("positive", pa.bool_()), ("provenance", pa.string()),
])
TABLE_FORMATS = ("csv", "jsonl", "parquet")


class _Arrow:
    """One of pyarrow's batch writers (CSV, Parquet) over the export schema."""

    def __init__(self, fh: BinaryIO, writer: Any) -> None:
        self.w = writer(fh, EXPORT_SCHEMA)

    def write(self, batch: pa.RecordBatch) -> None:
        self.w.write_batch(batch)

    def close(self) -> None:
        self.w.close()


class _Jsonl:
    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh

    @staticmethod
    def _value(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    def write(self, batch: pa.RecordBatch) -> None:
        names = batch.schema.names
        cols = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
        lines = (json.dumps({n: self._value(v) for n, v in zip(names, row)}, ensure_ascii=False)
                 for row in zip(*cols))
        self.fh.write("".join(line + "\n" for line in lines).encode("utf-8"))

    def close(self) -> None:
        pass


_WRITERS: dict[str, Callable[[BinaryIO], Any]] = {"csv": partial(_Arrow, writer=pacsv.CSVWriter), "jsonl": _Jsonl,
            "parquet": partial(_Arrow, writer=pq.ParquetWriter)}


def write_table_export(batches: Iterable[pa.RecordBatch], fmt: str, out: str | os.PathLike) -> dict[str, Any]:
    """Write tag ``batches`` (columns of :data:`EXPORT_SCHEMA`) to ``out`` in ``fmt``, one batch at a
    time; the file appears only once complete (its folder must exist; the caller checks the target
    with :func:`tagger.targets.check_out_file`). Returns ``{"format", "path", "rows"}``; an
    unwritable target raises ConfigError."""
    if fmt not in _WRITERS:
        raise ConfigError(f"table export format must be one of {TABLE_FORMATS}, got {fmt!r}")
    if os.fspath(out) == STDOUT:
        rows = _write(batches, _WRITERS[fmt](sys.stdout.buffer))
        sys.stdout.buffer.flush()
        logger.info("exported %d tags to standard output (%s)", rows, fmt)
        return {"format": fmt, "path": STDOUT, "rows": rows}
    path = Path(out)
    if path.is_dir():
        raise ConfigError(f"--out {path} is a folder; give a file name for a {fmt} export")
    try:
        with atomic_open(path, parents=False) as fh:
            rows = _write(batches, _WRITERS[fmt](fh))
    except OSError as e:
        raise ConfigError(f"cannot write --out {path}: {os_reason(e)}") from e
    logger.info("exported %d tags to %s (%s)", rows, path, fmt)
    return {"format": fmt, "path": str(path), "rows": rows}


def _write(batches: Iterable[pa.RecordBatch], writer: Any) -> int:
    """Every batch through ``writer`` (cast to :data:`EXPORT_SCHEMA`), closed at the end; the rows."""
    rows = 0
    try:
        for batch in batches:
            batch = pa.RecordBatch.from_arrays(
                [batch.column(n).cast(EXPORT_SCHEMA.field(n).type) for n in EXPORT_SCHEMA.names], schema=EXPORT_SCHEMA)
            writer.write(batch)
            rows += batch.num_rows
    finally:
        writer.close()
    return rows
