"""`plan_workload`: workload + offerings → Plan, with baselines and the price of resilience."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skyfleet.catalog.offerings import expand, load_offerings
from skyfleet.errors import SkyfleetError
from skyfleet.planner.build import to_plan
from skyfleet.planner.diagnose import diagnose
from skyfleet.planner.milp import Solution, Variant
from skyfleet.planner.plan import Comparison, Plan
from skyfleet.planner.problem import Options, Problem, build_problem
from skyfleet.planner.solver import solve_plan
from skyfleet.workload import Workload


class PlanInfeasibleError(SkyfleetError):
    """No plan meets the constraints; the message says which one binds and by how much."""


@dataclass
class PlanResult:
    """The plan plus what the report needs."""

    plan: Plan
    problem: Problem
    solution: Solution
    no_resilience: Solution | None = None
    baselines: list[tuple[Comparison, Solution | None]] = field(default_factory=list)


def _per_day(prob: Problem, cost: float) -> float:
    return cost / (prob.period_hours * prob.T) * 24.0


def cheapest_single_offering(prob: Problem) -> tuple[float, str] | None:
    """Each model on its one cheapest offering (no N-1; quotas per offering); cost, label."""
    total = 0.0
    labels: list[str] = []
    used: dict[int, float] = {}
    y = np.zeros((len(prob.columns), prob.T))
    for m in range(prob.M):
        best: tuple[float, int, np.ndarray] | None = None
        for j, c in enumerate(prob.columns):
            if c.m != m or prob.eff_cap(j) <= 0:
                continue
            n = np.ceil(prob.demand[m] / prob.eff_cap(j) - 1e-9)
            if prob.committed(j):
                n[:] = n.max()
            if n.max() * c.rtype.tp > prob.pools[c.pool].quota:
                continue
            cost = float(n.sum() * prob.replica_price(j) * prob.period_hours)
            if best is None or cost < best[0]:
                best = (cost, j, n)
        if best is None:
            return None
        cost, j, n = best
        total += cost
        y[j] = n
        pool = prob.columns[j].pool
        used[pool] = used.get(pool, 0.0) + float(n.max()) * prob.columns[j].rtype.tp
        labels.append(f"{prob.workload.models[m].name}: {prob.offering(j).id}")
    if any(u > prob.pools[p].quota for p, u in used.items()):
        return None
    return total, "; ".join(labels)


def plan_workload(
    workload: Workload,
    offering_files: Sequence[str | Path] = (),
    *,
    resilience: str | None = None,
    max_share: float | None = None,
    min_providers: int | None = None,
    time_limit_s: float = 60.0,
    baselines: bool = True,
    progress: Callable[[str], None] | None = None,
) -> PlanResult:
    """Plan a workload; raises PlanInfeasibleError with the binding constraint when none exists."""
    say = progress or (lambda _msg: None)
    pl = workload.planning
    offerings = expand(
        load_offerings(offering_files),
        pl.spot_availability,
        pl.providers,
        pl.accelerators,
        pl.tiers,
    )
    if not offerings:
        raise PlanInfeasibleError(
            "no offerings left after the providers/accelerators/tiers filters"
        )
    opts = Options(
        resilience=resilience or pl.resilience,
        max_share=max_share if max_share is not None else pl.max_share,
        min_providers=min_providers if min_providers is not None else pl.min_providers,
        utilization=pl.target_utilization,
        time_limit_s=time_limit_s,
    )
    say("sizing replicas at the SLO (perf model)")
    prob = build_problem(workload, offerings, opts)
    say(f"solving: {len(prob.columns)} columns × {prob.T} periods")
    sol = solve_plan(prob)
    if not sol.feasible:
        say("diagnosing")
        raise PlanInfeasibleError(f"no feasible plan for {workload.name!r}: {diagnose(prob)}")
    result = PlanResult(plan=to_plan(prob, sol), problem=prob, solution=sol)
    if not baselines:
        return result
    sub_limit = max(2.0, time_limit_s / 4)
    comps: list[tuple[Comparison, Solution | None]] = []

    def run(name: str, desc: str, v: Variant, basis: str) -> Solution | None:
        say(f"baseline: {name}")
        if v.columns is not None and not v.columns:
            comps.append(
                (Comparison(name=name, cost_per_day=None, description=desc, basis=basis), None)
            )
            return None
        s = solve_plan(prob, v, time_limit_s=sub_limit)
        cost = round(_per_day(prob, s.cost), 2) if s.feasible else None
        comps.append((Comparison(name=name, cost_per_day=cost, description=desc, basis=basis), s))
        return s if s.feasible else None

    nores: Solution | None = None
    if opts.resilience != "none":
        nores = run(
            "without N-1 resilience",
            "same workload and constraints, but no survival of a provider loss",
            Variant(resilience=False, warm=sol.y),
            "without N-1",
        )
    result.no_resilience = nores
    od = [j for j in range(len(prob.columns)) if prob.offering(j).tier == "on_demand"]
    run(
        "all on-demand",
        "only on-demand tiers (no spot, reserved, owned)",
        Variant(columns=od),
        "same constraints",
    )
    best: tuple[float, str, Solution] | None = None
    for acc in sorted({prob.offering(j).accelerator for j in range(len(prob.columns))}):
        cols = [j for j in range(len(prob.columns)) if prob.offering(j).accelerator == acc]
        if {prob.columns[j].m for j in cols} != set(range(prob.M)):
            continue
        say(f"baseline: only {acc}")
        s = solve_plan(prob, Variant(columns=cols), time_limit_s=sub_limit)
        if s.feasible and (best is None or s.cost < best[0]):
            best = (s.cost, acc, s)
    comps.append(
        (
            Comparison(
                name="best single accelerator type",
                cost_per_day=round(_per_day(prob, best[0]), 2) if best else None,
                description=f"only {best[1]}" if best else "no single type serves every model",
            ),
            best[2] if best else None,
        )
    )
    single = cheapest_single_offering(prob)
    comps.append(
        (
            Comparison(
                name="cheapest single offering",
                cost_per_day=round(_per_day(prob, single[0]), 2) if single else None,
                description=single[1] if single else "no single offering carries a model",
                basis="without N-1 or share limits",
            ),
            None,
        )
    )
    bestp: tuple[float, str] | None = None
    for prov in sorted({prob.provider_of(j) for j in range(len(prob.columns))}):
        cols = [j for j in range(len(prob.columns)) if prob.provider_of(j) == prov]
        if {prob.columns[j].m for j in cols} != set(range(prob.M)):
            continue
        say(f"baseline: only {prov}")
        s = solve_plan(
            prob,
            Variant(columns=cols, resilience=False, share=False, min_providers=False),
            time_limit_s=sub_limit,
        )
        if s.feasible and (bestp is None or s.cost < bestp[0]):
            bestp = (s.cost, prov)
    comps.append(
        (
            Comparison(
                name="single provider",
                cost_per_day=round(_per_day(prob, bestp[0]), 2) if bestp else None,
                description=f"only {bestp[1]}" if bestp else "no provider alone serves it",
                basis="without N-1 or share limits",
            ),
            None,
        )
    )
    # A same-constraint baseline is a feasible plan: if it is cheaper, it becomes the plan.
    for c, alt in comps:
        if c.basis == "same constraints" and alt is not None and alt.cost < sol.cost - 1e-6:
            alt.notes.append(f"the '{c.name}' solution beat the main solve; used as the plan")
            sol = alt
            result.solution = alt
            result.plan = to_plan(prob, alt)
    result.plan.comparisons = [c for c, _ in comps]
    if nores is not None and nores.feasible:
        result.plan.meta.notes.append(
            f"price of resilience: ${_per_day(prob, sol.cost - nores.cost):,.0f}/day "
            f"(+{(sol.cost / nores.cost - 1) if nores.cost > 0 else math.inf:.1%}) over the plan "
            "without N-1"
        )
    return result
