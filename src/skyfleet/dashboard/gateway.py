"""Mount the dashboard on the gateway's own aiohttp app (in-process: no HTTP to itself).

The gateway calls `mount(app, gateway)` once in its app factory. Samples come from the
gateway's metrics registry, its live endpoint table and its usage ledger file; the state API
takes the same admin keys as `/admin/*`.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from skyfleet.dashboard.ledger_tail import LedgerTail
from skyfleet.dashboard.monitor import FleetMonitor
from skyfleet.dashboard.routes import add_dashboard_routes
from skyfleet.dashboard.source import CallableSource


def endpoint_rows(gateway: Any) -> list[dict[str, Any]]:
    """The gateway's live endpoints as dashboard rows (the `/admin/endpoints` rows)."""
    from skyfleet.gateway.handlers import endpoint_row

    now = time.monotonic()
    return [endpoint_row(endpoint, now) for endpoint in gateway.fleet.endpoints.values()]


def mount(app: web.Application, gateway: Any, *, interval_s: float = 1.0) -> FleetMonitor:
    """Serve the dashboard at /dashboard on the gateway's app."""
    config = gateway.fleet.cfg
    tenants = {tenant.name: tenant.priority for tenant in config.tenants}
    sqlite = config.ledger.sqlite_path  # the PostgreSQL ledger is not tailed
    ledger = LedgerTail(sqlite, tenants) if sqlite is not None else None

    async def metrics_text() -> str:
        body: bytes = gateway.metrics.render()
        return body.decode()

    async def endpoints() -> list[dict[str, Any]]:
        return endpoint_rows(gateway)

    def authorize(request: web.Request) -> str | None:
        from skyfleet.gateway.auth import is_admin

        if not gateway.fleet.admin_hashes:
            return "dashboard disabled: set server.admin_api_keys in the fleet config"
        if not is_admin(gateway.fleet, request):
            return "the dashboard needs an admin API key: open /dashboard/#key=<admin key>"
        return None

    return add_dashboard_routes(
        app,
        CallableSource(metrics_text, endpoints, ledger),
        interval_s=interval_s,
        authorize=authorize,
        enabled=lambda: bool(gateway.fleet.admin_hashes),
    )
