"""The MILP's cost equals the best plan found by brute-force enumeration on small instances."""

from __future__ import annotations

import itertools

import numpy as np

from skyfleet.planner.milp import Variant
from skyfleet.planner.problem import Options, Problem, build_problem
from skyfleet.planner.routing import route
from skyfleet.planner.solver import solve_plan

from .planner_instances import offerings, row, workload


def _n1_ok(prob: Problem, y: dict[int, int], d: float) -> bool:
    """Survives the loss of each provider, counting replicas at bucket-mix capacity and
    spot not at all (the default `spot_in_survivors: none`)."""
    groups = {prob.group_of(j) for j in range(len(prob.columns))}
    for g in groups:
        rest = sum(
            prob.columns[j].rtype.cap_mix * n
            for j, n in y.items()
            if prob.group_of(j) != g and prob.offering(j).tier != "spot"
        )
        if rest < d - 1e-9:
            return False
    return True


def _quota_ok(prob: Problem, y: dict[int, int]) -> bool:
    used: dict[int, int] = {}
    for j, n in y.items():
        pool = prob.columns[j].pool
        used[pool] = used.get(pool, 0) + n * prob.columns[j].rtype.tp
    return all(u <= prob.pools[p].quota for p, u in used.items())


def _routing_ok(prob: Problem, y: dict[int, int], t: int) -> bool:
    rts = prob.rtypes[0]
    units = [0.0] * len(rts)
    for j, n in y.items():
        units[rts.index(prob.columns[j].rtype)] += n * prob.offering(j).availability
    lam = [float(prob.demand[0, t]) * f for f in prob.fractions[0]]
    return route(rts, units, lam) is not None


def brute_force(prob: Problem, max_n: int, n1: bool) -> float:
    """Cheapest plan: enumerate reserved levels, then every period's replica vector."""
    cols = range(len(prob.columns))
    committed = [j for j in cols if prob.committed(j)]
    flexible = [j for j in cols if not prob.committed(j)]
    best = np.inf
    for levels in itertools.product(range(max_n + 1), repeat=len(committed)):
        base = dict(zip(committed, levels, strict=True))
        cost = sum(prob.replica_price(j) * n * prob.T for j, n in base.items())
        for t in range(prob.T):
            d = float(prob.demand[0, t])
            period_best = np.inf
            for counts in itertools.product(range(max_n + 1), repeat=len(flexible)):
                y = {**base, **dict(zip(flexible, counts, strict=True))}
                c = sum(prob.replica_price(j) * n for j, n in zip(flexible, counts, strict=True))
                if c >= period_best or not _quota_ok(prob, y):
                    continue
                ok = _routing_ok(prob, y, t) and (not n1 or _n1_ok(prob, y, d))
                if ok:
                    period_best = c
            cost += period_best
        best = min(best, cost)
    return float(best * prob.period_hours)


def test_n1_plan_costs_the_same_as_brute_force() -> None:
    w = workload([300.0, 700.0], sizes=[(200, 100, 0.7), (1500, 200, 0.3)])
    offs = offerings(
        [
            row("a", "r1", "H100", on_demand=3.0, quota=6),
            row("b", "r1", "A100-80GB", on_demand=2.0, reserved_1y=1.4, quota=6),
            row("c", "r1", "L40S", on_demand=1.0, spot=0.4, quota=6),
        ]
    )
    prob = build_problem(w, offs, Options(resilience="provider", time_limit_s=30))
    sol = solve_plan(prob)
    assert sol.status == "optimal"
    expected = brute_force(prob, max_n=5, n1=True)
    assert np.isfinite(expected)
    assert abs(sol.cost - expected) < 1e-6 * expected


def test_bucket_split_plan_costs_the_same_as_brute_force() -> None:
    # Short requests are cheapest on L40S, long ones on H100: the optimum mixes (Mélange).
    w = workload([900.0], sizes=[(200, 100, 0.8), (3000, 300, 0.2)])
    offs = offerings(
        [
            row("a", "r1", "H100", on_demand=3.0, quota=8),
            row("c", "r1", "L40S", on_demand=1.0, quota=8),
            row("d", "r1", "A100-80GB", on_demand=2.2, quota=8),
        ]
    )
    prob = build_problem(w, offs, Options(resilience="none", time_limit_s=30))
    sol = solve_plan(prob)
    assert sol.status == "optimal"
    expected = brute_force(prob, max_n=8, n1=False)
    assert abs(sol.cost - expected) < 1e-6 * expected
    used = {prob.offering(j).accelerator for j in np.nonzero(sol.y[:, 0])[0]}
    assert len(used) >= 2, "the bucket split should use more than one accelerator type"
    for acc in ("H100-SXM-80GB", "L40S", "A100-80GB"):
        cols = [j for j in range(len(prob.columns)) if prob.offering(j).accelerator == acc]
        single = solve_plan(prob, Variant(columns=cols))
        assert not single.feasible or single.cost >= sol.cost - 1e-9
