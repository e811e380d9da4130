"""aiohttp routes for the dashboard: the static page, its assets and the JSON state API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from importlib import resources

from aiohttp import web

from skyfleet.dashboard.monitor import FleetMonitor
from skyfleet.dashboard.source import Source

log = logging.getLogger("skyfleet.dashboard")

MONITOR_KEY = web.AppKey("skyfleet_dashboard_monitor", FleetMonitor)
_ASSETS = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "charts.js": "text/javascript",
    "style.css": "text/css",
}
# The page loads nothing from anywhere else, and the browser enforces it.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
Authorize = Callable[[web.Request], str | None]  # None = allowed, else why not


def _asset(name: str) -> bytes:
    return resources.files("skyfleet.dashboard").joinpath("static", name).read_bytes()


async def poll(
    monitor: FleetMonitor,
    source: Source,
    interval_s: float,
    enabled: Callable[[], bool] | None = None,
) -> None:
    """Sample the source every `interval_s` forever (while `enabled()`); a failed sample is
    logged and skipped."""
    while True:
        try:
            if enabled is None or enabled():
                monitor.add(await source.sample())
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the dashboard must never take the gateway down
            log.debug("dashboard sample failed: %s", e)
        await asyncio.sleep(interval_s)


def add_dashboard_routes(
    app: web.Application,
    source: Source,
    *,
    prefix: str = "/dashboard",
    interval_s: float = 1.0,
    authorize: Authorize | None = None,
    monitor: FleetMonitor | None = None,
    enabled: Callable[[], bool] | None = None,
) -> FleetMonitor:
    """Mount the dashboard under `prefix` and sample `source` every `interval_s` while the app
    runs. `authorize(request)` guards the state API (the page itself holds no data): it
    returns None to allow, or the reason to refuse (401). While `enabled()` is false nothing
    is sampled (no cost when the dashboard is off)."""
    mon = monitor or FleetMonitor()
    app[MONITOR_KEY] = mon

    async def index(_: web.Request) -> web.Response:
        return web.Response(
            body=_asset("index.html"),
            content_type="text/html",
            charset="utf-8",
            headers=SECURITY_HEADERS,
        )

    async def redirect(_: web.Request) -> web.Response:
        raise web.HTTPFound(prefix + "/")

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _ASSETS:
            raise web.HTTPNotFound()
        return web.Response(
            body=_asset(name), content_type=_ASSETS[name], charset="utf-8", headers=SECURITY_HEADERS
        )

    async def state(request: web.Request) -> web.Response:
        denied = authorize(request) if authorize is not None else None
        if denied is not None:
            return web.json_response(
                {"error": {"message": denied, "type": "authentication_error"}}, status=401
            )
        try:
            window = min(max(float(request.query.get("window", "300")), 10.0), mon.keep_s)
        except ValueError:
            window = 300.0
        return web.json_response(mon.state(window), headers={"Cache-Control": "no-store"})

    async def sampler(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(poll(mon, source, interval_s, enabled))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.router.add_get(prefix, redirect)
    app.router.add_get(prefix + "/", index)
    app.router.add_get(prefix + "/static/{name}", static)
    app.router.add_get(prefix + "/api/state", state)
    app.cleanup_ctx.append(sampler)
    return mon
