"""SQLite (WAL) ledger backend: one file, written in a worker thread."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from skyfleet.gateway.ledger.record import COLUMNS
from skyfleet.gateway.ledger.schema import SCHEMA_VERSION, VERSION_TABLE, check_version
from skyfleet.gateway.ledger.summary import as_dicts, summary_query
from skyfleet.gateway.ledger.target import LedgerError

# MIGRATIONS[v] takes a version v-1 ledger to version v.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE IF NOT EXISTS usage (
            request_id TEXT PRIMARY KEY,
            ts REAL NOT NULL,
            tenant TEXT NOT NULL,
            model TEXT NOT NULL,
            endpoint TEXT,
            provider TEXT,
            tier TEXT,
            status INTEGER NOT NULL,
            error TEXT,
            stream INTEGER NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            usage_estimated INTEGER NOT NULL,
            cost_usd REAL NOT NULL,
            ttft_s REAL,
            latency_s REAL NOT NULL,
            attempts INTEGER NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts)",
    ],
    2: ["ALTER TABLE usage ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0"],
}
_INSERT = (
    f"INSERT OR IGNORE INTO usage ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
)


def migrate(conn: sqlite3.Connection, where: str) -> int:
    """Bring the schema to SCHEMA_VERSION (refusing a newer one); returns the version found."""
    conn.execute("BEGIN IMMEDIATE")  # one migrating process at a time
    try:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version INTEGER NOT NULL)")
        row = conn.execute(f"SELECT COALESCE(MAX(version), 0) FROM {VERSION_TABLE}").fetchone()
        found = int(row[0])
        check_version(found, where)
        for v in range(found + 1, SCHEMA_VERSION + 1):
            for stmt in MIGRATIONS[v]:
                conn.execute(stmt)
            conn.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (?)", (v,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found


def open_db(path: str | Path) -> sqlite3.Connection:
    """Open (and create or migrate) the ledger database in WAL mode."""
    try:
        conn = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False)
        conn.isolation_level = None  # explicit transactions only
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error as e:
        raise LedgerError(f"ledger {path}: cannot open SQLite database: {e}") from None
    try:
        migrate(conn, str(path))
    except sqlite3.Error as e:
        conn.close()
        raise LedgerError(f"ledger {path}: cannot create or migrate the schema: {e}") from None
    except BaseException:
        conn.close()
        raise
    return conn


class SqliteStore:
    """Writes batches to one SQLite file in a worker thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Create the directory and the database; migrate it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = await asyncio.to_thread(open_db, self.path)

    async def write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert a batch in one transaction; rows already present are skipped."""
        await asyncio.to_thread(self._write, rows)

    def _write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        assert self._conn is not None
        self._conn.execute("BEGIN")
        try:
            self._conn.executemany(_INSERT, rows)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    async def close(self) -> None:
        """Close the file."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def summarize_sqlite(
    path: str | Path, *, since: float | None, until: float | None, by: str
) -> list[dict[str, Any]]:
    """Totals grouped by `by` over [since, until), read-only."""
    sql, args = summary_query(by, since, until, "?")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return as_dicts(conn.execute(sql, args).fetchall())
    finally:
        conn.close()
