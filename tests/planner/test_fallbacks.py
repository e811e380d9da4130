"""When time runs out the planner still answers with a feasible plan, and says so."""

from __future__ import annotations

import numpy as np

from skyfleet.planner.greedy import greedy
from skyfleet.planner.problem import Options, Problem, build_problem
from skyfleet.planner.solver import solve_plan

from .planner_instances import offerings, row, workload


def _instance(time_limit: float) -> Problem:
    demand = [400.0 + 300.0 * np.sin(t / 4.0) ** 2 for t in range(96)]
    w = workload(demand, sizes=[(200, 100, 0.7), (1500, 200, 0.3)])
    offs = offerings(
        [
            row("a", "r1", "H100", on_demand=3.0, reserved_1y=2.0, quota=16),
            row("b", "r1", "A100-80GB", on_demand=2.0, spot=0.8, quota=16),
            row("c", "r1", "L40S", on_demand=1.2, quota=16),
        ]
    )
    return build_problem(
        w, offs, Options(resilience="provider", max_share=0.6, time_limit_s=time_limit)
    )


def _feasible(prob: Problem, y: np.ndarray) -> bool:
    for t in range(prob.T):
        d = float(prob.demand[0, t])
        caps: dict[str, float] = {}
        for j in range(len(prob.columns)):
            caps[prob.group_of(j)] = caps.get(prob.group_of(j), 0.0) + prob.eff_cap(j) * y[j, t]
        total = sum(caps.values())
        if any(total - c < d - 1e-6 for c in caps.values()):
            return False
        if any(c > 0.6 * total + 1e-6 for c in caps.values()):
            return False
    return True


def test_greedy_plan_meets_n1_and_shares() -> None:
    prob = _instance(10)
    g = greedy(prob)
    assert g.status == "greedy" and _feasible(prob, g.y)
    best = solve_plan(prob)
    assert best.feasible and best.cost <= g.cost + 1e-6
    assert _feasible(prob, best.y)


def test_time_limit_hit_still_answers_and_says_so() -> None:
    prob = _instance(0.01)
    s = solve_plan(prob)
    assert s.feasible and _feasible(prob, s.y)
    assert any("time limit" in n for n in s.notes), s.notes
