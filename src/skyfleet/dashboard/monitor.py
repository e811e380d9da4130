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

    t: float
    endpoint: str
    provider: str
    before: str
    after: str


def _delta(new: float, old: float) -> float:
    return new - old if new >= old else 0.0


def _by_key_delta(new: dict[str, float], old: dict[str, float]) -> dict[str, float]:
    return {k: _delta(v, old.get(k, 0.0)) for k, v in new.items()}


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
    def add(self, s: GatewaySample) -> None:
        """Append one sample (older than the last one is ignored)."""
        prev = self.samples[-1] if self.samples else None
        if prev is not None and s.t <= prev.t:
            return
        if self.started is None:
            self.started = s.t
        if prev is not None:
            dt = s.t - prev.t
            self.fleet_cost += sum(e.price_per_hour for e in s.endpoints) * dt / 3600.0
            before = {e.name: e.status for e in prev.endpoints}
            for e in s.endpoints:
                old = before.get(e.name)
                if old is not None and old != e.status:
                    self.events.append(HealthEvent(s.t, e.name, e.provider, old, e.status))
        self.samples.append(s)
        while self.samples and s.t - self.samples[0].t > self.keep_s:
            self.samples.popleft()

    # -- queries ------------------------------------------------------------------------
    @property
    def latest(self) -> GatewaySample | None:
        return self.samples[-1] if self.samples else None

    def _window(self, seconds: float) -> list[GatewaySample]:
        if not self.samples:
            return []
        end = self.samples[-1].t
        return [s for s in self.samples if end - s.t <= seconds]

    def rates(self, seconds: float = 10.0) -> dict[str, Any]:
        """Per-endpoint and per-provider rates over the last `seconds` (first vs last sample)."""
        win = self._window(seconds)
        if len(win) < 2:
            win = list(self.samples)[-2:]  # sparse samples: the last interval, however long
        out: dict[str, Any] = {"endpoint_rps": {}, "endpoint_err": {}, "provider_rps": {}}
        out["provider_ttft_ms"] = {}
        if len(win) < 2:
            return out
        a, b = win[0], win[-1]
        dt = b.t - a.t
        req = _by_key_delta(b.requests, a.requests)
        err = _by_key_delta(b.errors, a.errors)
        prov_of = {e.name: e.provider for e in b.endpoints}
        for name, d in req.items():
            out["endpoint_rps"][name] = d / dt
            p = prov_of.get(name, name)
            out["provider_rps"][p] = out["provider_rps"].get(p, 0.0) + d / dt
        for name, d in err.items():
            out["endpoint_err"][name] = d / dt
        ts = _by_key_delta(b.ttft_sum, a.ttft_sum)
        tc = _by_key_delta(b.ttft_count, a.ttft_count)
        for p, c in tc.items():
            if c > 0:
                out["provider_ttft_ms"][p] = 1000.0 * ts.get(p, 0.0) / c
        out["retries_per_s"] = _delta(b.retries, a.retries) / dt
        out["spillovers_per_s"] = _delta(b.spillovers, a.spillovers) / dt
        out["shed_per_s"] = {k: v / dt for k, v in _by_key_delta(b.shed, a.shed).items()}
        return out

    def series(self, seconds: float = 300.0, smooth_s: float = 2.0) -> dict[str, Any]:
        """Series for the charts: one point per sample, rates over the last `smooth_s`
        seconds before it (or since the previous sample when samples are sparser)."""
        win = self._window(seconds)
        providers = sorted({e.provider for s in win for e in s.endpoints})
        out: dict[str, Any] = {
            "t": [],
            "rps": {p: [] for p in providers},
            "ttft_ms": {p: [] for p in providers},
            "queue": {p: [] for p in PRIORITIES},
            "shed_per_s": {p: [] for p in PRIORITIES},
            "retries_per_s": [],
            "spillovers_per_s": [],
            "errors_per_s": [],
        }
        j = 0
        for i in range(1, len(win)):
            b = win[i]
            while j + 1 < i and b.t - win[j + 1].t >= smooth_s:
                j += 1
            a = win[j]
            dt = b.t - a.t
            out["t"].append(round(b.t, 3))
            prov_of = {e.name: e.provider for e in b.endpoints}
            rps = dict.fromkeys(providers, 0.0)
            for name, d in _by_key_delta(b.requests, a.requests).items():
                p = prov_of.get(name)
                if p in rps:
                    rps[p] += d / dt
            ts = _by_key_delta(b.ttft_sum, a.ttft_sum)
            tc = _by_key_delta(b.ttft_count, a.ttft_count)
            for p in providers:
                out["rps"][p].append(round(rps[p], 3))
                c = tc.get(p, 0.0)
                out["ttft_ms"][p].append(round(1000.0 * ts.get(p, 0.0) / c, 2) if c else None)
            shed = _by_key_delta(b.shed, a.shed)
            for p in PRIORITIES:
                out["queue"][p].append(b.queue.get(p, 0.0))
                out["shed_per_s"][p].append(round(shed.get(p, 0.0) / dt, 3))
            out["retries_per_s"].append(round(_delta(b.retries, a.retries) / dt, 3))
            out["spillovers_per_s"].append(round(_delta(b.spillovers, a.spillovers) / dt, 3))
            err = sum(_by_key_delta(b.errors, a.errors).values())
            out["errors_per_s"].append(round(err / dt, 3))
        return out

    def state(self, seconds: float = 300.0) -> dict[str, Any]:
        """Everything the dashboard page shows, JSON-ready."""
        last = self.latest
        if last is None:
            return {"ready": False, "now": None, "endpoints": [], "providers": [], "events": []}
        r = self.rates(10.0)
        endpoints = [self._endpoint_row(e, r) for e in last.endpoints]
        providers = self._provider_rows(last.endpoints, r)
        total_cap = sum(e.capacity for e in last.endpoints) or 1.0
        total_rps = sum(r["provider_rps"].values()) or 0.0
        for p in providers:
            rps = r["provider_rps"].get(p["name"], 0.0)
            p["planned_share"] = round(p["capacity"] / total_cap, 4)
            p["actual_share"] = round(rps / total_rps, 4) if total_rps > 0 else 0.0
        return {
            "ready": True,
            "now": last.t,
            "started": self.started,
            "window_s": seconds,
            "tiers": {t: [e["name"] for e in endpoints if e["tier"] == t] for t in TIERS},
            "endpoints": endpoints,
            "providers": providers,
            "series": self.series(seconds),
            "totals": self._totals(last),
            "events": [
                {"t": ev.t, "endpoint": ev.endpoint, "provider": ev.provider}
                | {"from": ev.before, "to": ev.after}
                for ev in list(self.events)[-30:]
            ],
        }

    # -- helpers ------------------------------------------------------------------------
    @staticmethod
    def _endpoint_row(e: EndpointState, r: dict[str, Any]) -> dict[str, Any]:
        util = e.in_flight / e.capacity if e.capacity > 0 else None
        return {
            "name": e.name,
            "provider": e.provider,
            "tier": e.tier,
            "model": e.model,
            "region": e.region,
            "accelerator": e.accelerator,
            "status": e.status,
            "in_flight": e.in_flight,
            "capacity": e.capacity,
            "utilisation": round(util, 4) if util is not None else None,
            "price_per_hour": e.price_per_hour,
            "rps": round(r["endpoint_rps"].get(e.name, 0.0), 3),
            "errors_per_s": round(r["endpoint_err"].get(e.name, 0.0), 3),
        }

    @staticmethod
    def _provider_rows(eps: tuple[EndpointState, ...], r: dict[str, Any]) -> list[dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        for e in eps:
            row = rows.setdefault(
                e.provider,
                {"name": e.provider, "tiers": [], "endpoints": 0, "endpoints_up": 0}
                | {"capacity": 0.0, "cost_per_hour": 0.0, "accelerators": []},
            )
            row["endpoints"] += 1
            row["endpoints_up"] += int(e.healthy)
            row["capacity"] += e.capacity
            row["cost_per_hour"] += e.price_per_hour
            if e.tier not in row["tiers"]:
                row["tiers"].append(e.tier)
            if e.accelerator and e.accelerator not in row["accelerators"]:
                row["accelerators"].append(e.accelerator)
        for p, row in rows.items():
            up, n = row["endpoints_up"], row["endpoints"]
            row["status"] = "up" if up == n else ("down" if up == 0 else "degraded")
            row["rps"] = round(r["provider_rps"].get(p, 0.0), 3)
            ttft = r["provider_ttft_ms"].get(p)
            row["ttft_ms"] = round(ttft, 2) if ttft is not None else None
        order = {t: i for i, t in enumerate(TIERS)}
        return sorted(
            rows.values(), key=lambda x: (min(order.get(t, 9) for t in x["tiers"]), x["name"])
        )

    def _totals(self, last: GatewaySample) -> dict[str, Any]:
        first = self.samples[0]
        return {
            "requests": sum(last.requests.values()),
            "errors": sum(last.errors.values()),
            "retries": last.retries,
            "spillovers": last.spillovers,
            "shed": {p: last.shed.get(p, 0.0) for p in PRIORITIES},
            "admitted": {p: last.admitted.get(p, 0.0) for p in PRIORITIES},
            "queue": {p: last.queue.get(p, 0.0) for p in PRIORITIES},
            "fleet_cost": round(self.fleet_cost, 6),
            "usage_cost": last.cost,
            "cost_per_hour": round(sum(e.price_per_hour for e in last.endpoints), 4),
            "up_cost_per_hour": round(
                sum(e.price_per_hour for e in last.endpoints if e.healthy), 4
            ),
            "elapsed_s": round(last.t - first.t, 3),
        }
