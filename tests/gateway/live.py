"""The in-process harness gateway served from a background thread's event loop, so that
synchronous hypothesis tests can send it thousands of requests without restarting it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections import Counter
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from skyfleet.drill.fuzz import Conformance

from .harness import FakeUpstream, serving

JUDGE = Conformance()

T = TypeVar("T")


class LiveGateway:
    """`serving(upstreams, tmp, **config)` running until `close()`; `judge` checks answers
    and keeps their statuses and request ids."""

    def __init__(self, upstreams: Sequence[FakeUpstream], tmp: Path, **config: Any) -> None:
        self.upstreams = upstreams
        self.tmp = tmp
        self.statuses: Counter[int] = Counter()
        self.accepted: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._serving = serving(upstreams, tmp, **config)
        self.client, self.gateway = self._run(self._serving.__aenter__())

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def request(
        self, method: str, path: str, headers: dict[str, str], data: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request; (status, lower-cased headers, body)."""

        async def send() -> tuple[int, dict[str, str], bytes]:
            async with self.client.request(
                method, path, headers=headers, data=data, skip_auto_headers=("Content-Type",)
            ) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, await r.read()

        return self._run(send())

    def judge(self, path: str, status: int, headers: dict[str, str], body: bytes) -> None:
        """Assert no 5xx of the gateway's own and OpenAI-shaped errors; note the answer."""
        problems = JUDGE.problems(
            path.removeprefix("/v1"), None, status, headers, body, schemas=False
        )
        assert not problems, problems
        self.statuses[status] += 1
        if "x-request-id" in headers:
            self.accepted.append(headers["x-request-id"])

    def ledger_ids(self) -> list[str]:
        """The request ids in the ledger (after `close()`, which flushes it)."""
        conn = sqlite3.connect(self.tmp / "usage.sqlite")
        try:
            return [r[0] for r in conn.execute("SELECT request_id FROM usage")]
        finally:
            conn.close()

    def metrics(self) -> str:
        async def render() -> str:
            return self.gateway.metrics.render().decode()

        return self._run(render())

    def close(self) -> None:
        try:
            self._run(self._serving.__aexit__(None, None, None))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()
