"""Apply the DDL files of the top-level ``schemas/`` folder in order, each in one transaction, recorded
in a table. The wheel ships that folder as ``tagger/schemas/``; a checkout reads it where it is."""
from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from ..errors import CatalogError

logger = logging.getLogger(__name__)

SCHEMA_DIR_ENV = "TAGGER_SCHEMA_DIR"
_NAME = re.compile(r"^\d+_[\w.-]+\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       VARCHAR PRIMARY KEY,
    applied_at TIMESTAMP NOT NULL,
    checksum   VARCHAR
)"""


@dataclass(frozen=True)
class Migration:
    """One DDL file."""

    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def utcnow() -> datetime:
    """Naive UTC timestamp, the convention of every catalog column."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def default_schema_dir() -> Path:
    """``$TAGGER_SCHEMA_DIR`` if set, else the ``schemas/`` folder: ``tagger/schemas/`` where the package
    is installed from a wheel, the top-level ``schemas/`` beside ``tagger/`` in a checkout."""
    env = os.environ.get(SCHEMA_DIR_ENV)
    if env:
        return Path(env)
    package = Path(__file__).resolve().parents[1]
    installed = package / "schemas"
    return installed if installed.is_dir() else package.parent / "schemas"


def load_migrations(schema_dir: str | os.PathLike | None = None) -> list[Migration]:
    """The migration files (``NNN_name.sql``) of ``schema_dir`` sorted by name."""
    d = Path(schema_dir) if schema_dir is not None else default_schema_dir()
    if not d.is_dir():
        raise CatalogError(f"schema directory {d} not found (set ${SCHEMA_DIR_ENV} to the schemas/ folder)")
    files = sorted(p for p in d.iterdir() if p.is_file() and _NAME.match(p.name))
    if not files:
        raise CatalogError(f"no migration files (NNN_name.sql) in {d}")
    return [Migration(p.name, p.read_text(encoding="utf-8")) for p in files]


def applied_migrations(con: duckdb.DuckDBPyConnection) -> dict[str, str | None]:
    """name -> checksum of the migrations recorded in the catalog (empty if none)."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_name = 'schema_migrations' AND table_schema = 'main'").fetchone()
    if not exists or not exists[0]:
        return {}
    return dict(con.execute("SELECT name, checksum FROM schema_migrations").fetchall())


def apply_migrations(con: duckdb.DuckDBPyConnection,
                     schema_dir: str | os.PathLike | None = None) -> list[str]:
    """Apply every migration not yet recorded; return the names applied now.

    Each file runs in its own transaction together with its ``schema_migrations`` row, so a
    failing file leaves no trace and the next open retries it.
    """
    migrations = load_migrations(schema_dir)
    con.execute(_CREATE_TABLE)
    done = applied_migrations(con)
    known = {m.name for m in migrations}
    for name in sorted(set(done) - known):
        logger.warning("catalog has migration %s that this code does not know (newer catalog?)", name)
    applied: list[str] = []
    for m in migrations:
        if m.name in done:
            if done[m.name] and done[m.name] != m.checksum:
                logger.warning("migration %s changed since it was applied; edits are not re-run", m.name)
            continue
        con.begin()
        try:
            con.execute(m.sql)
            con.execute("INSERT INTO schema_migrations (name, applied_at, checksum) VALUES (?, ?, ?)",
                        [m.name, utcnow(), m.checksum])
            con.commit()
        except duckdb.Error as e:
            con.rollback()
            raise CatalogError(f"migration {m.name} failed and was rolled back: {e}") from e
        logger.info("applied catalog migration %s", m.name)
        applied.append(m.name)
    return applied


def pending_migrations(con: duckdb.DuckDBPyConnection,
                       schema_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of migrations that exist on disk but are not recorded in the catalog."""
    done = applied_migrations(con)
    return [m.name for m in load_migrations(schema_dir) if m.name not in done]
