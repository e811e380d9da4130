"""PostgreSQL ledger backend (asyncpg): one INSERT … SELECT unnest(…) per batch, idempotent
on request id (ON CONFLICT DO NOTHING), so a retried flush never writes a record twice."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from skyfleet.gateway.ledger.record import COLUMNS
from skyfleet.gateway.ledger.schema import SCHEMA_VERSION, VERSION_TABLE, check_version
from skyfleet.gateway.ledger.summary import as_dicts, summary_query
from skyfleet.gateway.ledger.target import LedgerError, mask_url

CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 30.0
_LOCK_ID = 0x5F1EE7  # pg_advisory_xact_lock key: one replica migrates at a time

_TYPES = {
    "request_id": "text",
    "ts": "double precision",
    "tenant": "text",
    "model": "text",
    "endpoint": "text",
    "provider": "text",
    "tier": "text",
    "status": "integer",
    "error": "text",
    "stream": "boolean",
    "prompt_tokens": "integer",
    "completion_tokens": "integer",
    "usage_estimated": "boolean",
    "cost_usd": "double precision",
    "ttft_s": "double precision",
    "latency_s": "double precision",
    "attempts": "integer",
    "cached_tokens": "integer",
}
_V2 = {"cached_tokens"}  # columns added by migration 2
_NULLABLE = {"endpoint", "provider", "tier", "error", "ttft_s"}
assert list(_TYPES) == COLUMNS, "keep _TYPES in UsageRecord field order"

# MIGRATIONS[v] takes a version v-1 ledger to version v.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS usage (\n"
        + ",\n".join(
            f"  {c} {t}{'' if c in _NULLABLE else ' NOT NULL'}"
            + (" PRIMARY KEY" if c == "request_id" else "")
            for c, t in _TYPES.items()
            if c not in _V2
        )
        + "\n)",
        "CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts)",
    ],
    2: ["ALTER TABLE usage ADD COLUMN IF NOT EXISTS cached_tokens integer NOT NULL DEFAULT 0"],
}
INSERT = (
    f"INSERT INTO usage ({', '.join(COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"${i}::{t}[]" for i, t in enumerate(_TYPES.values(), 1))
    + ") ON CONFLICT (request_id) DO NOTHING"
)


_CONNECT_ERRORS = (OSError, TimeoutError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError)


def _why(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT_S:g} s"
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


async def migrate(conn: asyncpg.Connection[Any] | PoolConnectionProxy[Any], where: str) -> int:
    """Bring the schema to SCHEMA_VERSION (refusing a newer one); returns the version found."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} ("
            "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        found = int(await conn.fetchval(f"SELECT COALESCE(MAX(version), 0) FROM {VERSION_TABLE}"))
        check_version(found, where)
        for v in range(found + 1, SCHEMA_VERSION + 1):
            for stmt in MIGRATIONS[v]:
                await conn.execute(stmt)
            await conn.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES ($1)", v)
    return found


class PostgresStore:
    """A small asyncpg pool; batches go in as one statement each."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.shown = mask_url(url)
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        """Connect and migrate; a clear LedgerError (masked URL, cause) when either fails."""
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=2,
                timeout=CONNECT_TIMEOUT_S,
                command_timeout=COMMAND_TIMEOUT_S,
            )
        except _CONNECT_ERRORS as e:
            raise LedgerError(
                f"ledger {self.shown}: cannot connect to PostgreSQL: {_why(e)}"
            ) from None
        try:
            async with self._pool.acquire() as conn:
                await migrate(conn, self.shown)
        except asyncpg.PostgresError as e:
            await self.close()
            raise LedgerError(
                f"ledger {self.shown}: cannot create or migrate the schema: {_why(e)}"
            ) from None
        except BaseException:
            await self.close()
            raise

    async def write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert a batch in one statement; request ids already present are skipped."""
        assert self._pool is not None
        if rows:
            await self._pool.execute(INSERT, *(list(c) for c in zip(*rows, strict=True)))

    async def close(self) -> None:
        """Close the pool (waits briefly for a running statement)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 10.0)
            except TimeoutError:
                pool.terminate()


async def summarize_postgres(
    url: str, *, since: float | None, until: float | None, by: str
) -> list[dict[str, Any]]:
    """Totals grouped by `by` over [since, until)."""
    sql, args = summary_query(by, since, until, "$")
    shown = mask_url(url)
    try:
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
    except _CONNECT_ERRORS as e:
        raise LedgerError(f"ledger {shown}: cannot connect to PostgreSQL: {_why(e)}") from None
    try:
        rows = await conn.fetch(sql, *args)
    except asyncpg.UndefinedTableError:
        raise LedgerError(
            f"ledger {shown}: no usage table (no gateway has written to this database yet)"
        ) from None
    finally:
        await conn.close()
    return as_dicts([tuple(r) for r in rows])
