"""Where a plan's cost comes from: the cost once each constraint is added (the
decomposition), and what relaxing the binding ones is worth (LP shadow prices)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from skyfleet.planner.milp import Solution, Variant, solve
from skyfleet.planner.plan import Binding, CostStep
from skyfleet.planner.problem import Problem
from skyfleet.planner.solver import DIRECT_MAX_INT_VARS, int_vars, solve_plan


def sample_periods(prob: Problem, target: int = 48) -> list[int]:
    """Every k-th period (k = ⌈T/target⌉): a week hourly in 42 periods. Uniform on purpose:
    adding the peaks biased the LP's $/day up by 2% on the 2.5 B/day week (uniform: ±0.4%)."""
    k = max(1, -(-prob.T // target))
    return list(range(0, prob.T, k))


def _per_day_of(prob: Problem, v: Variant, limit: float) -> tuple[float | None, str]:
    """$/day of a variant: the MILP when small, else the LP relaxation on sampled periods."""
    if int_vars(prob, v) <= DIRECT_MAX_INT_VARS:
        s: Solution = solve_plan(prob, v, time_limit_s=limit)
        how = ""
    else:
        periods = sample_periods(prob)
        v = replace(v, periods=periods, relax=True, time_limit_s=limit)
        s = solve(prob, v)
        how = f" (LP relaxation on {len(periods)} of {prob.T} periods)"
    if not s.feasible:
        return None, how
    n = prob.T if v.periods is None else len(v.periods)
    return s.cost / (n * prob.period_hours) * 24.0, how


def decompose(
    prob: Problem, plan_per_day: float, limit: float, warm: np.ndarray | None = None
) -> list[CostStep]:
    """The cost as constraints are added one at a time, in this order: SLO capacity on
    on-demand prices with unlimited quota; real quotas; spot/reserved/owned tiers; headroom;
    N-1 spare; share limits; minimum providers; then whole replicas and instances (the plan).
    Large problems use LP relaxations for the intermediate steps (stated per step); small
    ones solve each step as a MILP started from the plan (`warm`), which every step admits.
    The step with every constraint is the plan itself."""
    o = prob.options
    od = [j for j in range(len(prob.columns)) if prob.offering(j).tier == "on_demand"]
    base = Variant(resilience=False, share=False, min_providers=False, headroom=False)
    steps: list[tuple[str, Variant, str]] = []
    if od:
        steps.append(
            (
                "SLO capacity at on-demand prices, unlimited quota",
                replace(base, columns=od, quota_scale=np.inf),
                "the cheapest accelerators for the SLO, as if any quota were available",
            )
        )
        steps.append(
            (
                "+ quotas",
                replace(base, columns=od),
                "each region's quota per tier, in whole billing units",
            )
        )
    steps.append(("+ price tiers", base, "spot, reserved and owned capacity where cheaper"))
    if o.headroom > 0:
        base = replace(base, headroom=True)
        steps.append(
            (f"+ {o.headroom:.0%} headroom", base, "spare capacity over demand in every period")
        )
    if o.resilience != "none":
        base = replace(base, resilience=True)
        spot = "spot not counted" if o.spot_in_survivors == "none" else "spot discounted"
        kept = ", sheddable traffic may be shed" if o.shed_on_loss else ""
        steps.append(
            (
                f"+ N-1 spare ({o.resilience})",
                base,
                f"survive the loss of any one {o.resilience} ({spot}{kept})",
            )
        )
    if o.max_share is not None and o.max_share < 1:
        base = replace(base, share=True)
        steps.append(
            (f"+ max share {o.max_share:.0%}", base, "no provider holds more of a model's capacity")
        )
    if o.min_providers > 1:
        base = replace(base, min_providers=True)
        steps.append(
            (
                f"+ min {o.min_providers} providers",
                base,
                "every period uses at least that many providers",
            )
        )
    exact = int_vars(prob, Variant()) <= DIRECT_MAX_INT_VARS
    out: list[CostStep] = []
    prev: float | None = None
    for i, (name, v, desc) in enumerate(steps):
        cost: float | None
        if exact and i == len(steps) - 1:
            cost, how = plan_per_day, ""  # every constraint: the plan
        else:
            warm_ok = warm is not None and v.columns is None and np.isfinite(v.quota_scale)
            cost, how = _per_day_of(prob, replace(v, warm=warm if warm_ok else None), limit)
            if warm_ok and exact and (cost is None or cost > plan_per_day):
                cost = plan_per_day  # every step admits the plan; the search found no better
        per_day = None if cost is None else round(cost, 2)
        out.append(
            CostStep(
                name=name,
                cost_per_day=per_day,
                delta_per_day=None if per_day is None or prev is None else round(per_day - prev, 2),
                description=desc + how,
            )
        )
        prev = per_day if per_day is not None else prev
    if out and out[-1].cost_per_day == round(plan_per_day, 2) and out[-1].description:
        out[-1].description += "; solved with integers, this is the plan"
        return out
    out.append(
        CostStep(
            name="= the plan",
            cost_per_day=round(plan_per_day, 2),
            delta_per_day=None if prev is None else round(plan_per_day - prev, 2),
            description="whole replicas and instances, solved to the optimality gap",
        )
    )
    return out


def binding_constraints(prob: Problem, lp: Solution | None = None, top: int = 6) -> list[Binding]:
    """Shadow prices of the LP relaxation with every constraint (`lp`, or solved here):
    quota per pool, headroom, shedding during a loss, share per provider — each as $/day
    saved by a stated step (a linear estimate)."""
    o = prob.options
    if lp is None or not lp.duals:
        lp = solve(prob, Variant(relax=True))
    if not lp.feasible or not lp.duals:
        return []
    day = 24.0 / (prob.period_hours * prob.T)
    out: list[Binding] = []
    quota: dict[int, float] = {}
    dh = 0.0
    dk = np.zeros(prob.M)
    share: dict[tuple[int, str], float] = {}
    for label, dual in lp.duals.items():
        kind = label[0]
        if kind == "quota":
            pi = int(label[1])
            quota[pi] = quota.get(pi, 0.0) - dual
        elif kind == "demand":
            m, b, t = int(label[1]), int(label[2]), int(label[3])
            dh += dual * prob.demand[m, t] * prob.fractions[m][b]
        elif kind == "n1":
            m, t = int(label[1]), int(label[3])
            kept = prob.need_n1[m, t] / max(prob.need[m, t], 1e-300)
            dh += dual * prob.demand[m, t] * kept
            dk[m] += dual * prob.need[m, t]
        elif kind == "share":
            m, p, t = int(label[1]), str(label[2]), int(label[3])
            mc = prob.col_m == m
            total = float(prob.col_cap[mc] @ lp.y[mc, t])
            share[(m, p)] = share.get((m, p), 0.0) - dual * total
    for pi, v in quota.items():
        pool = prob.pools[pi]
        stepsz = max(8, pool.unit)
        if v * stepsz * day > 1.0:
            out.append(
                Binding(
                    kind="quota",
                    what=pool.label,
                    saves_per_day=round(v * stepsz * day, 2),
                    step=f"+{stepsz} accelerators of quota",
                )
            )
    if o.headroom > 0 and dh * day * 0.05 > 1.0:
        out.append(
            Binding(
                kind="headroom",
                what=f"{o.headroom:.0%} headroom",
                saves_per_day=round(dh * day * 0.05, 2),
                step="−5 points of headroom",
            )
        )
    if o.resilience != "none" and "sheddable" not in o.shed_on_loss:
        for m, mw in enumerate(prob.workload.models):
            v = dk[m] * mw.priority.sheddable * day
            if v > 1.0:
                out.append(
                    Binding(
                        kind="n1",
                        what=f"{mw.name}: N-1 covers sheddable traffic",
                        saves_per_day=round(v, 2),
                        step="shed sheddable traffic during a loss",
                    )
                )
    for (m, p), v in share.items():
        if v * 0.05 * day > 1.0:
            out.append(
                Binding(
                    kind="share",
                    what=f"{prob.workload.models[m].name}: max share on {p}",
                    saves_per_day=round(v * 0.05 * day, 2),
                    step="+5 points of max share",
                )
            )
    out.sort(key=lambda b: -b.saves_per_day)
    return out[:top]
