"""Usage ledger: one record per accepted request, batched off the hot path into SQLite (WAL)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from dataclasses import dataclass, fields
from operator import attrgetter
from pathlib import Path
from typing import Any

log = logging.getLogger("skyfleet.gateway.ledger")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
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
);
CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts);
"""


@dataclass(slots=True)
class UsageRecord:
    """What one accepted request cost and how it went."""

    request_id: str
    ts: float  # wall-clock epoch seconds when the request arrived
    tenant: str
    model: str  # public model name
    endpoint: str | None = None  # the endpoint of the last attempt
    provider: str | None = None
    tier: str | None = None
    status: int = 0
    error: str | None = None  # cause when it failed
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_estimated: bool = False  # tokens counted by the gateway (no upstream usage)
    cost_usd: float = 0.0
    ttft_s: float | None = None
    latency_s: float = 0.0
    attempts: int = 0


_COLS = [f.name for f in fields(UsageRecord)]
_ROW = attrgetter(*_COLS)
_INSERT = (
    f"INSERT OR REPLACE INTO usage ({', '.join(_COLS)}) VALUES ({', '.join('?' * len(_COLS))})"
)


def open_db(path: str | Path) -> sqlite3.Connection:
    """Open (and create) the ledger database in WAL mode."""
    conn = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(_SCHEMA)
    return conn


class Ledger:
    """Buffers records in memory; a background task writes them in batches."""

    def __init__(self, path: str | Path, flush_interval_s: float = 0.5, max_batch: int = 5000):
        self.path = Path(path)
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self._buf: list[UsageRecord] = []
        self._conn: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.written = 0

    def add(self, rec: UsageRecord) -> None:
        """Queue one record (never blocks)."""
        self._buf.append(rec)

    async def start(self) -> None:
        """Open the database and start the flush loop."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = await asyncio.to_thread(open_db, self.path)
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.flush()
            except Exception:  # keep running; the batch is retried next time
                log.exception("ledger flush failed")

    async def flush(self) -> None:
        """Write everything buffered so far."""
        async with self._lock:
            while self._buf:
                batch = self._buf[: self.max_batch]
                await asyncio.to_thread(self._write, batch)
                del self._buf[: len(batch)]
                self.written += len(batch)

    def _write(self, batch: list[UsageRecord]) -> None:
        assert self._conn is not None
        with self._conn:
            self._conn.executemany(_INSERT, [_ROW(r) for r in batch])

    async def close(self) -> None:
        """Stop the loop, flush the rest and close the database."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def summarize(
    path: str | Path, *, since: float | None, until: float | None, by: str
) -> list[dict[str, Any]]:
    """Totals grouped by `by` (tenant | provider | model | endpoint) over [since, until)."""
    if by not in ("tenant", "provider", "model", "endpoint"):
        raise ValueError(f"by must be tenant, provider, model or endpoint, got {by!r}")
    where, args = [], []
    if since is not None:
        where.append("ts >= ?")
        args.append(since)
    if until is not None:
        where.append("ts < ?")
        args.append(until)
    sql = (
        f"SELECT COALESCE({by}, '-') AS k, COUNT(*), SUM(status >= 400), SUM(prompt_tokens), "
        "SUM(completion_tokens), SUM(cost_usd), AVG(ttft_s), AVG(latency_s) FROM usage"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " GROUP BY k ORDER BY k"
    )
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(sql, args).fetchall()
    finally:
        conn.close()
    keys = ["key", "requests", "errors", "prompt_tokens", "completion_tokens", "cost_usd"]
    keys += ["mean_ttft_s", "mean_latency_s"]
    return [dict(zip(keys, r, strict=True)) for r in rows]
