"""`plan_workload`: workload + offerings → a validated Plan, with like-for-like baselines,
the cost decomposition and the binding constraints."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from skyfleet.catalog.offerings import Offering, expand, load_offerings
from skyfleet.errors import SkyfleetError
from skyfleet.planner.build import to_plan
from skyfleet.planner.diagnose import diagnose
from skyfleet.planner.explain import binding_constraints, decompose, sample_periods
from skyfleet.planner.milp import Solution, Variant, solve
from skyfleet.planner.plan import Comparison, Plan
from skyfleet.planner.problem import Options, Problem, build_problem
from skyfleet.planner.solver import solve_plan
from skyfleet.planner.validate import PlanInvalidError, validate_plan
from skyfleet.workload import Workload

__all__ = [
    "PlanInfeasibleError",
    "PlanInvalidError",
    "PlanResult",
    "plan_workload",
    "planning_options",
    "workload_offerings",
]


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
    timings: dict[str, float] = field(default_factory=dict)  # phase → seconds


class _Phases:
    """Progress messages that also time each phase (a message starts the next one)."""

    def __init__(self, progress: Callable[[str], None] | None) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}
        self.name = "reading the catalog"
        self.t = time.perf_counter()

    def __call__(self, msg: str) -> None:
        self.stop()
        self.name = msg.split(":")[0] if msg.startswith("solving") else msg
        if self.progress is not None:
            self.progress(msg)

    def stop(self) -> dict[str, float]:
        now = time.perf_counter()
        self.seconds[self.name] = self.seconds.get(self.name, 0.0) + now - self.t
        self.t = now
        return self.seconds


def _per_day(prob: Problem, cost: float) -> float:
    return cost / (prob.period_hours * prob.T) * 24.0


def cheapest_single_offering(prob: Problem) -> tuple[float, str] | None:
    """Each model on its one cheapest offering (no N-1; quotas per offering); cost, label."""
    total = 0.0
    labels: list[str] = []
    y = np.zeros((len(prob.columns), prob.T))
    for m in range(prob.M):
        best: tuple[float, int, np.ndarray] | None = None
        for j in (int(x) for x in np.nonzero((prob.col_m == m) & (prob.col_cap > 0))[0]):
            n = np.ceil(prob.need[m] / prob.col_cap[j] - 1e-9)
            if prob.committed(j):
                n[:] = n.max()
            if n.max() * prob.col_tp[j] > prob.pools[prob.col_pool[j]].quota:
                continue
            trial = np.zeros_like(y)
            trial[j] = n
            cost = prob.cost(trial)
            if best is None or cost < best[0]:
                best = (cost, j, n)
        if best is None:
            return None
        _, j, n = best
        y[j] += n
        labels.append(f"{prob.workload.models[m].name}: {prob.offering(j).id}")
    used: dict[int, float] = {}
    for j in (int(x) for x in np.nonzero(y.sum(axis=1))[0]):
        p = int(prob.col_pool[j])
        used[p] = used.get(p, 0.0) + float(y[j].max()) * prob.col_tp[j]
    if any(u > prob.pools[p].quota for p, u in used.items()):
        return None
    total = prob.cost(y)
    return total, "; ".join(labels)


def planning_options(
    workload: Workload,
    *,
    resilience: str | None = None,
    max_share: float | None = None,
    min_providers: int | None = None,
    headroom: float | None = None,
    spot_in_survivors: str | None = None,
    time_limit_s: float = 60.0,
) -> Options:
    """The workload's planning options with command-line overrides."""
    pl = workload.planning
    return Options(
        resilience=resilience or pl.resilience,
        spot_in_survivors=spot_in_survivors or pl.spot_in_survivors,
        headroom=pl.headroom if headroom is None else headroom,
        shed_on_loss=list(pl.shed_on_loss),
        max_share=max_share if max_share is not None else pl.max_share,
        min_providers=min_providers if min_providers is not None else pl.min_providers,
        utilization=pl.target_utilization,
        time_limit_s=time_limit_s,
    )


def workload_offerings(
    workload: Workload, offering_files: Sequence[str | Path] = ()
) -> list[Offering]:
    """The catalog (plus override files) as offerings, after the workload's filters."""
    pl = workload.planning
    return expand(
        load_offerings(offering_files),
        pl.spot_availability,
        pl.providers,
        pl.accelerators,
        pl.tiers,
    )


def plan_workload(
    workload: Workload,
    offering_files: Sequence[str | Path] = (),
    *,
    resilience: str | None = None,
    max_share: float | None = None,
    min_providers: int | None = None,
    headroom: float | None = None,
    spot_in_survivors: str | None = None,
    time_limit_s: float = 60.0,
    baselines: bool = True,
    progress: Callable[[str], None] | None = None,
) -> PlanResult:
    """Plan a workload; raises PlanInfeasibleError with the binding constraint when none
    exists, and PlanInvalidError if the written plan would break a quota or N-1."""
    say = _Phases(progress)
    offerings = workload_offerings(workload, offering_files)
    if not offerings:
        raise PlanInfeasibleError(
            "no offerings left after the providers/accelerators/tiers filters"
        )
    opts = planning_options(
        workload,
        resilience=resilience,
        max_share=max_share,
        min_providers=min_providers,
        headroom=headroom,
        spot_in_survivors=spot_in_survivors,
        time_limit_s=time_limit_s,
    )
    say("sizing replicas at the SLO (perf model)")
    prob = build_problem(workload, offerings, opts)
    say(f"solving: {len(prob.columns)} columns × {prob.T} periods")
    sol = solve_plan(prob)
    if not sol.feasible:
        say("diagnosing")
        raise PlanInfeasibleError(f"no feasible plan for {workload.name!r}: {diagnose(prob)}")
    say("writing the plan")
    result = PlanResult(plan=to_plan(prob, sol), problem=prob, solution=sol)
    if baselines:
        _baselines(result, offerings, time_limit_s, say)
    say("validating the plan")
    problems = validate_plan(result.plan, offerings)
    result.timings = say.stop()
    if problems:
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        raise PlanInvalidError(
            f"the plan for {workload.name!r} fails its own check, so it is not written: "
            + "; ".join(problems[:5])
            + more
        )
    result.plan.meta.validated = True
    return result


def _baselines(
    result: PlanResult, offerings: list[Offering], time_limit_s: float, say: Callable[[str], None]
) -> None:
    prob, sol = result.problem, result.solution
    main_lp = sol.lp
    opts = prob.options
    sub_limit = max(2.0, time_limit_s / 8)
    comps: list[tuple[Comparison, Solution | None]] = []
    survives = opts.resilience if opts.resilience != "none" else "none"

    def add(name: str, s: Solution | None, desc: str, basis: str, surv: str) -> None:
        cost = round(_per_day(prob, s.cost), 2) if s is not None and s.feasible else None
        if s is not None and s.feasible and s.status != "optimal" and s.gap is not None:
            desc += f" (time limit: within {s.gap:.1%} of its bound)"
        comps.append(
            (
                Comparison(
                    name=name, cost_per_day=cost, description=desc, basis=basis, survives=surv
                ),
                s if s is not None and s.feasible else None,
            )
        )

    nores: Solution | None = None
    if opts.resilience != "none":
        say("baseline: without N-1")
        # The price of resilience rests on this one: twice the others' time.
        nores = solve_plan(prob, Variant(resilience=False, warm=sol.y), time_limit_s=2 * sub_limit)
        if not nores.feasible or nores.cost > sol.cost:  # the plan itself qualifies
            nores = Solution(
                sol.y.copy(),
                sol.cost,
                sol.status,
                gap=sol.gap,
                bound=sol.bound,
                notes=["the plan itself: the search found nothing cheaper"],
            )
        add(
            "without N-1 resilience",
            nores,
            "same workload and constraints, but no survival of a provider loss",
            "without N-1",
            "none",
        )
    result.no_resilience = nores if nores is not None and nores.feasible else None
    od = [j for j in range(len(prob.columns)) if prob.offering(j).tier == "on_demand"]
    say("baseline: all on-demand")
    add(
        "all on-demand",
        solve_plan(prob, Variant(columns=od), time_limit_s=sub_limit) if od else None,
        "only on-demand tiers (no spot, reserved, owned)",
        "same constraints",
        survives,
    )
    by_acc: dict[str, list[int]] = {}
    for j in range(len(prob.columns)):
        by_acc.setdefault(prob.offering(j).accelerator, []).append(j)
    say("baseline: best single accelerator type")
    best_acc = _best_subset(prob, by_acc, Variant(), sub_limit)
    add(
        "best single accelerator type",
        best_acc[1] if best_acc else None,
        f"only {best_acc[0]}" if best_acc else "no single type serves every model",
        "same constraints",
        survives,
    )
    single = cheapest_single_offering(prob)
    comps.append(
        (
            Comparison(
                name="cheapest single offering",
                cost_per_day=round(_per_day(prob, single[0]), 2) if single else None,
                description=single[1] if single else "no single offering carries a model",
                basis="without N-1 or share limits",
                survives="none",
            ),
            None,
        )
    )
    say("baseline: single cloud")
    _single_cloud(result, offerings, comps, sub_limit)
    # A same-constraint baseline is a feasible plan: if it is cheaper, it becomes the plan.
    for c, alt in comps:
        if c.basis == "same constraints" and alt is not None and alt.cost < sol.cost - 1e-6:
            alt.notes.append(f"the '{c.name}' solution beat the main solve; used as the plan")
            sol = alt
            result.solution = alt
            result.plan = to_plan(prob, alt)
    plan = result.plan
    plan.comparisons = [c for c, _ in comps]
    result.baselines = comps
    say("explaining: cost decomposition and binding constraints")
    plan.decomposition = decompose(prob, plan.totals.cost_per_day, sub_limit, warm=sol.y)
    plan.binding = binding_constraints(prob, main_lp)
    if nores is not None and nores.feasible:
        plan.meta.notes.append(
            f"price of resilience: ${_per_day(prob, sol.cost - nores.cost):,.0f}/day "
            f"(+{(sol.cost / nores.cost - 1) if nores.cost > 0 else math.inf:.1%}) over the plan "
            "without N-1"
        )


def _best_subset(
    prob: Problem, subsets: dict[str, list[int]], v: Variant, limit: float
) -> tuple[str, Solution] | None:
    """The subset of columns with the cheapest plan: ranked by their LP relaxations on
    sampled periods, then the best `solve` as MILPs until one is feasible."""
    ranked: list[tuple[float, str]] = []
    periods = sample_periods(prob)
    for name, cols in subsets.items():
        if {int(prob.col_m[j]) for j in cols} != set(range(prob.M)):
            continue
        lp = solve(prob, replace(v, columns=cols, periods=periods, relax=True, time_limit_s=limit))
        if lp.feasible:
            ranked.append((lp.cost, name))
    best: tuple[str, Solution] | None = None
    for _, name in sorted(ranked)[:2]:
        if best is not None:
            break
        s = solve_plan(prob, replace(v, columns=subsets[name]), time_limit_s=limit)
        if s.feasible and (best is None or s.cost < best[1].cost):
            best = (name, s)
    return best


def _single_cloud(
    result: PlanResult,
    offerings: list[Offering],
    comps: list[tuple[Comparison, Solution | None]],
    limit: float,
) -> None:
    """The cheapest one-provider fleet that meets the same SLO and headroom and survives the
    loss of any one of its regions (spot counted the same way), and the cheapest one that
    survives nothing."""
    prob = result.problem
    o = prob.options
    region_opts = replace(o, resilience="region", max_share=None, min_providers=1)
    rprob = build_problem(
        prob.workload, offerings, region_opts, rtypes=(prob.rtypes, prob.unservable)
    )
    by_prov: dict[str, list[int]] = {}
    for j in range(len(rprob.columns)):
        by_prov.setdefault(rprob.provider_of(j), []).append(j)
    for name, v, surv, desc in (
        (
            "single cloud, region N-1",
            Variant(),
            "region",
            "one provider, surviving the loss of any one of its regions",
        ),
        (
            "single cloud, no resilience",
            Variant(resilience=False),
            "none",
            "one provider, surviving no loss at all",
        ),
    ):
        best = _best_subset(rprob, by_prov, v, limit)
        cost = round(_per_day(rprob, best[1].cost), 2) if best else None
        comps.append(
            (
                Comparison(
                    name=name,
                    cost_per_day=cost,
                    description=f"only {best[0]}: {desc}"
                    if best
                    else "no single provider's quotas carry it"
                    + (" with region N-1" if surv == "region" else ""),
                    basis="same SLO and headroom"
                    + (", region N-1" if surv == "region" else ", no N-1"),
                    survives=surv,
                ),
                None,
            )
        )
