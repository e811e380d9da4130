"""Solve a planning problem: exact MILP when small, LP bound + per-period MILPs when large,
greedy when time runs out.

Large horizons (e.g. 168 hourly periods × hundreds of columns) are solved by relax-and-fix:
the LP relaxation of the whole horizon gives a proven lower bound and the reserved/owned
levels; with those fixed (rounded up where quota allows) every period is an independent small
MILP. The reported gap is (cost − LP bound) / cost, so it is proven, not estimated.
"""

from __future__ import annotations

import math
import time

import numpy as np

from skyfleet.planner.greedy import greedy, greedy_period, repair_period
from skyfleet.planner.milp import Solution, Variant, solve
from skyfleet.planner.problem import Problem

DIRECT_MAX_INT_VARS = 4000
TINY_INT_VARS = 300


def int_vars(prob: Problem, v: Variant) -> int:
    cols = range(len(prob.columns)) if v.columns is None else v.columns
    nt = prob.T if v.periods is None else len(v.periods)
    return sum(1 if prob.committed(j) else nt for j in cols)


def round_committed(prob: Problem, lp: Solution, cols: list[int]) -> dict[int, float]:
    """Reserved/owned levels from the LP, rounded up where the pool's quota allows."""
    fixed: dict[int, float] = {}
    used: dict[int, int] = {}
    committed = [j for j in cols if prob.committed(j)]
    for j in committed:
        fixed[j] = math.floor(lp.y[j, 0] + 1e-6)
        pool = prob.columns[j].pool
        used[pool] = used.get(pool, 0) + int(fixed[j]) * prob.columns[j].rtype.tp
    order = sorted(committed, key=lambda j: -(lp.y[j, 0] - math.floor(lp.y[j, 0] + 1e-6)))
    for j in order:
        if lp.y[j, 0] - fixed[j] <= 1e-6:
            continue
        pool = prob.columns[j].pool
        tp = prob.columns[j].rtype.tp
        if used[pool] + tp <= prob.pools[pool].quota:
            fixed[j] += 1
            used[pool] += tp
    return fixed


def solve_plan(
    prob: Problem, v: Variant | None = None, time_limit_s: float | None = None
) -> Solution:
    """Best plan within the time limit, with a proven gap where one is known."""
    v = v or Variant()
    limit = prob.options.time_limit_s if time_limit_s is None else time_limit_s
    t0 = time.perf_counter()

    def left() -> float:
        return limit - (time.perf_counter() - t0)

    n_int = int_vars(prob, v)
    if n_int <= TINY_INT_VARS:
        start = greedy(prob, v) if v.warm is None else None
        warm = start.y if start is not None and start.feasible else v.warm
        direct = solve(
            prob, Variant(**{**v.__dict__, "warm": warm, "time_limit_s": max(left(), 0.5)})
        )
        if direct.feasible or direct.status == "infeasible":
            return direct
        g = greedy(prob, v)
        g.notes.append(f"time limit ({limit:g} s): the MILP found no plan; this is the greedy plan")
        return g
    small = n_int <= DIRECT_MAX_INT_VARS
    dec = _decomposed(prob, v, limit * (0.4 if small else 1.0), t0)
    if not small or not dec.feasible or left() <= 0:
        return dec
    # Small enough for the exact MILP: start it from the decomposed plan or the caller's.
    warm = v.warm if v.warm is not None else dec.y
    direct = solve(prob, Variant(**{**v.__dict__, "warm": warm, "time_limit_s": max(left(), 0.5)}))
    best = direct if direct.feasible and direct.cost <= dec.cost + 1e-9 else dec
    best.lp = dec.lp
    bounds = [b for b in (dec.bound, direct.bound) if b is not None]
    if bounds and best.cost > 0:
        best.bound = max(bounds)
        best.gap = max(0.0, (best.cost - best.bound) / best.cost)
        if best.gap <= prob.options.mip_rel_gap + 1e-9:
            best.status = "optimal"
    best.seconds = time.perf_counter() - t0
    return best


def _decomposed(prob: Problem, v: Variant, limit: float, t0: float) -> Solution:
    """LP bound over the whole horizon, then one small MILP per period."""
    gap_target = prob.options.mip_rel_gap

    def left() -> float:
        return limit - (time.perf_counter() - t0)

    lp = solve(prob, Variant(**{**v.__dict__, "relax": True, "time_limit_s": max(left(), 0.5)}))
    if lp.status == "infeasible":
        return lp
    if not lp.feasible:
        g = greedy(prob, v)
        g.notes.append(f"time limit ({limit:g} s): the LP relaxation did not finish; greedy plan")
        return g
    bound = lp.cost
    cols = list(range(len(prob.columns))) if v.columns is None else list(v.columns)
    fixed = round_committed(prob, lp, cols)
    periods = list(range(prob.T)) if v.periods is None else list(v.periods)
    y = np.zeros_like(lp.y)
    for j, val in fixed.items():
        y[j, periods] = val
    pools_of: dict[int, list[int]] = {}
    for j in cols:
        pools_of.setdefault(prob.columns[j].pool, []).append(j)
    fallback_periods = 0
    rounded_periods = 0
    for i, t in enumerate(periods):
        budget = left() / (len(periods) - i)
        # Restrict the period's MILP to the LP's support (plus siblings sharing a pool): small
        # and fast; the gap is still measured against the whole-horizon LP bound.
        support = {j for j in cols if lp.y[j, t] > 1e-6 or j in fixed}
        support |= {k for j in list(support) for k in pools_of[prob.columns[j].pool]}
        started = _rounded_start(prob, v, t, cols, y, lp.y, fixed)
        if started:
            support |= {j for j in cols if y[j, t] > 0}
        s: Solution | None = None
        if budget > 0.05:
            s = solve(
                prob,
                Variant(
                    **{
                        **v.__dict__,
                        "columns": sorted(support),
                        "periods": [t],
                        "fixed": {j: x for j, x in fixed.items() if j in support},
                        "lower": {
                            j: float(math.floor(lp.y[j, t] + 1e-6))
                            for j in support
                            if j not in fixed
                        },
                        "time_limit_s": budget,
                        "warm": y if started else None,
                    }
                ),
            )
        if (s is None or not s.feasible) and started:
            rounded_periods += 1  # keep the rounded LP plan for this period
            continue
        if s is None or not s.feasible:
            fallback_periods += 1
            yt = greedy_period(prob, v, t, cols, y)
            if yt is None:
                g = greedy(prob, v)
                g.notes.append("time limit: the MILP found no plan; this is the greedy plan")
                g.bound = bound
                return g
            continue
        for j in cols:
            if not prob.committed(j):
                y[j, t] = s.y[j, t]
    cost = prob.cost(y, cols, periods)
    gap = max(0.0, (cost - bound) / cost) if cost > 0 else 0.0
    status = "optimal" if gap <= gap_target + 1e-9 else "time_limit"
    return Solution(
        y,
        cost,
        status,
        gap=gap,
        bound=bound,
        seconds=time.perf_counter() - t0,
        message=f"LP bound + {len(periods)} per-period MILPs",
        lp=lp,
        notes=([] if status == "optimal" else [f"proven gap {gap:.2%} above the target"])
        + (
            [f"time limit: {fallback_periods} period(s) filled by the greedy fallback"]
            if fallback_periods
            else []
        )
        + (
            [f"time limit: {rounded_periods} period(s) use the rounded LP plan, not a MILP"]
            if rounded_periods
            else []
        ),
    )


def _rounded_start(
    prob: Problem,
    v: Variant,
    t: int,
    cols: list[int],
    y: np.ndarray,
    lp_y: np.ndarray,
    fixed: dict[int, float],
) -> bool:
    """Fill y[:, t] with the LP rounded up where quota allows, then repaired greedily."""
    used: dict[int, int] = {}
    for j, val in fixed.items():
        pool = prob.columns[j].pool
        used[pool] = used.get(pool, 0) + int(val) * prob.columns[j].rtype.tp
    flexible = [j for j in cols if not prob.committed(j)]
    for j in flexible:
        y[j, t] = math.floor(lp_y[j, t] + 1e-6)
        pool = prob.columns[j].pool
        used[pool] = used.get(pool, 0) + int(y[j, t]) * prob.columns[j].rtype.tp
    for j in sorted(flexible, key=lambda j: -(lp_y[j, t] - y[j, t])):
        if lp_y[j, t] - y[j, t] <= 1e-6:
            break
        col = prob.columns[j]
        if used[col.pool] + col.rtype.tp <= prob.pools[col.pool].quota:
            y[j, t] += 1
            used[col.pool] += col.rtype.tp
    return repair_period(prob, v, t, cols, y)
