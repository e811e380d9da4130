"""The request-level engine runs the gateway's failure handling: outages that let running
requests finish, outlier ejection with back-off and probes, the retry budget, and scripted
loads replayed request by request."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from skyfleet.config import HealthConfig, RoutingConfig
from skyfleet.sim import Fleet, Trace, parse_scenario, simulate

FleetFactory = Callable[..., Fleet]


def outage(in_flight: str = "fail", horizon: str = "3m") -> dict[str, object]:
    return {
        "horizon": horizon,
        "step": 10,
        "provisioning": {"model_load": 0},
        "outages": [{"provider": "aws", "start": 60, "duration": 30, "in_flight": in_flight}],
    }


@pytest.mark.parametrize("engine", ["fluid", "des"])
def test_an_outage_that_lets_running_requests_finish_fails_none(
    make_fleet: FleetFactory, engine: str
) -> None:
    fleet = make_fleet({"aws": 1, "gcp": 1}, utilisation=0.4)
    killed = simulate(fleet, parse_scenario(outage("fail")), engine, seed=1)  # type: ignore[arg-type]
    drained = simulate(fleet, parse_scenario(outage("finish")), engine, seed=1)  # type: ignore[arg-type]
    assert killed.total("failed") > 0  # streams cut when the replica dies
    assert drained.total("failed") == 0
    for res in (killed, drained):
        ends = res.total("served") + res.total("shed") + res.total("failed")
        assert ends == pytest.approx(res.total("arrivals"))


def test_refused_attempts_eject_the_endpoint_after_consecutive_failures(
    make_fleet: FleetFactory,
) -> None:
    """Without retries, exactly `consecutive_failures` requests hit the dead endpoint before
    it is ejected; with the default retry budget they are retried elsewhere and none fails."""
    fleet = make_fleet({"aws": 1, "gcp": 1}, utilisation=0.4)
    fleet.health = HealthConfig(consecutive_failures=3, probe_interval_s=30)
    sc = parse_scenario(outage("finish"))
    fleet.routing = RoutingConfig(max_attempts=1)
    assert simulate(fleet, sc, "des", seed=2).total("failed") == 3
    fleet.routing = RoutingConfig()
    assert simulate(fleet, sc, "des", seed=2).total("failed") == 0


def test_an_ejected_endpoint_returns_after_its_ejection_and_a_good_probe(
    make_fleet: FleetFactory,
) -> None:
    fleet = make_fleet({"aws": 1, "gcp": 1}, utilisation=0.4)
    sc = parse_scenario(outage("finish"))
    served: dict[float, np.ndarray] = {}
    for ejection in (1.0, 60.0):
        fleet.health = HealthConfig(
            consecutive_failures=1, base_ejection_s=ejection, probe_interval_s=2
        )
        served[ejection] = simulate(fleet, sc, "des", seed=3).served_by_provider["aws"]
    # steps of 10 s: the outage is steps 6-8 (60-90 s)
    assert served[1.0][6:9].sum() == 0 and served[60.0][6:9].sum() == 0
    assert served[1.0][9] > 0  # a probe finds it back within ~2 s
    assert served[60.0][9:12].sum() == 0  # still ejected until ~120 s
    assert served[60.0][13:].sum() > 0


def test_a_scripted_load_is_replayed_request_by_request(make_fleet: FleetFactory) -> None:
    fleet = make_fleet({"aws": 1, "gcp": 1}, utilisation=0.3)
    m = fleet.models["chat"]
    rng = np.random.default_rng(5)
    times = np.sort(rng.random(300) * 60.0)
    prios = rng.choice(3, size=300, p=(0.1, 0.3, 0.6))
    m.trace = Trace(times, np.full(300, 1000.0), np.full(300, 250.0), "script", prios, 60.0)
    res = simulate(fleet, parse_scenario({"horizon": 60, "step": 10}), "des", seed=1)
    np.testing.assert_array_equal(res.arrivals.sum(axis=0), np.bincount(prios, minlength=3))
    per_step = np.bincount((times // 10).astype(int), minlength=6)
    np.testing.assert_array_equal(res.arrivals.sum(axis=1), per_step)
