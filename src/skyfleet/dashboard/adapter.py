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


def _status(row: dict[str, Any], healthy_metric: float | None) -> str:
    """up / ejected / down from whatever health fields the endpoint row carries.

    The gateway reports `healthy`, `probe_down` (active probes fail: down) and
    `ejected_for_s` (passive outlier ejection: ejected).
    """
    status = str(row.get("status", row.get("state", ""))).lower()
    if status in ("up", "healthy", "ok"):
        return "up"
    if status in ("ejected", "degraded", "probing", "half_open"):
        return "ejected"
    if status in ("down", "unhealthy", "dead"):
        return "down"
    healthy = row.get("healthy", healthy_metric)
    if healthy is None or bool(healthy):
        return "up"
    if row.get("probe_down"):
        return "down"
    return "ejected" if row.get("ejected_for_s") is not None or row.get("ejected") else "down"


def _price(row: dict[str, Any]) -> float:
    price = row.get("price_per_hour")
    if price is None and isinstance(row.get("price"), dict):
        price = row["price"].get("per_hour")
    return float(price or 0.0)


def endpoint_state(row: dict[str, Any], samples: Samples) -> EndpointState:
    """One endpoint row of the gateway's /admin/endpoints as an EndpointState."""
    name = str(row.get("name", ""))
    healthy = samples.sum_by("endpoint", *HEALTHY).get(name)
    in_flight = row.get("in_flight", samples.sum_by("endpoint", *IN_FLIGHT).get(name, 0.0))
    capacity = row.get("capacity", samples.sum_by("endpoint", *CAPACITY).get(name, 0.0))
    return EndpointState(
        name=name,
        provider=str(row.get("provider", "")),
        tier=str(row.get("tier", "primary")),
        model=str(row.get("model", "")),
        region=str(row.get("region", "") or ""),
        accelerator=str(row.get("accelerator", "") or ""),
        status=_status(row, healthy),
        in_flight=float(in_flight or 0.0),
        capacity=float(capacity or 0.0),
        price_per_hour=_price(row),
    )


def _endpoints_from_metrics(samples: Samples) -> list[dict[str, Any]]:
    """Endpoint rows rebuilt from the per-endpoint gauges when no endpoint list is given."""
    rows: dict[str, dict[str, Any]] = {}
    for gauge in samples.first(*HEALTHY):
        name = gauge.labels.get("endpoint", "")
        rows[name] = {"name": name, "provider": gauge.labels.get("provider", "")}
        rows[name]["tier"] = gauge.labels.get("tier", "primary")
    return list(rows.values())


def sample_from(
    metrics_text: str,
    endpoints: list[dict[str, Any]],
    scraped_at: float,
    ledger: LedgerTotals | None = None,
) -> GatewaySample:
    """Build one sample from /metrics text, /admin/endpoints rows and ledger totals."""
    samples = Samples.parse(metrics_text)
    rows = endpoints or _endpoints_from_metrics(samples)
    states = tuple(endpoint_state(row, samples) for row in rows)
    requests: dict[str, float] = {}
    errors: dict[str, float] = {}
    for attempts in samples.first(*ATTEMPTS):
        name = attempts.labels.get("endpoint", "")
        target = requests if attempts.labels.get("outcome", "ok") in OK_OUTCOMES else errors
        target[name] = target.get(name, 0.0) + attempts.value
    totals = ledger or LedgerTotals()
    shed = samples.sum_by("priority", *SHED)
    return GatewaySample(
        scraped_at=scraped_at,
        endpoints=states,
        requests=requests,
        errors=errors,
        ttft_sum=dict(totals.ttft_sum),
        ttft_count=dict(totals.ttft_count),
        queue=samples.sum_by("priority", *QUEUE),
        shed=shed,
        admitted=samples.sum_by("priority", *ADMITTED) or dict(totals.by_priority),
        retries=samples.total(*RETRIES) or 0.0,
        spillovers=samples.total(*SPILLOVERS) or 0.0,
        cost=totals.cost if ledger is not None else None,
    )
