"""Exact quotas (pooled regions split without leftovers, or not pooled at all), whole billing
units in cost, every TP up to the instance, and capacities the plan file states exactly."""

from __future__ import annotations

import pytest

from skyfleet.catalog.offerings import expand
from skyfleet.planner.build import PlanSplitError, split_pool
from skyfleet.planner.capacity import replica_types
from skyfleet.planner.problem import Options, build_problem, pool_offerings
from skyfleet.planner.solver import solve_plan
from skyfleet.planner.validate import check_capacity, check_quotas
from skyfleet.workload import Workload

from .planner_instances import offerings, row, workload


def test_split_packs_mixed_tp_into_regions_exactly() -> None:
    # 3 × TP4 + 5 × TP2 + 6 × TP1 = 28 accelerators in regions of 16 and 16 (blocks of 8).
    reps = [(0, 4)] * 3 + [(1, 2)] * 5 + [(2, 1)] * 6
    per_col, idle = split_pool([16, 16], 8, reps, idle=4)
    per_region = [sum(per_col[c][i] * tp for c, tp in ((0, 4), (1, 2), (2, 1))) for i in (0, 1)]
    assert sum(per_region) == 28 and sum(idle) == 4
    assert all(u + i <= 16 for u, i in zip(per_region, idle, strict=True))
    assert per_col[0] == [2, 1] or per_col[0] == [1, 2]  # spread over regions


def test_split_that_cannot_be_done_is_an_error() -> None:
    with pytest.raises(PlanSplitError, match="do not fit"):
        split_pool([8, 8], 8, [(0, 4)] * 5)


def test_regions_whose_quota_is_not_whole_blocks_are_not_pooled() -> None:
    offs = offerings(
        [
            row("a", r, "H100", on_demand=3.0, quota=q, per_instance=8)
            for r, q in (("r1", 16), ("r2", 24), ("r3", 6))
        ]
    )
    pools = pool_offerings(offs, by_region=False, max_tp={"H100": 8})
    sizes = sorted(len(p.offerings) for p in pools)
    assert sizes == [1, 2]  # r1 + r2 pooled (multiples of 8), r3 (6) on its own


def test_whole_instances_are_paid_for_and_filled() -> None:
    """A TP1 model on 8-GPU instances: the plan rents whole instances and runs replicas on
    every accelerator it pays for (or lists them idle)."""
    w = workload([900.0, 1700.0])
    offs = offerings(
        [
            row("a", "r1", "H100", on_demand=3.0, quota=64, per_instance=8, billing_unit=8),
            row("b", "r1", "H100", on_demand=3.1, quota=64, per_instance=8, billing_unit=8),
        ]
    )
    from skyfleet.planner.build import to_plan

    prob = build_problem(w, offs, Options(resilience="provider"))
    sol = solve_plan(prob)
    plan = to_plan(prob, sol)
    for t in range(plan.meta.periods):
        for p in ("a", "b"):
            gpus = sum(
                e.replicas[t] * e.accelerators_per_replica for e in plan.entries if e.provider == p
            )
            idle = sum(i.accelerators[t] for i in plan.idle if i.provider == p)
            assert (gpus + idle) % 8 == 0
    per_period = plan.cost_per_period()
    assert sum(per_period) == pytest.approx(plan.totals.cost_horizon, rel=1e-6)
    assert sol.cost == pytest.approx(plan.totals.cost_horizon, rel=1e-6)
    assert check_quotas(plan, offs) == [] and check_capacity(plan) == []


def test_every_tp_up_to_the_instance_is_tried_and_qwen32b_prefers_tp4() -> None:
    """Qwen2.5-32B on H100: TP4 serves more req/s per accelerator than TP2 (issue 17)."""
    w = Workload.model_validate(
        {
            "models": [
                {
                    "name": "code",
                    "model": "Qwen2.5-32B",
                    "demand": [100.0],
                    "sizes": [{"input_tokens": 2000, "output_tokens": 100}],
                    "slo": {"ttft_ms": 1500, "tpot_ms": 40},
                }
            ]
        }
    )
    rts, _ = replica_types(w.models[0], ["H100-SXM-80GB"], {"H100-SXM-80GB": 8})
    by_tp = {rt.tp: rt.cap_mix / rt.tp for rt in rts}
    assert 4 in by_tp
    assert 2 not in by_tp or by_tp[4] > by_tp[2]


def test_plan_file_capacities_are_exact_so_zero_headroom_still_validates() -> None:
    """Capacities are rounded down once; the optimiser and the written plan use the same
    numbers, so a plan at exactly 1.0000× demand after its worst loss passes its check."""
    w = workload([700.0, 400.0], sizes=[(200, 100, 0.7), (1500, 200, 0.3)])
    offs = offerings([row(p, "r1", "A100-80GB", on_demand=2.0, quota=16) for p in "abc"])
    from skyfleet.planner.build import to_plan

    prob = build_problem(w, offs, Options(resilience="provider", headroom=0.0))
    plan = to_plan(prob, solve_plan(prob))
    for e in plan.entries:
        assert all(round(c, 4) == c for c in e.capacity_by_bucket.values())
    assert check_capacity(plan) == []


def test_units_quota_is_whole_units() -> None:
    (o,) = expand([row("a", "r1", "H100", on_demand=3.0, quota=20, per_instance=8, billing_unit=8)])
    assert o.quota == 16 and o.unit == 8
