"""Both engines: conservation, SLO at 50% load, N-1 spare, and fluid vs request-level agreement."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from skyfleet.sim import Fleet, parse_scenario, simulate
from skyfleet.sim.result import SimResult

FleetFactory = Callable[..., Fleet]

QUIET = {"provisioning": {"model_load": 0}}


def conserved(res: SimResult) -> None:
    a = res.arrivals.sum(axis=0)
    ends = res.served.sum(axis=0) + res.shed.sum(axis=0) + res.failed.sum(axis=0)
    np.testing.assert_allclose(ends, a, rtol=1e-9, atol=1e-6)


def test_des_conservation_every_request_ends_exactly_once(make_fleet: FleetFactory) -> None:
    """Outage (streams cut, retries), surge (shedding) and preemption in one short run."""
    fleet = make_fleet({"aws": 1, "gcp": 1}, utilisation=0.6, spot={"gcp"})
    sc = parse_scenario(
        {
            "horizon": "4m",
            "step": 30,
            "outages": [{"provider": "aws", "start": "1m", "duration": "1m"}],
            "surges": [{"start": "2m30s", "duration": "1m", "multiplier": 1.6}],
            "preemptions": [{"at": "3m", "fraction": 1.0}],
            "provisioning": {"acquisition": 20, "model_load": 10},
        }
    )
    res = simulate(fleet, sc, "des", seed=3)
    conserved(res)
    assert res.arrivals.sum() == res.arrivals.sum().round()  # whole requests
    assert res.total("failed") > 0  # streams cut by the outage
    assert res.total("shed") > 0  # surge beyond capacity
    assert res.ttft_samples is not None and len(res.ttft_samples) == res.total("served")


def test_fluid_conservation_with_outage_surge_and_preemption(make_fleet: FleetFactory) -> None:
    fleet = make_fleet(
        {"aws": 2, "gcp": 2, "azure": 2}, utilisation=0.7, periods=24, spot={"azure"}
    )
    sc = parse_scenario(
        {
            "outages": [{"provider": "aws", "start": "3h", "duration": "2h"}],
            "surges": [{"start": "10h", "duration": "1h", "multiplier": 2.0}],
            "preemptions": [{"at": "15h", "fraction": 0.5}],
            "autoscaling": {"enabled": True, "interval": "5m"},
        }
    )
    res = simulate(fleet, sc, "fluid")
    conserved(res)
    assert res.total("shed") > 0 and res.total("failed") > 0


@pytest.mark.parametrize("engine", ["fluid", "des"])
def test_no_outage_at_half_load_meets_the_slo(make_fleet: FleetFactory, engine: str) -> None:
    fleet = make_fleet({"aws": 1, "gcp": 1}, utilisation=0.5)
    sc = parse_scenario({"horizon": "24h" if engine == "fluid" else "4m", "step": 30})
    res = simulate(fleet, sc, engine)  # type: ignore[arg-type]
    assert res.slo_attainment >= 0.99
    assert res.total("shed") == 0 and res.total("failed") == 0
    assert res.ttft_percentile(0.99) <= 1.0


def test_n1_spare_absorbs_a_provider_loss_and_removing_it_shows_the_expected_loss(
    make_fleet: FleetFactory,
) -> None:
    """Three providers sized so any two carry the demand (N-1). Failing one loses ~nothing;
    with the spare removed, what is lost is the demand above the survivors' capacity."""
    fleet = make_fleet({"aws": 3, "gcp": 3, "azure": 3}, utilisation=0.5)
    sc = parse_scenario(
        {
            "horizon": "6h",
            **QUIET,
            "outages": [{"provider": "aws", "start": "2h", "duration": "2h"}],
        }
    )
    res = simulate(fleet, sc)
    assert res.slo_attainment >= 0.99
    assert (res.total("shed") + res.total("failed")) / res.total("arrivals") < 0.005

    lean = fleet.without_spare()
    kept = {g.provider: int(g.replicas[0]) for g in lean.groups}
    assert sum(kept.values()) == 6  # 0.5 × 9 replicas at ≤ 80% utilisation: the spare is gone
    victim = max(kept, key=lambda p: kept[p])
    sc2 = parse_scenario(
        {
            "horizon": "6h",
            **QUIET,
            "outages": [{"provider": victim, "start": "2h", "duration": "2h"}],
        }
    )
    res2 = simulate(lean, sc2)
    from skyfleet.sim.fluid import group_route_rps

    demand = float(lean.models["chat"].demand_rps[0])
    left = sum(
        group_route_rps(lean, g) * int(g.replicas[0]) for g in lean.groups if g.provider != victim
    )
    expected = max(0.0, demand - left) * 2 * 3600
    lost = res2.total("shed") + res2.total("failed")
    assert expected > 0
    assert lost == pytest.approx(expected, rel=0.1)
    assert res2.recovery_times()[0] == pytest.approx(2 * 3600, abs=600)


def _compare(fluid: SimResult, des: SimResult) -> tuple[float, float]:
    da = abs(fluid.slo_attainment - des.slo_attainment) / des.slo_attainment
    dp = abs(fluid.ttft_percentile(0.99) - des.ttft_percentile(0.99)) / des.ttft_percentile(0.99)
    return da, dp


@pytest.mark.parametrize("util", [0.5, 0.7])
def test_fluid_and_request_level_agree_in_steady_state(
    make_fleet: FleetFactory, util: float
) -> None:
    fleet = make_fleet({"aws": 1, "gcp": 1}, utilisation=util)
    sc = parse_scenario({"horizon": "5m", "step": 30})
    da, dp = _compare(simulate(fleet, sc, "fluid"), simulate(fleet, sc, "des", seed=1))
    assert da <= 0.10
    assert dp <= 0.10


def test_fluid_and_request_level_agree_through_an_outage(make_fleet: FleetFactory) -> None:
    fleet = make_fleet({"aws": 1, "gcp": 1}, utilisation=0.75)
    sc = parse_scenario(
        {
            "horizon": "6m",
            "step": 30,
            **QUIET,
            "outages": [{"provider": "aws", "start": "2m", "duration": "2m"}],
        }
    )
    fl, de = simulate(fleet, sc, "fluid"), simulate(fleet, sc, "des", seed=2)
    assert fl.slo_attainment < 0.9 and de.slo_attainment < 0.9  # the outage hurts
    da, dp = _compare(fl, de)
    assert da <= 0.10
    assert dp <= 0.10
