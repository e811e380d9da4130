"""The gateway process, composed: fleet state, admission controller, attempt strategy, proxy,
ledger, metrics, monitor, config reload.

`build_gateway(cfg)` wires the production parts — `OverloadController` (tenant limits,
priority queue, shedding) with `AdaptiveLimits`, and `HedgedAttempts` over `PlainAttempts`;
`Gateway(...)` takes any `AdmissionController` and `AttemptStrategy` (tests pass simpler
ones). The request path itself reads in order: `handlers` → `auth` → `admission` → `proxy`
→ `attempts` (→ `hedging`) → `handlers.settle`. With `server.redis_url` one `RedisLink`
carries the shared tenant limits (`shared_limits`, inside the admission controller) and the
shared fleet state (`shared_fleet`: health, load, retry budget; off the request path).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import aiohttp
from aiohttp import web

from skyfleet.config import FleetConfig, load_config
from skyfleet.dashboard.gateway import mount as mount_dashboard
from skyfleet.errors import ConfigError
from skyfleet.gateway.admission import AdmissionController
from skyfleet.gateway.attempts import AttemptRecorder, AttemptStrategy, PlainAttempts
from skyfleet.gateway.auth import TENANT
from skyfleet.gateway.fleet import Fleet
from skyfleet.gateway.handlers import Handlers
from skyfleet.gateway.hedging import HedgedAttempts, Hedging
from skyfleet.gateway.ledger import Ledger
from skyfleet.gateway.limits import AdaptiveLimits
from skyfleet.gateway.metrics import GatewayMetrics
from skyfleet.gateway.monitor import Monitor
from skyfleet.gateway.overload import OverloadController
from skyfleet.gateway.proxy import Proxy

if TYPE_CHECKING:
    from skyfleet.gateway.redis_link import RedisLink
    from skyfleet.gateway.shared_fleet import SharedFleet

log = logging.getLogger("skyfleet.gateway")


class Upstream:
    """The shared upstream HTTP client pool, opened when the app starts."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    @property
    def opened(self) -> bool:
        """Whether the app has started (adapters can be started)."""
        return self._session is not None and not self._session.closed

    def session(self) -> aiohttp.ClientSession:
        """The open session (after `open`)."""
        assert self._session is not None, "the gateway app has not started"
        return self._session

    def open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class Configurable(Protocol):
    """A part that re-reads its settings when the config is reloaded."""

    def configure(self, cfg: FleetConfig) -> None: ...


class Gateway:
    """One gateway process."""

    def __init__(
        self,
        fleet: Fleet,
        metrics: GatewayMetrics,
        admission: AdmissionController,
        attempts: AttemptStrategy,
        upstream: Upstream,
        *,
        config_path: str | None = None,
        reloadable: tuple[Configurable, ...] = (),
        link: RedisLink | None = None,
    ) -> None:
        cfg = fleet.cfg
        self.fleet = fleet
        self.metrics = metrics
        self.admission = admission
        self.upstream = upstream
        self.proxy = Proxy(fleet, attempts, metrics)
        self.ledger = Ledger(cfg.ledger.target, cfg.ledger.flush_interval_s, cfg.ledger.max_batch)
        self.config_path = config_path
        self.reloadable = reloadable
        self.monitor: Monitor | None = None
        self.link = link  # the shared Redis (server.redis_url), owned here
        self.shared_fleet: SharedFleet | None = None
        if link is not None:
            from skyfleet.gateway.shared_fleet import SharedFleet

            budget = lambda: self.proxy.retry_budget  # noqa: E731 - replaced on reload
            self.shared_fleet = SharedFleet(fleet, link, budget, metrics.registry)
        self.active = 0  # requests in the proxy now
        self.draining = False
        self._mtime = self._stat()
        self._watch: asyncio.Task[None] | None = None
        self._cycling: asyncio.Task[None] | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        """The aiohttp application with every route."""
        app = web.Application(client_max_size=1 << 40)  # bodies are bounded while read
        Handlers(self).add_to(app)
        mount_dashboard(app, self)  # /dashboard (skyfleet.dashboard; admin key)
        app.on_response_prepare.append(self._limit_headers)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        session = self.upstream.open()
        await self.ledger.start()
        if self.link is not None:
            await self.link.start()
        await self.admission.start()
        await self.cycle_adapters()  # credentials before the first request
        self.monitor = Monitor(self.fleet, session)
        self.monitor.start()
        if self.shared_fleet is not None:
            await self.shared_fleet.start()
        if self.config_path and self.fleet.cfg.server.watch_config:
            self._watch = asyncio.create_task(self._watch_loop())

    async def _on_cleanup(self, app: web.Application) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self.monitor is not None:
            await self.monitor.stop()
        if self.shared_fleet is not None:
            await self.shared_fleet.close()
        await self.admission.close()
        if self._cycling is not None:
            await self._cycling
        fleet = self.fleet
        for adapter in [*fleet.adapters_to_close, *(e.adapter for e in fleet.endpoints.values())]:
            await adapter.close()
        if self.link is not None:
            await self.link.close()
        await self.ledger.close()
        await self.upstream.close()

    async def cycle_adapters(self) -> None:
        """Start the adapters a (re)load built; close those it replaced."""
        fleet = self.fleet
        starting, fleet.adapters_to_start = fleet.adapters_to_start, []
        closing, fleet.adapters_to_close = fleet.adapters_to_close, []
        for adapter in closing:
            await adapter.close()
        session = self.upstream.session()
        await asyncio.gather(*(adapter.start(session) for adapter in starting))

    async def _limit_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        """`x-ratelimit-*` on every response to an authenticated tenant's API call."""
        tenant = request.get(TENANT)
        if tenant is not None and "x-ratelimit-limit-requests" not in response.headers:
            response.headers.update(self.admission.limit_headers(tenant))

    # ---- config reload ---------------------------------------------------------------------
    def _stat(self) -> float:
        if not self.config_path:
            return 0.0
        try:
            return Path(self.config_path).stat().st_mtime
        except OSError:
            return 0.0

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            mtime = self._stat()
            if mtime and mtime != self._mtime:
                self._mtime = mtime
                self.reload()

    def reload(self) -> bool:
        """Re-read the config file; keep the old config if the new one is invalid."""
        if not self.config_path:
            return False
        self._mtime = self._stat()
        try:
            cfg = load_config(self.config_path)
        except ConfigError as e:
            log.error("config reload failed, keeping the current config: %s", e)
            self.metrics.reloads.labels("error").inc()
            return False
        old = self.fleet.cfg
        self.fleet.apply(cfg)
        if self.upstream.opened:
            self._cycling = asyncio.get_running_loop().create_task(self.cycle_adapters())
        self.proxy.configure(cfg, old)
        self.admission.configure(cfg)
        for part in self.reloadable:
            part.configure(cfg)
        if cfg.ledger != old.ledger:
            log.warning("ledger settings change on reload is ignored until restart")
        was, now = old.server, cfg.server
        if (was.redis_url, was.redis_required) != (now.redis_url, now.redis_required):
            log.warning("server.redis_url/redis_required change on reload is ignored until restart")
        self.metrics.reloads.labels("ok").inc()
        log.info("config reloaded: %d endpoints, %d models", len(cfg.endpoints), len(cfg.models))
        return True


def build_gateway(cfg: FleetConfig, config_path: str | None = None) -> Gateway:
    """The production gateway: overload control, adaptive limits and hedged attempts."""
    fleet = Fleet(cfg)
    metrics = GatewayMetrics(fleet)
    limits = AdaptiveLimits(fleet, metrics.registry)
    link = shared = None
    if cfg.server.redis_url is not None:
        from skyfleet.gateway.redis_link import RedisLink
        from skyfleet.gateway.shared_limits import SharedLimits

        link = RedisLink(cfg.server.redis_url, metrics.registry, required=cfg.server.redis_required)
        shared = SharedLimits(link)
    admission = OverloadController(fleet, metrics.registry, limits, shared)
    upstream = Upstream()
    plain = PlainAttempts(upstream.session, AttemptRecorder(fleet, metrics, limits))
    hedging = Hedging(cfg, metrics.registry)
    attempts = HedgedAttempts(plain, hedging, fleet)
    return Gateway(
        fleet,
        metrics,
        admission,
        attempts,
        upstream,
        config_path=config_path,
        reloadable=(hedging,),
        link=link,
    )
