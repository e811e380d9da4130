"""The gateway config for exported units: one endpoint per SkyPilot service (SkyServe
balances its replicas) and per Kubernetes Service, tiers as in docs/plan.md."""

from __future__ import annotations

from typing import Any

from skyfleet.deploy.plan_file import PlanFile
from skyfleet.deploy.units import GATEWAY_TIER, ExportOptions, Unit


def gateway_config(plan: PlanFile, units: list[Unit], opts: ExportOptions) -> dict[str, Any]:
    """A fleet config (docs/config.md) routing each public model to its units."""
    endpoints: list[dict[str, Any]] = []
    by_model: dict[str, list[str]] = {m.name: [] for m in plan.models}
    for u in sorted(units, key=lambda u: (u.entry.model, GATEWAY_TIER[u.entry.tier], u.name)):
        e = u.entry
        ep: dict[str, Any] = {
            "name": u.name if u.kind == "skypilot" else f"{u.pool}-{u.name}",
            "provider": e.provider,
            "region": e.region,
            "url": u.gateway_url(opts.namespace),
            "model": u.spec,
            "tier": GATEWAY_TIER[e.tier],
            "capacity": max(1, e.peak * e.concurrency_per_replica),
            "accelerator": e.accelerator,
            "price": {"per_hour": round(e.price_per_replica_hour * e.peak, 4)},
        }
        endpoints.append(ep)
        by_model[e.model].append(ep["name"])
    return {
        "server": {"host": "0.0.0.0", "port": 8080},
        "providers": [{"name": p} for p in sorted({str(ep["provider"]) for ep in endpoints})],
        "endpoints": endpoints,
        "models": [{"name": m, "endpoints": eps} for m, eps in by_model.items() if eps],
        "tenants": [],
    }
