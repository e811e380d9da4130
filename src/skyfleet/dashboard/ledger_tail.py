"""Follow the gateway's usage ledger (SQLite, WAL) for per-provider TTFT, cost and priority.

The gateway's Prometheus metrics label TTFT by model only; the ledger has one row per
accepted request with provider, TTFT, cost and tenant, so the dashboard reads new rows
(`rowid` greater than the last seen) once per sample, read-only, in a worker thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

_QUERY = (
    "SELECT rowid, provider, tenant, status, ttft_s, cost_usd FROM usage "
    "WHERE rowid > ? ORDER BY rowid LIMIT 20000"
)


@dataclass
class LedgerTotals:
    """Running totals since the tail started (cumulative, like Prometheus counters)."""

    ttft_sum: dict[str, float] = field(default_factory=dict)
    ttft_count: dict[str, float] = field(default_factory=dict)
    by_priority: dict[str, float] = field(default_factory=dict)
    failed_by_priority: dict[str, float] = field(default_factory=dict)
    cost: float = 0.0
    rows: int = 0


class LedgerTail:
    """Reads rows appended to the ledger since the last call."""

    def __init__(self, path: str | Path, tenant_priority: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        self.tenant_priority = tenant_priority or {}
        self.totals = LedgerTotals()
        self._last = 0
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection | None:
        if self._conn is None:
            if not self.path.exists():
                return None
            uri = f"file:{self.path.resolve()}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, timeout=1.0, check_same_thread=False)
        return self._conn

    def poll(self) -> LedgerTotals:
        """Fold new rows into the totals (blocking; see `apoll`)."""
        try:
            conn = self._connect()
            if conn is None:
                return self.totals
            rows = conn.execute(_QUERY, (self._last,)).fetchall()
        except sqlite3.Error:
            self.close()
            return self.totals
        totals = self.totals
        for rowid, provider, tenant, status, ttft, cost in rows:
            self._last = max(self._last, int(rowid))
            totals.rows += 1
            priority = self.tenant_priority.get(str(tenant), "standard")
            totals.by_priority[priority] = totals.by_priority.get(priority, 0.0) + 1
            if int(status) != 200:
                failed = totals.failed_by_priority
                failed[priority] = failed.get(priority, 0.0) + 1
            totals.cost += float(cost or 0.0)
            if ttft is not None and provider:
                name = str(provider)
                totals.ttft_sum[name] = totals.ttft_sum.get(name, 0.0) + float(ttft)
                totals.ttft_count[name] = totals.ttft_count.get(name, 0.0) + 1
        return totals

    async def apoll(self) -> LedgerTotals:
        return await asyncio.to_thread(self.poll)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
