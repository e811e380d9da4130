"""The gateway's ledger: records buffered in memory, written in batches by a background task.

`add` never blocks. Every `flush_interval_s` the buffer goes to the backend in batches of at
most `max_batch`; a batch leaves the buffer only once written, so a failed flush is retried
next time and, the insert being idempotent on request id, never writes a record twice.
`close` (SIGTERM) flushes the rest; SIGKILL loses what was buffered since the last flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any, Protocol

from skyfleet.gateway.ledger.record import UsageRecord, as_row
from skyfleet.gateway.ledger.target import LedgerError, LedgerTarget, parse_target

log = logging.getLogger("skyfleet.gateway.ledger")


class Store(Protocol):
    """A ledger backend."""

    async def open(self) -> None: ...
    async def write(self, rows: list[tuple[Any, ...]]) -> None: ...
    async def close(self) -> None: ...


def open_store(target: LedgerTarget) -> Store:
    """The backend for a ledger location (PostgreSQL imports asyncpg only when used)."""
    if target.kind == "postgres":
        try:
            from skyfleet.gateway.ledger.postgres import PostgresStore
        except ImportError as e:
            raise LedgerError(
                f"ledger {target.shown}: the PostgreSQL ledger needs asyncpg "
                f"(pip install 'skyfleet[postgres]'): {e}"
            ) from None

        return PostgresStore(target.location)
    from skyfleet.gateway.ledger.sqlite import SqliteStore

    return SqliteStore(target.location)


class Ledger:
    """Buffers records in memory; a background task writes them in batches."""

    def __init__(
        self, target: str | Path, flush_interval_s: float = 0.5, max_batch: int = 5000
    ) -> None:
        self.target = parse_target(target)
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self.store = open_store(self.target)
        self._buf: list[UsageRecord] = []
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.written = 0

    @property
    def pending(self) -> int:
        """Records buffered and not yet written."""
        return len(self._buf)

    def add(self, rec: UsageRecord) -> None:
        """Queue one record (never blocks)."""
        self._buf.append(rec)

    async def start(self) -> None:
        """Open (create, migrate) the database and start the flush loop; LedgerError if not."""
        await self.store.open()
        log.info("usage ledger: %s (%s)", self.target.shown, self.target.kind)
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.flush()
            except Exception as e:  # keep running; the batch is retried next time
                log.error("ledger flush failed (%d records kept for retry): %s", self.pending, e)

    async def flush(self) -> None:
        """Write everything buffered so far."""
        async with self._lock:
            while self._buf:
                batch = self._buf[: self.max_batch]
                await self.store.write([as_row(r) for r in batch])
                del self._buf[: len(batch)]
                self.written += len(batch)

    async def close(self) -> None:
        """Stop the loop, flush the rest and close the database."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except Exception as e:
            log.error("ledger: %d usage records could not be written: %s", self.pending, e)
        await self.store.close()
