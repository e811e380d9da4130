"""Background health probes (/health) and engine-metric scrapes (/metrics) per endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiohttp

from skyfleet.gateway.fleet import Fleet, LiveEndpoint

log = logging.getLogger("skyfleet.gateway.monitor")

TICK_S = 0.25


def parse_vllm_metrics(text: str) -> tuple[float | None, float | None]:
    """(sum of vllm:num_requests_waiting, max of vllm:kv_cache_usage_perc) from /metrics."""
    waiting: float | None = None
    kv: float | None = None
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        try:
            val = float(line.rsplit(" ", 1)[-1])
        except ValueError:
            continue
        if name == "vllm:num_requests_waiting":
            waiting = (waiting or 0.0) + val
        elif name in ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"):
            kv = val if kv is None else max(kv, val)
    return waiting, kv


class Monitor:
    """Probes every endpoint on its interval; ejected endpoints on probation every tick."""

    def __init__(self, fleet: Fleet, session: aiohttp.ClientSession) -> None:
        self.fleet = fleet
        self._session = session
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Start the loop."""
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop the loop and any probe in progress."""
        tasks = [t for t in (self._task, *self._running) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def _loop(self) -> None:
        while True:
            fleet = self.fleet
            now = time.monotonic()
            hc, rc = fleet.cfg.health, fleet.cfg.routing
            for endpoint in fleet.endpoints.values():
                if endpoint.adapter.probe() is None:  # a cloud API: passive ejection only
                    self._end_probation(fleet, endpoint, now)
                    continue
                if now >= endpoint.next_probe or endpoint.health.on_probation(now):
                    endpoint.next_probe = now + hc.probe_interval_s
                    self._spawn(self._probe(fleet, endpoint))
                if rc.scrape_interval_s > 0 and now >= endpoint.next_scrape:
                    endpoint.next_scrape = now + rc.scrape_interval_s
                    self._spawn(self._scrape(endpoint))
            await asyncio.sleep(TICK_S)

    @staticmethod
    def _end_probation(fleet: Fleet, endpoint: LiveEndpoint, now: float) -> None:
        """An endpoint nobody probes returns when its ejection ends (Envoy without active
        health checks); failures eject it again, for longer."""
        if endpoint.health.on_probation(now):
            endpoint.health.on_probe(True, now, fleet.cfg.health)
            endpoint.state.healthy = endpoint.health.routable(now)
            log.warning("endpoint %s is back after its ejection", endpoint.cfg.name)

    def _spawn(self, coro: object) -> None:
        t: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._running.add(t)
        t.add_done_callback(self._running.discard)

    async def _probe(self, fleet: Fleet, ep: LiveEndpoint) -> None:
        hc = fleet.cfg.health
        ok = False
        try:
            async with self._session.get(
                ep.cfg.base_url + hc.probe_path,
                headers=ep.headers,
                timeout=aiohttp.ClientTimeout(total=hc.probe_timeout_s),
            ) as r:
                await r.read()
                ok = r.status < 500
        except (aiohttp.ClientError, TimeoutError, OSError):
            ok = False
        was = ep.state.healthy
        ep.health.on_probe(ok, time.monotonic(), hc)
        ep.state.healthy = ep.health.routable(time.monotonic())
        if was != ep.state.healthy:
            log.warning("endpoint %s is %s (probe)", ep.cfg.name, "up" if ok else "down")

    async def _scrape(self, ep: LiveEndpoint) -> None:
        try:
            async with self._session.get(
                ep.cfg.base_url + "/metrics",
                headers=ep.headers,
                timeout=aiohttp.ClientTimeout(total=2.0),
            ) as r:
                if r.status != 200:
                    return
                text = await r.text()
        except (aiohttp.ClientError, TimeoutError, OSError, UnicodeDecodeError):
            return
        waiting, kv = parse_vllm_metrics(text)
        if waiting is None and kv is None:
            return
        s = ep.state
        s.num_waiting, s.kv_cache_usage, s.scraped_at = waiting, kv, time.monotonic()
