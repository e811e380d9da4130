"""Plans keep their promises: N-1 in every period, quotas, shares; baselines never win."""

from __future__ import annotations

import pytest

from skyfleet.planner.api import plan_workload
from skyfleet.planner.capacity import ReplicaType
from skyfleet.planner.plan import Plan
from skyfleet.planner.routing import route
from skyfleet.workload import Workload

from .planner_instances import workload

ROWS = {
    "offerings": [
        {
            "provider": "alpha",
            "region": "r1",
            "accelerator": "H100",
            "on_demand": 3.0,
            "reserved_1y": 2.0,
            "quota": 16,
            "date": "2026-11-20",
            "source": "test",
        },
        {
            "provider": "alpha",
            "region": "r2",
            "accelerator": "H100",
            "on_demand": 3.3,
            "quota": 8,
            "date": "2026-11-20",
            "source": "test",
        },
        {
            "provider": "beta",
            "region": "r1",
            "accelerator": "A100-80GB",
            "on_demand": 2.0,
            "spot": 0.8,
            "quota": 12,
            "date": "2026-11-20",
            "source": "test",
        },
        {
            "provider": "gamma",
            "region": "r1",
            "accelerator": "L40S",
            "on_demand": 1.2,
            "quota": 12,
            "date": "2026-11-20",
            "source": "test",
        },
        {
            "provider": "delta",
            "region": "r1",
            "accelerator": "TPU-v5e",
            "owned": 0.5,
            "quota": 2,
            "date": "2026-11-20",
            "source": "test",
        },
    ]
}
ONLY_TEST_ROWS = ["alpha", "beta", "gamma", "delta"]


def _plan(write_yaml, w: Workload, **kw: object) -> Plan:  # type: ignore[no-untyped-def]
    path = write_yaml("offerings.yaml", ROWS)
    return plan_workload(w, [path], time_limit_s=20, **kw).plan  # type: ignore[arg-type]


def _rtype(e) -> ReplicaType:  # type: ignore[no-untyped-def]
    caps = tuple(e.capacity_by_bucket.values())
    return ReplicaType(e.accelerator, e.accelerators_per_replica, caps, 0.0, 1, "")


def _servable(plan: Plan, w: Workload, t: int, drop: str | None) -> bool:
    """Route every bucket at the SLO over the replicas left after dropping one provider."""
    mw = w.models[0]
    entries = [e for e in plan.entries if e.provider != drop and e.replicas[t] > 0]
    if not entries:
        return plan.models[0].demand_rps[t] <= 0
    rts = [_rtype(e) for e in entries]
    units = [e.replicas[t] * e.availability for e in entries]
    lam = [plan.models[0].demand_rps[t] * f for f in mw.bucket_fractions()]
    return route(rts, units, lam) is not None


@pytest.fixture
def diurnal() -> Workload:
    demand = [400.0, 250.0, 600.0, 900.0, 700.0, 300.0]
    return workload(demand, sizes=[(200, 100, 0.7), (1500, 200, 0.3)], providers=ONLY_TEST_ROWS)


def test_losing_any_provider_leaves_enough_capacity_in_every_period(write_yaml, diurnal):  # type: ignore[no-untyped-def]
    plan = _plan(write_yaml, diurnal, baselines=False)
    assert len(plan.providers) >= 2
    for t in range(plan.meta.periods):
        assert _servable(plan, diurnal, t, None)
        for p in plan.providers:
            assert _servable(plan, diurnal, t, p), f"losing {p} in period {t} drops demand"


def test_quotas_shares_and_constant_reservations_hold(write_yaml, diurnal):  # type: ignore[no-untyped-def]
    plan = _plan(write_yaml, diurnal, max_share=0.5, baselines=False)
    quota = {(r["provider"], r["region"]): r["quota"] for r in ROWS["offerings"]}
    for t in range(plan.meta.periods):
        used: dict[tuple[str, str, str], int] = {}
        for e in plan.entries:
            k = (e.provider, e.region, e.tier)
            used[k] = used.get(k, 0) + e.replicas[t] * e.accelerators_per_replica
        for (prov, region, _tier), n in used.items():
            assert n <= quota[(prov, region)]
        caps = plan.capacity_by_provider("chat", t, effective=True)
        total = sum(caps.values())
        for p, c in caps.items():
            assert c <= 0.5 * total + 1e-6, f"{p} holds {c / total:.0%} in period {t}"
    for e in plan.entries:
        if e.tier in ("reserved_1y", "owned"):
            assert len(set(e.replicas)) == 1, "reserved/owned capacity is constant"


def test_no_baseline_is_cheaper_than_the_plan(write_yaml, diurnal):  # type: ignore[no-untyped-def]
    plan = _plan(write_yaml, diurnal)
    by_name = {c.name: c for c in plan.comparisons}
    assert {
        "all on-demand",
        "best single accelerator type",
        "cheapest single offering",
        "single cloud, region N-1",
        "single cloud, no resilience",
        "without N-1 resilience",
    } <= set(by_name)
    nores = by_name["without N-1 resilience"]
    assert nores.cost_per_day is not None and nores.survives == "none"
    assert nores.cost_per_day <= plan.totals.cost_per_day + 1e-6
    for c in plan.comparisons:
        if c.cost_per_day is not None and c.basis == "same constraints":
            assert c.cost_per_day >= plan.totals.cost_per_day - 1e-6, f"{c.name} beats the plan"
    region, bare = by_name["single cloud, region N-1"], by_name["single cloud, no resilience"]
    assert region.survives == "region" and bare.survives == "none"
    if region.cost_per_day is not None and bare.cost_per_day is not None:
        assert region.cost_per_day >= bare.cost_per_day - 1e-6
    assert all(e.reason for e in plan.entries)
    assert plan.meta.validated
    assert plan.decomposition[-1].cost_per_day == plan.totals.cost_per_day


def test_report_tells_the_cost_story_like_for_like(write_yaml, diurnal, tmp_path):  # type: ignore[no-untyped-def]
    """Terminal, HTML and demo report share one story: the plan against the cheapest
    single-cloud fleet with the same SLO that survives a region loss, the one that survives
    nothing, and the decomposition of the plan's cost."""
    from skyfleet.planner.report import cost_story, write_html

    plan = _plan(write_yaml, diurnal)
    story = " ".join(cost_story(plan))
    assert f"${plan.totals.cost_per_day:,.0f}/day" in story
    assert "survives the loss of any one provider" in story
    assert "region loss" in story or "survive the loss of one of its regions" in story
    assert "Where the cost comes from" in story and "N-1 spare" in story
    steps = [d.delta_per_day for d in plan.decomposition[1:] if d.delta_per_day is not None]
    first = plan.decomposition[0].cost_per_day
    assert first is not None
    assert first + sum(steps) == pytest.approx(plan.totals.cost_per_day, abs=0.05)
    html = write_html(plan, tmp_path / "p.html").read_text()
    assert "The cost story" in html and cost_story(plan)[1].split("$")[0] in html


def test_region_mode_survives_losing_any_region(write_yaml, diurnal):  # type: ignore[no-untyped-def]
    plan = _plan(write_yaml, diurnal, resilience="region", baselines=False)
    assert plan.meta.resilience == "region"
    regions = {(e.provider, e.region) for e in plan.entries}
    for t, d in enumerate(plan.demand("chat")):
        for lost in regions:
            rest = sum(
                e.replicas[t] * e.capacity_rps_per_replica * e.availability
                for e in plan.entries
                if (e.provider, e.region) != lost
            )
            assert rest >= d - 1e-6, f"losing {lost} in period {t}"


def test_min_providers_spreads_the_model(write_yaml, diurnal):  # type: ignore[no-untyped-def]
    plan = _plan(write_yaml, diurnal, resilience="none", min_providers=3, baselines=False)
    for t, d in enumerate(plan.demand("chat")):
        caps = plan.capacity_by_provider("chat", t, effective=True)
        assert sum(1 for c in caps.values() if c >= 0.05 * d - 1e-6) >= 3
