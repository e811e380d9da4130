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
    """The gateway's live endpoints as dashboard rows (config + state + health)."""
    now = time.monotonic()
    rows = []
    for ep in gateway.fleet.endpoints.values():
        s, h, cfg = ep.state, ep.health, ep.cfg
        ejected_until = getattr(h, "ejected_until", None)
        rows.append(
            {
                "name": s.name,
                "provider": s.provider,
                "region": s.region,
                "tier": s.tier,
                "model": s.model,
                "accelerator": getattr(cfg, "accelerator", None) or "",
                "capacity": s.capacity,
                "in_flight": s.in_flight,
                "healthy": s.healthy,
                "probe_down": getattr(h, "probe_down", False),
                "ejected_for_s": None if ejected_until is None else max(0.0, ejected_until - now),
                "price_per_hour": getattr(s, "price_per_hour", None) or 0.0,
            }
        )
    return rows


def _bearer(request: web.Request) -> str | None:
    h = request.headers.get("Authorization", "")
    return h[7:].strip() if h.lower().startswith("bearer ") else None


def mount(app: web.Application, gateway: Any, *, interval_s: float = 1.0) -> FleetMonitor:
    """Serve the dashboard at /dashboard on the gateway's app."""
    cfg = gateway.fleet.cfg
    tenants = {t.name: t.priority for t in cfg.tenants}
    sqlite = cfg.ledger.sqlite_path  # the PostgreSQL ledger is not tailed
    ledger = LedgerTail(sqlite, tenants) if sqlite is not None else None

    async def metrics_text() -> str:
        body: bytes = gateway.metrics.render()
        return body.decode()

    async def endpoints() -> list[dict[str, Any]]:
        return endpoint_rows(gateway)

    def authorize(request: web.Request) -> str | None:
        fleet = gateway.fleet
        if not fleet.admin_hashes:
            return "dashboard disabled: set server.admin_api_keys in the fleet config"
        key = _bearer(request)
        if key is None or not fleet.is_admin(key):
            return "the dashboard needs an admin API key: open /dashboard/#key=<admin key>"
        return None

    return add_dashboard_routes(
        app,
        CallableSource(metrics_text, endpoints, ledger),
        interval_s=interval_s,
        authorize=authorize,
        enabled=lambda: bool(gateway.fleet.admin_hashes),
    )
