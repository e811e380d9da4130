"""One gateway process's connection to the Redis that shares state (``server.redis_url``).

`RedisLink` owns the client and the up/down state that tenant limits (`shared_limits`) and
fleet state (`shared_fleet`) both use. The client fails fast: short timeouts, no retries, a
bounded pool. The first failed call of either user marks the link down: from then on no
caller touches Redis (each decides with its process's own state at once), one warning is
logged, ``skyfleet_shared_state_up`` drops to 0 and ``skyfleet_shared_state_fallbacks_total``
counts the fall-back. A background ping every `REVIVE_S` brings the link back: one line is
logged, the gauge returns to 1 and `generation` increments, so users re-publish what a
restarted (empty) Redis lost. Only calls already in flight when Redis dies wait, for at
most `OP_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, Counter, Gauge

from skyfleet.errors import SkyfleetError

if TYPE_CHECKING:
    import redis.asyncio

log = logging.getLogger("skyfleet.gateway.redis")

OP_TIMEOUT_S = 1.0  # per Redis call (and wait for a pooled connection): then fall back
CONNECT_TIMEOUT_S = 1.0
POOL_SIZE = 64  # connections per process; one Lua call takes ~0.2 ms, so callers rarely wait
STARTUP_TIMEOUT_S = 3.0
REVIVE_S = 0.5  # while down, ping this often; the first answer rejoins


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe for logs and errors)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _import_redis() -> Any:
    try:
        import redis.asyncio as aioredis
    except ImportError:  # pragma: no cover - redis is a declared extra
        raise SkyfleetError(
            "server.redis_url is set but the redis package is missing: "
            "pip install 'skyfleet[redis]'"
        ) from None
    return aioredis


def make_client(url: str) -> redis.asyncio.Redis:
    """An asyncio client that fails fast: short timeouts, no retries (callers fall back),
    and a bounded pool that makes callers wait for a connection instead of failing."""
    aioredis = _import_redis()
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=OP_TIMEOUT_S,
        socket_timeout=OP_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )
    client: redis.asyncio.Redis = aioredis.Redis.from_pool(pool)
    return client


def unreachable(url: str, err: BaseException, where: str) -> SkyfleetError:
    """The start-up error: which URL, what failed, what to do."""
    from redis.exceptions import AuthenticationError, ResponseError

    why = str(err) or type(err).__name__
    at = redact_url(url)
    if isinstance(err, AuthenticationError) or "NOAUTH" in why or "WRONGPASS" in why:
        what = f"Redis at {at} refused the credentials ({why}); put the right user and password "
        what += "in the URL (redis://user:PASSWORD@host:6379/0, e.g. from ${REDIS_PASSWORD})"
    elif isinstance(err, ResponseError):
        what = f"Redis at {at} answered with an error ({why}); check the database number "
        what += "and the server's configuration"
    else:
        if isinstance(err, TimeoutError):
            why = f"no answer within {STARTUP_TIMEOUT_S:g} s"
        what = f"cannot reach Redis at {at} ({why}); start Redis there"
    return SkyfleetError(
        f"{where}server.redis_url: {what}; or set server.redis_required: false to start "
        "without it, or remove server.redis_url to keep tenant limits and fleet state per process"
    )


def check_redis(url: str, config_path: str = "") -> None:
    """Ping Redis once (start-up check); a `SkyfleetError` naming the URL if it fails."""

    async def ping() -> None:
        client = make_client(url)
        try:
            await asyncio.wait_for(client.ping(), STARTUP_TIMEOUT_S)
        finally:
            await client.aclose()

    try:
        asyncio.run(ping())
    except SkyfleetError:
        raise
    except Exception as e:  # any failure to talk to it is "cannot reach"
        raise unreachable(url, e, f"{config_path}: " if config_path else "") from None


class RedisLink:
    """The shared Redis of one gateway process, with its up/down state and metrics."""

    def __init__(
        self,
        url: str,
        registry: CollectorRegistry,
        *,
        required: bool = True,
        revive_s: float = REVIVE_S,
    ) -> None:
        self.url = url
        self.required = required  # False: start without it (fallen back) rather than fail
        self.redis = make_client(url)
        self.revive_s = revive_s
        self.available = True  # False: every user decides locally, nobody calls Redis
        self.generation = 0  # +1 each time the link comes back
        self._started = False
        self._revive: asyncio.Task[None] | None = None
        self.up = Gauge(
            "skyfleet_shared_state_up",
            "1 while tenant limits and fleet state are shared through Redis, 0 while this "
            "process uses its own",
            registry=registry,
        )
        self.fallbacks = Counter(
            "skyfleet_shared_state_fallbacks",
            "Times this process fell back to its own state because Redis failed",
            registry=registry,
        )
        self.errors = Counter(
            "skyfleet_shared_state_errors",
            "Failed Redis calls, by operation (each decided locally instead)",
            ["op"],
            registry=registry,
        )
        self.up.set(1)

    async def start(self) -> None:
        """Check once that Redis answers: a `SkyfleetError` naming the URL if not, or, when
        not `required`, start fallen back (logged) and join once it answers."""
        if self._started:
            return
        self._started = True
        try:
            await asyncio.wait_for(self.redis.ping(), STARTUP_TIMEOUT_S)
        except Exception as e:
            if self.required:
                raise unreachable(self.url, e, "") from None
            self.failed("start", e)

    async def close(self) -> None:
        """Stop reviving and close the connections."""
        if self._revive is not None:
            self._revive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._revive
        await self.redis.aclose()

    def failed(self, op: str, err: BaseException) -> None:
        """A call failed: count it; the first failure of an outage falls back and logs."""
        self.errors.labels(op).inc()
        if not self.available:
            return
        self.available = False
        self.up.set(0)
        self.fallbacks.inc()
        log.warning(
            "shared state: Redis at %s failed (%s: %s); falling back to this process's own "
            "tenant limits, endpoint health, load and retry budget until it answers again",
            redact_url(self.url),
            type(err).__name__,
            err,
        )
        self._revive = asyncio.get_running_loop().create_task(self._revive_loop())

    async def _revive_loop(self) -> None:
        while True:
            await asyncio.sleep(self.revive_s)
            try:
                await self.redis.ping()
            except Exception:
                continue
            self.available = True
            self.generation += 1
            self.up.set(1)
            log.warning("shared state: Redis at %s answers again; sharing", redact_url(self.url))
            return
