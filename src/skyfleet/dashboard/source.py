"""Where the dashboard's samples come from: the gateway's own /metrics and endpoint state."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from skyfleet.dashboard.adapter import sample_from
from skyfleet.dashboard.ledger_tail import LedgerTail
from skyfleet.dashboard.model import GatewaySample


class Source(Protocol):
    """Anything that can produce one gateway sample."""

    async def sample(self) -> GatewaySample: ...


class CallableSource:
    """In-process source: callables returning the Prometheus text and the endpoint list."""

    def __init__(
        self,
        metrics_text: Callable[[], Awaitable[str]],
        endpoints: Callable[[], Awaitable[list[dict[str, Any]]]],
        ledger: LedgerTail | None = None,
    ) -> None:
        self._metrics, self._endpoints, self.ledger = metrics_text, endpoints, ledger

    async def sample(self) -> GatewaySample:
        text = await self._metrics()
        rows = await self._endpoints()
        totals = await self.ledger.apoll() if self.ledger is not None else None
        return sample_from(text, rows, time.time(), totals)


class HttpSource:
    """Scrapes a running gateway over HTTP: GET /metrics and GET /admin/endpoints."""

    def __init__(
        self,
        base_url: str,
        admin_key: str | None,
        *,
        ledger: LedgerTail | None = None,
        timeout_s: float = 2.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.ledger = ledger
        self.admin_key = admin_key
        self.timeout_s = timeout_s
        self._session: Any = None

    async def _get(self, path: str) -> Any:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )
        headers = {"Authorization": f"Bearer {self.admin_key}"} if self.admin_key else {}
        async with self._session.get(self.base_url + path, headers=headers) as response:
            response.raise_for_status()
            if path.endswith("metrics"):
                return await response.text()
            return await response.json()

    async def sample(self) -> GatewaySample:
        text = await self._get("/metrics")
        rows = await self._get("/admin/endpoints")
        if isinstance(rows, dict):
            rows = rows.get("endpoints", rows.get("data", []))
        totals = await self.ledger.apoll() if self.ledger is not None else None
        return sample_from(str(text), list(rows), time.time(), totals)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.ledger is not None:
            self.ledger.close()
