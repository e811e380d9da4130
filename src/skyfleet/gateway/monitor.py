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
    kv_cache: float | None = None
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        try:
            value = float(line.rsplit(" ", 1)[-1])
        except ValueError:
            continue
        if name == "vllm:num_requests_waiting":
            waiting = (waiting or 0.0) + value
        elif name in ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"):
            kv_cache = value if kv_cache is None else max(kv_cache, value)
    return waiting, kv_cache


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
        tasks = [task for task in (self._task, *self._running) if task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            fleet = self.fleet
            now = time.monotonic()
            health_cfg, routing_cfg = fleet.cfg.health, fleet.cfg.routing
            for endpoint in fleet.endpoints.values():
                if endpoint.adapter.probe() is None:  # a cloud API: passive ejection only
                    self._end_probation(fleet, endpoint, now)
                    continue
                if now >= endpoint.next_probe or endpoint.health.on_probation(now):
                    endpoint.next_probe = now + health_cfg.probe_interval_s
                    self._spawn(self._probe(fleet, endpoint))
                if routing_cfg.scrape_interval_s > 0 and now >= endpoint.next_scrape:
                    endpoint.next_scrape = now + routing_cfg.scrape_interval_s
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
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _probe(self, fleet: Fleet, endpoint: LiveEndpoint) -> None:
        health_cfg = fleet.cfg.health
        ok = False
        try:
            async with self._session.get(
                endpoint.cfg.base_url + health_cfg.probe_path,
                headers=endpoint.headers,
                timeout=aiohttp.ClientTimeout(total=health_cfg.probe_timeout_s),
            ) as answer:
                await answer.read()
                ok = answer.status < 500
        except (aiohttp.ClientError, TimeoutError, OSError):
            ok = False
        was = endpoint.state.healthy
        endpoint.health.on_probe(ok, time.monotonic(), health_cfg)
        endpoint.state.healthy = endpoint.health.routable(time.monotonic())
        if was != endpoint.state.healthy:
            log.warning("endpoint %s is %s (probe)", endpoint.cfg.name, "up" if ok else "down")

    async def _scrape(self, endpoint: LiveEndpoint) -> None:
        try:
            async with self._session.get(
                endpoint.cfg.base_url + "/metrics",
                headers=endpoint.headers,
                timeout=aiohttp.ClientTimeout(total=2.0),
            ) as answer:
                if answer.status != 200:
                    return
                text = await answer.text()
        except (aiohttp.ClientError, TimeoutError, OSError, UnicodeDecodeError):
            return
        waiting, kv_cache = parse_vllm_metrics(text)
        if waiting is None and kv_cache is None:
            return
        state = endpoint.state
        state.num_waiting = waiting
        state.kv_cache_usage = kv_cache
        state.scraped_at = time.monotonic()
