"""FleetMonitor: rates, series, health events and cost from gateway samples."""

from __future__ import annotations

import pytest

from skyfleet.dashboard.model import EndpointState, GatewaySample
from skyfleet.dashboard.monitor import FleetMonitor


def _eps(status_b: str = "up") -> tuple[EndpointState, ...]:
    return (
        EndpointState("a0", "azure", "primary", capacity=10, price_per_hour=8.0, in_flight=5),
        EndpointState("g0", "gcp", "spillover", capacity=10, price_per_hour=2.0, status=status_b),
    )


def _sample(t: float, a: float, g: float, **kw: object) -> GatewaySample:
    return GatewaySample(
        scraped_at=t,
        endpoints=kw.pop("endpoints", _eps()),  # type: ignore[arg-type]
        requests={"a0": a, "g0": g},
        ttft_sum={"azure": a * 0.1, "gcp": g * 0.3},
        ttft_count={"azure": a, "gcp": g},
        **kw,  # type: ignore[arg-type]
    )


def test_rates_per_provider_and_ttft() -> None:
    m = FleetMonitor()
    for i in range(11):
        m.add(_sample(1000.0 + i, a=10.0 * i, g=2.0 * i, retries=float(i)))
    r = m.rates(10.0)
    assert r["provider_rps"] == pytest.approx({"azure": 10.0, "gcp": 2.0})
    assert r["provider_ttft_ms"] == pytest.approx({"azure": 100.0, "gcp": 300.0})
    assert r["retries_per_s"] == pytest.approx(1.0)


def test_state_has_tiers_health_shares_and_cost() -> None:
    m = FleetMonitor(keep_s=1e6)
    for i in range(4):
        m.add(_sample(10.0 + 1800.0 * i, a=30.0 * i, g=10.0 * i))
    st = m.state(1e9)
    assert st["ready"]
    assert st["tiers"] == {"primary": ["a0"], "spillover": ["g0"], "fallback": []}
    prov = {p["name"]: p for p in st["providers"]}
    assert prov["azure"]["planned_share"] == pytest.approx(0.5)
    assert prov["azure"]["actual_share"] == pytest.approx(0.75)
    # 1.5 hours at $10/hour for the whole fleet
    assert st["totals"]["fleet_cost"] == pytest.approx(15.0)
    assert st["endpoints"][0]["utilisation"] == pytest.approx(0.5)


def test_health_transitions_become_events() -> None:
    m = FleetMonitor()
    m.add(_sample(1.0, 0, 0))
    m.add(_sample(2.0, 1, 1, endpoints=_eps("down")))
    m.add(_sample(3.0, 2, 1, endpoints=_eps("up")))
    evs = [(e.endpoint, e.before, e.after) for e in m.events]
    assert evs == [("g0", "up", "down"), ("g0", "down", "up")]
    st = m.state()
    assert [e["to"] for e in st["events"]] == ["down", "up"]


def test_counter_reset_never_gives_negative_rates() -> None:
    m = FleetMonitor()
    m.add(_sample(1.0, 100, 100))
    m.add(_sample(2.0, 5, 5))  # the gateway restarted
    ser = m.series()
    assert all(v >= 0 for vs in ser["rps"].values() for v in vs)


def test_series_smooths_over_a_window_and_old_samples_expire() -> None:
    m = FleetMonitor(keep_s=10.0)
    for i in range(40):
        m.add(_sample(i * 0.5, a=5.0 * i, g=0.0))  # 10 req/s to azure
    ser = m.series(1e9, smooth_s=2.0)
    assert ser["rps"]["azure"][-1] == pytest.approx(10.0)
    assert m.samples[-1].scraped_at - m.samples[0].scraped_at <= 10.0
    assert len(ser["t"]) == len(ser["rps"]["gcp"]) == len(ser["retries_per_s"])


def test_empty_monitor_is_not_ready() -> None:
    assert FleetMonitor().state()["ready"] is False
