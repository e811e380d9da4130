"""Usage ledger: one record per accepted request, batched off the hot path into SQLite (WAL)
or PostgreSQL (`ledger.url`). `Ledger` is what the gateway calls; `summarize` is
`skyfleet usage`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from skyfleet.gateway.ledger.record import UsageRecord
from skyfleet.gateway.ledger.target import LedgerError, LedgerTarget, mask_url, parse_target
from skyfleet.gateway.ledger.writer import Ledger

__all__ = [
    "Ledger",
    "LedgerError",
    "LedgerTarget",
    "UsageRecord",
    "mask_url",
    "parse_target",
    "summarize",
]


def summarize(
    target: str | Path, *, since: float | None, until: float | None, by: str
) -> list[dict[str, Any]]:
    """Totals grouped by `by` (tenant | provider | model | endpoint) over [since, until)."""
    t = parse_target(target)
    if t.kind == "postgres":
        from skyfleet.gateway.ledger.postgres import summarize_postgres

        return asyncio.run(summarize_postgres(t.location, since=since, until=until, by=by))
    from skyfleet.gateway.ledger.sqlite import summarize_sqlite

    return summarize_sqlite(t.location, since=since, until=until, by=by)
