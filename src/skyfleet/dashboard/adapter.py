"""Map the gateway's Prometheus metrics, endpoint list and ledger totals onto a
`GatewaySample` (pure).

The gateway's metric names are listed here, in one place; each lookup takes the first name
present so that a renamed metric needs one edit.
"""

from __future__ import annotations

from typing import Any

from skyfleet.dashboard.ledger_tail import LedgerTotals
from skyfleet.dashboard.model import EndpointState, GatewaySample
from skyfleet.dashboard.promtext import Samples

ATTEMPTS = ("skyfleet_upstream_attempts_total",)
OK_OUTCOMES = frozenset({"ok", "success", "200"})
RETRIES = ("skyfleet_retries_total",)
SPILLOVERS = ("skyfleet_spillovers_total",)
IN_FLIGHT = ("skyfleet_endpoint_in_flight",)
HEALTHY = ("skyfleet_endpoint_healthy",)
CAPACITY = ("skyfleet_endpoint_capacity",)
QUEUE = ("skyfleet_queue_length", "skyfleet_queue_depth", "skyfleet_admission_queue_length")
SHED = ("skyfleet_shed_total", "skyfleet_requests_shed_total", "skyfleet_admission_shed_total")
ADMITTED = ("skyfleet_admitted_total", "skyfleet_admission_admitted_total")


def _status(ep: dict[str, Any], healthy_metric: float | None) -> str:
    """up / ejected / down from whatever health fields the endpoint row carries.

    The gateway reports `healthy`, `probe_down` (active probes fail: down) and
    `ejected_for_s` (passive outlier ejection: ejected).
    """
    st = str(ep.get("status", ep.get("state", ""))).lower()
    if st in ("up", "healthy", "ok"):
        return "up"
    if st in ("ejected", "degraded", "probing", "half_open"):
        return "ejected"
    if st in ("down", "unhealthy", "dead"):
        return "down"
    healthy = ep.get("healthy", healthy_metric)
    if healthy is None or bool(healthy):
        return "up"
    if ep.get("probe_down"):
        return "down"
    return "ejected" if ep.get("ejected_for_s") is not None or ep.get("ejected") else "down"


def _price(ep: dict[str, Any]) -> float:
    p = ep.get("price_per_hour")
    if p is None and isinstance(ep.get("price"), dict):
        p = ep["price"].get("per_hour")
    return float(p or 0.0)


def endpoint_state(ep: dict[str, Any], s: Samples) -> EndpointState:
    """One endpoint row of the gateway's /admin/endpoints as an EndpointState."""
    name = str(ep.get("name", ""))
    healthy = s.sum_by("endpoint", *HEALTHY).get(name)
    in_flight = ep.get("in_flight", s.sum_by("endpoint", *IN_FLIGHT).get(name, 0.0))
    capacity = ep.get("capacity", s.sum_by("endpoint", *CAPACITY).get(name, 0.0))
    return EndpointState(
        name=name,
        provider=str(ep.get("provider", "")),
        tier=str(ep.get("tier", "primary")),
        model=str(ep.get("model", "")),
        region=str(ep.get("region", "") or ""),
        accelerator=str(ep.get("accelerator", "") or ""),
        status=_status(ep, healthy),
        in_flight=float(in_flight or 0.0),
        capacity=float(capacity or 0.0),
        price_per_hour=_price(ep),
    )


def _endpoints_from_metrics(s: Samples) -> list[dict[str, Any]]:
    """Endpoint rows rebuilt from the per-endpoint gauges when no endpoint list is given."""
    rows: dict[str, dict[str, Any]] = {}
    for r in s.first(*HEALTHY):
        name = r.labels.get("endpoint", "")
        rows[name] = {"name": name, "provider": r.labels.get("provider", "")}
        rows[name]["tier"] = r.labels.get("tier", "primary")
    return list(rows.values())


def sample_from(
    metrics_text: str,
    endpoints: list[dict[str, Any]],
    t: float,
    ledger: LedgerTotals | None = None,
) -> GatewaySample:
    """Build one sample from /metrics text, /admin/endpoints rows and ledger totals."""
    s = Samples.parse(metrics_text)
    rows = endpoints or _endpoints_from_metrics(s)
    eps = tuple(endpoint_state(e, s) for e in rows)
    requests: dict[str, float] = {}
    errors: dict[str, float] = {}
    for r in s.first(*ATTEMPTS):
        name = r.labels.get("endpoint", "")
        target = requests if r.labels.get("outcome", "ok") in OK_OUTCOMES else errors
        target[name] = target.get(name, 0.0) + r.value
    lt = ledger or LedgerTotals()
    shed = s.sum_by("priority", *SHED)
    return GatewaySample(
        t=t,
        endpoints=eps,
        requests=requests,
        errors=errors,
        ttft_sum=dict(lt.ttft_sum),
        ttft_count=dict(lt.ttft_count),
        queue=s.sum_by("priority", *QUEUE),
        shed=shed,
        admitted=s.sum_by("priority", *ADMITTED) or dict(lt.by_priority),
        retries=s.total(*RETRIES) or 0.0,
        spillovers=s.total(*SPILLOVERS) or 0.0,
        cost=lt.cost if ledger is not None else None,
    )
