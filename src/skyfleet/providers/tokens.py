"""Access tokens refreshed in the background before they expire (Vertex OAuth2, Entra ID).

`TokenRefresher(fetch)` calls `fetch()` (an async function returning (token, lifetime_s))
once in `start()` and then again when `REFRESH_AT` of the lifetime has passed (at least
`MIN_MARGIN_S` before expiry). The request path only reads `.token`: it never waits for a
refresh. A failed refresh is retried with back-off while the old token stays in use until
it expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("skyfleet.providers")

REFRESH_AT = 0.8  # of the token's lifetime
MIN_MARGIN_S = 60.0  # refresh at least this long before expiry (when the lifetime allows)
RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)


def refresh_delay(lifetime_s: float) -> float:
    """Seconds after issue at which to refresh a token valid for `lifetime_s`."""
    delay = min(lifetime_s * REFRESH_AT, lifetime_s - MIN_MARGIN_S)
    return max(delay, lifetime_s * 0.5, 0.05)


class TokenRefresher:
    """Holds the current token of one credential and refreshes it off the hot path."""

    def __init__(self, what: str, fetch: Callable[[], Awaitable[tuple[str, float]]]) -> None:
        self.what = what  # "endpoint x: vertex service account a@b" (no secret)
        self._fetch = fetch
        self.token: str | None = None
        self.expires_at = 0.0  # time.monotonic()
        self.refreshes = 0
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def valid(self) -> str | None:
        """The token while it has not expired."""
        return self.token if self.token and time.monotonic() < self.expires_at else None

    async def _once(self) -> float:
        token, lifetime = await self._fetch()
        self.token, self.expires_at = token, time.monotonic() + lifetime
        self.refreshes += 1
        self.last_error = None
        return refresh_delay(lifetime)

    async def start(self) -> None:
        """First token now (failure logged, retried in the background), then the loop."""
        delay = 0.0
        try:
            delay = await self._once()
        except Exception as e:
            self.last_error = str(e)
            delay = RETRY_S[0]
            log.warning("%s: could not get an access token: %s", self.what, e)
        self._task = asyncio.create_task(self._loop(delay))

    async def _loop(self, delay: float) -> None:
        failures = 0
        while True:
            await asyncio.sleep(
                delay if failures == 0 else RETRY_S[min(failures, len(RETRY_S)) - 1]
            )
            try:
                delay = await self._once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as e:
                failures += 1
                self.last_error = str(e)
                log.warning("%s: token refresh failed (%d in a row): %s", self.what, failures, e)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
