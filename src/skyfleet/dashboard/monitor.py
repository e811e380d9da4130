"""A small in-memory time series of gateway samples, turned into rates and a JSON state.

Pure: samples go in (`add`), a JSON-ready dict comes out (`state`). Counters are cumulative
in the samples; the monitor differences consecutive samples, so a gateway restart (counter
reset) reads as zero for one interval, never as a negative rate.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from skyfleet.dashboard.model import PRIORITIES, TIERS, EndpointState, GatewaySample


@dataclass(frozen=True)
class HealthEvent:
    """An endpoint's status changed between two samples."""

    seen_at: float  # the scrape time of the sample that showed the change
    endpoint: str
    provider: str
    before: str
    after: str


def _delta(new: float, old: float) -> float:
    return new - old if new >= old else 0.0


def _by_key_delta(new: dict[str, float], old: dict[str, float]) -> dict[str, float]:
    return {key: _delta(value, old.get(key, 0.0)) for key, value in new.items()}


class FleetMonitor:
    """Keeps the last `keep_s` seconds of samples and the health transitions seen."""

    def __init__(self, keep_s: float = 900.0, max_events: int = 200) -> None:
        self.keep_s = keep_s
        self.samples: deque[GatewaySample] = deque()
        self.events: deque[HealthEvent] = deque(maxlen=max_events)
        self.started: float | None = None
        self.fleet_cost = 0.0  # dollars: price/hour of every endpoint integrated over time
        self.errors_total = 0.0

    # -- ingest -------------------------------------------------------------------------
    def add(self, sample: GatewaySample) -> None:
        """Append one sample (older than the last one is ignored)."""
        previous = self.samples[-1] if self.samples else None
        if previous is not None and sample.scraped_at <= previous.scraped_at:
            return
        if self.started is None:
            self.started = sample.scraped_at
        if previous is not None:
            interval_s = sample.scraped_at - previous.scraped_at
            price_per_hour = sum(endpoint.price_per_hour for endpoint in sample.endpoints)
            self.fleet_cost += price_per_hour * interval_s / 3600.0
            before = {endpoint.name: endpoint.status for endpoint in previous.endpoints}
            for endpoint in sample.endpoints:
                old = before.get(endpoint.name)
                if old is not None and old != endpoint.status:
                    self.events.append(
                        HealthEvent(
                            sample.scraped_at,
                            endpoint.name,
                            endpoint.provider,
                            old,
                            endpoint.status,
                        )
                    )
        self.samples.append(sample)
        while self.samples and sample.scraped_at - self.samples[0].scraped_at > self.keep_s:
            self.samples.popleft()

    # -- queries ------------------------------------------------------------------------
    @property
    def latest(self) -> GatewaySample | None:
        return self.samples[-1] if self.samples else None

    def _window(self, seconds: float) -> list[GatewaySample]:
        if not self.samples:
            return []
        end = self.samples[-1].scraped_at
        return [sample for sample in self.samples if end - sample.scraped_at <= seconds]

    def rates(self, seconds: float = 10.0) -> dict[str, Any]:
        """Per-endpoint and per-provider rates over the last `seconds` (first vs last sample)."""
        window = self._window(seconds)
        if len(window) < 2:
            window = list(self.samples)[-2:]  # sparse samples: the last interval, however long
        out: dict[str, Any] = {"endpoint_rps": {}, "endpoint_err": {}, "provider_rps": {}}
        out["provider_ttft_ms"] = {}
        if len(window) < 2:
            return out
        first, last = window[0], window[-1]
        span_s = last.scraped_at - first.scraped_at
        answered = _by_key_delta(last.requests, first.requests)
        failed = _by_key_delta(last.errors, first.errors)
        provider_of = {endpoint.name: endpoint.provider for endpoint in last.endpoints}
        for name, count in answered.items():
            out["endpoint_rps"][name] = count / span_s
            provider = provider_of.get(name, name)
            out["provider_rps"][provider] = out["provider_rps"].get(provider, 0.0) + count / span_s
        for name, count in failed.items():
            out["endpoint_err"][name] = count / span_s
        ttft_sum = _by_key_delta(last.ttft_sum, first.ttft_sum)
        ttft_count = _by_key_delta(last.ttft_count, first.ttft_count)
        for provider, count in ttft_count.items():
            if count > 0:
                out["provider_ttft_ms"][provider] = 1000.0 * ttft_sum.get(provider, 0.0) / count
        out["retries_per_s"] = _delta(last.retries, first.retries) / span_s
        out["spillovers_per_s"] = _delta(last.spillovers, first.spillovers) / span_s
        shed = _by_key_delta(last.shed, first.shed)
        out["shed_per_s"] = {priority: count / span_s for priority, count in shed.items()}
        return out

    def series(self, seconds: float = 300.0, smooth_s: float = 2.0) -> dict[str, Any]:
        """Series for the charts: one point per sample, rates over the last `smooth_s`
        seconds before it (or since the previous sample when samples are sparser)."""
        window = self._window(seconds)
        providers = sorted(
            {endpoint.provider for sample in window for endpoint in sample.endpoints}
        )
        out: dict[str, Any] = {
            "t": [],
            "rps": {provider: [] for provider in providers},
            "ttft_ms": {provider: [] for provider in providers},
            "queue": {priority: [] for priority in PRIORITIES},
            "shed_per_s": {priority: [] for priority in PRIORITIES},
            "retries_per_s": [],
            "spillovers_per_s": [],
            "errors_per_s": [],
        }
        start = 0
        for index in range(1, len(window)):
            sample = window[index]
            while (
                start + 1 < index and sample.scraped_at - window[start + 1].scraped_at >= smooth_s
            ):
                start += 1
            base = window[start]
            span_s = sample.scraped_at - base.scraped_at
            out["t"].append(round(sample.scraped_at, 3))
            provider_of = {endpoint.name: endpoint.provider for endpoint in sample.endpoints}
            rps = dict.fromkeys(providers, 0.0)
            for name, count in _by_key_delta(sample.requests, base.requests).items():
                provider = provider_of.get(name)
                if provider in rps:
                    rps[provider] += count / span_s
            ttft_sum = _by_key_delta(sample.ttft_sum, base.ttft_sum)
            ttft_count = _by_key_delta(sample.ttft_count, base.ttft_count)
            for provider in providers:
                out["rps"][provider].append(round(rps[provider], 3))
                count = ttft_count.get(provider, 0.0)
                mean_ms = round(1000.0 * ttft_sum.get(provider, 0.0) / count, 2) if count else None
                out["ttft_ms"][provider].append(mean_ms)
            shed = _by_key_delta(sample.shed, base.shed)
            for priority in PRIORITIES:
                out["queue"][priority].append(sample.queue.get(priority, 0.0))
                out["shed_per_s"][priority].append(round(shed.get(priority, 0.0) / span_s, 3))
            out["retries_per_s"].append(round(_delta(sample.retries, base.retries) / span_s, 3))
            spillovers = _delta(sample.spillovers, base.spillovers)
            out["spillovers_per_s"].append(round(spillovers / span_s, 3))
            errors = sum(_by_key_delta(sample.errors, base.errors).values())
            out["errors_per_s"].append(round(errors / span_s, 3))
        return out

    def state(self, seconds: float = 300.0) -> dict[str, Any]:
        """Everything the dashboard page shows, JSON-ready."""
        last = self.latest
        if last is None:
            return {"ready": False, "now": None, "endpoints": [], "providers": [], "events": []}
        rates = self.rates(10.0)
        endpoints = [self._endpoint_row(endpoint, rates) for endpoint in last.endpoints]
        providers = self._provider_rows(last.endpoints, rates)
        total_capacity = sum(endpoint.capacity for endpoint in last.endpoints) or 1.0
        total_rps = sum(rates["provider_rps"].values()) or 0.0
        for provider in providers:
            rps = rates["provider_rps"].get(provider["name"], 0.0)
            provider["planned_share"] = round(provider["capacity"] / total_capacity, 4)
            provider["actual_share"] = round(rps / total_rps, 4) if total_rps > 0 else 0.0
        return {
            "ready": True,
            "now": last.scraped_at,
            "started": self.started,
            "window_s": seconds,
            "tiers": {
                tier: [row["name"] for row in endpoints if row["tier"] == tier] for tier in TIERS
            },
            "endpoints": endpoints,
            "providers": providers,
            "series": self.series(seconds),
            "totals": self._totals(last),
            "events": [
                {"t": event.seen_at, "endpoint": event.endpoint, "provider": event.provider}
                | {"from": event.before, "to": event.after}
                for event in list(self.events)[-30:]
            ],
        }

    # -- helpers ------------------------------------------------------------------------
    @staticmethod
    def _endpoint_row(endpoint: EndpointState, rates: dict[str, Any]) -> dict[str, Any]:
        utilisation = endpoint.in_flight / endpoint.capacity if endpoint.capacity > 0 else None
        return {
            "name": endpoint.name,
            "provider": endpoint.provider,
            "tier": endpoint.tier,
            "model": endpoint.model,
            "region": endpoint.region,
            "accelerator": endpoint.accelerator,
            "status": endpoint.status,
            "in_flight": endpoint.in_flight,
            "capacity": endpoint.capacity,
            "utilisation": round(utilisation, 4) if utilisation is not None else None,
            "price_per_hour": endpoint.price_per_hour,
            "rps": round(rates["endpoint_rps"].get(endpoint.name, 0.0), 3),
            "errors_per_s": round(rates["endpoint_err"].get(endpoint.name, 0.0), 3),
        }

    @staticmethod
    def _provider_rows(
        endpoints: tuple[EndpointState, ...], rates: dict[str, Any]
    ) -> list[dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        for endpoint in endpoints:
            row = rows.setdefault(
                endpoint.provider,
                {"name": endpoint.provider, "tiers": [], "endpoints": 0, "endpoints_up": 0}
                | {"capacity": 0.0, "cost_per_hour": 0.0, "accelerators": []},
            )
            row["endpoints"] += 1
            row["endpoints_up"] += int(endpoint.healthy)
            row["capacity"] += endpoint.capacity
            row["cost_per_hour"] += endpoint.price_per_hour
            if endpoint.tier not in row["tiers"]:
                row["tiers"].append(endpoint.tier)
            if endpoint.accelerator and endpoint.accelerator not in row["accelerators"]:
                row["accelerators"].append(endpoint.accelerator)
        for provider, row in rows.items():
            healthy, total = row["endpoints_up"], row["endpoints"]
            row["status"] = "up" if healthy == total else ("down" if healthy == 0 else "degraded")
            row["rps"] = round(rates["provider_rps"].get(provider, 0.0), 3)
            ttft = rates["provider_ttft_ms"].get(provider)
            row["ttft_ms"] = round(ttft, 2) if ttft is not None else None
        order = {tier: rank for rank, tier in enumerate(TIERS)}
        return sorted(
            rows.values(),
            key=lambda row: (min(order.get(tier, 9) for tier in row["tiers"]), row["name"]),
        )

    def _totals(self, last: GatewaySample) -> dict[str, Any]:
        first = self.samples[0]
        return {
            "requests": sum(last.requests.values()),
            "errors": sum(last.errors.values()),
            "retries": last.retries,
            "spillovers": last.spillovers,
            "shed": {priority: last.shed.get(priority, 0.0) for priority in PRIORITIES},
            "admitted": {priority: last.admitted.get(priority, 0.0) for priority in PRIORITIES},
            "queue": {priority: last.queue.get(priority, 0.0) for priority in PRIORITIES},
            "fleet_cost": round(self.fleet_cost, 6),
            "usage_cost": last.cost,
            "cost_per_hour": round(sum(endpoint.price_per_hour for endpoint in last.endpoints), 4),
            "up_cost_per_hour": round(
                sum(endpoint.price_per_hour for endpoint in last.endpoints if endpoint.healthy), 4
            ),
            "elapsed_s": round(last.scraped_at - first.scraped_at, 3),
        }
