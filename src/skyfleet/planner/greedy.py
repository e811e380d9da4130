"""Greedy fallback: add the replica with the most constraint repair per dollar until every
period of every model is covered (capacity with headroom, N-1 without spot, max share, min
providers, quotas).

Each replica counts at its bucket-mix capacity (every replica serves the workload's mix), so
the result is feasible for the MILP too; it is only used when the MILP runs out of time.
"""

from __future__ import annotations

import time

import numpy as np

from skyfleet.planner.milp import Solution, Variant
from skyfleet.planner.problem import Problem


def _deficit(
    prob: Problem,
    eff: dict[str, float],
    surv: dict[str, float],
    need: float,
    need_n1: float,
    dem: float,
    v: Variant,
) -> float:
    """How far one model-period is from meeting every constraint (0 = met), in req/s.

    `eff` / `surv`: capacity per failure domain in normal operation / after a loss.
    """
    o = prob.options
    total = sum(eff.values())
    short = max(0.0, need - total)
    if v.resilience and o.resilience != "none":
        # One term per failure scenario, so adding to any domain helps the others' scenarios.
        left = sum(surv.values())
        short += sum(max(0.0, need_n1 - (left - c)) for c in surv.values())
    by_prov: dict[str, float] = {}
    for g, c in eff.items():
        p = g.split("/")[0]
        by_prov[p] = by_prov.get(p, 0.0) + c
    if v.share and o.max_share is not None and o.max_share < 1:
        short += sum(max(0.0, c - o.max_share * total) for c in by_prov.values())
    if v.min_providers and o.min_providers > 1:
        floor = o.min_provider_share * dem
        have = sorted((c for c in by_prov.values()), reverse=True)
        have += [0.0] * o.min_providers
        short += sum(max(0.0, floor - c) for c in have[: o.min_providers])
    return short


def _period(
    prob: Problem, v: Variant, t: int, cols: list[int], y: np.ndarray, per_period: set[int]
) -> bool:
    used: dict[int, int] = {}
    for j in cols:
        pool = int(prob.col_pool[j])
        used[pool] = used.get(pool, 0) + int(y[j, t]) * int(prob.col_tp[j])
    need_all = prob.need if v.headroom else prob.demand
    for m in range(prob.M):
        need = float(need_all[m, t])
        need_n1 = need * (float(prob.need_n1[m, t]) / max(float(prob.need[m, t]), 1e-300))
        dem = float(prob.demand[m, t])
        mcols = [j for j in cols if prob.col_m[j] == m and prob.col_cap[j] > 0]
        grp = {j: prob.group_of(j) for j in mcols}
        eff: dict[str, float] = {g: 0.0 for g in grp.values()}
        surv: dict[str, float] = {g: 0.0 for g in grp.values()}
        for j in mcols:
            eff[grp[j]] += prob.col_cap[j] * y[j, t]
            surv[grp[j]] += prob.col_surv[j] * y[j, t]
        # Within a failure domain only the cheapest capacity with quota left can be best.
        order = sorted(
            (j for j in mcols if j in per_period), key=lambda j: prob.col_price[j] / prob.col_cap[j]
        )
        for _ in range(100000):
            short = _deficit(prob, eff, surv, need, need_n1, dem, v)
            if short <= 1e-9:
                break
            best, best_score, best_n = -1, 0.0, 0
            seen: set[tuple[str, bool]] = set()
            for j in order:
                g = grp[j]
                key = (g, bool(prob.col_surv[j] > 0))
                if key in seen:
                    continue
                pool, tp = int(prob.col_pool[j]), int(prob.col_tp[j])
                room = (prob.pools[pool].quota - used[pool]) // tp
                if room <= 0:
                    continue
                seen.add(key)
                n = int(max(1, min(room, short / prob.col_cap[j] / 4)))
                e2, s2 = dict(eff), dict(surv)
                e2[g] += prob.col_cap[j] * n
                s2[g] += prob.col_surv[j] * n
                gain = short - _deficit(prob, e2, s2, need, need_n1, dem, v)
                score = gain / (prob.col_price[j] * n + 1e-9)
                if gain > 1e-12 and score > best_score:
                    best, best_score, best_n = j, score, n
            if best < 0:
                return False
            y[best, t] += best_n
            used[int(prob.col_pool[best])] += best_n * int(prob.col_tp[best])
            eff[grp[best]] += prob.col_cap[best] * best_n
            surv[grp[best]] += prob.col_surv[best] * best_n
    return True


def repair_period(prob: Problem, v: Variant, t: int, cols: list[int], y: np.ndarray) -> bool:
    """Add per-period replicas to `y[:, t]` until period t meets every constraint."""
    return _period(prob, v, t, cols, y, {j for j in cols if not prob.committed(j)})


def greedy_period(
    prob: Problem, v: Variant, t: int, cols: list[int], y: np.ndarray
) -> np.ndarray | None:
    """Fill period t of `y` greedily on top of what it holds (committed levels); None if stuck."""
    per_period = {j for j in cols if not prob.committed(j)}
    for j in per_period:
        y[j, t] = 0
    return y[:, t] if _period(prob, v, t, cols, y, per_period) else None


def greedy(
    prob: Problem, v: Variant | None = None, fixed: dict[int, float] | None = None
) -> Solution:
    """A feasible plan by greedy repair; committed levels are `fixed` or the per-period peak."""
    v = v or Variant()
    t0 = time.perf_counter()
    cols = list(range(len(prob.columns))) if v.columns is None else list(v.columns)
    periods = list(range(prob.T)) if v.periods is None else list(v.periods)
    y = np.zeros((len(prob.columns), prob.T))
    ok = True
    if fixed is None:
        # Pass 1: everything per period; then hold committed columns at their peak.
        for t in periods:
            ok &= _period(prob, v, t, cols, y, set(cols))
        # Committed capacity is held at its level in the model's peak period, where shares and
        # N-1 hold; with constant capacity they hold in every other period too.
        peak = {m: periods[int(np.argmax(prob.demand[m, periods]))] for m in range(prob.M)}
        fixed = {j: float(y[j, peak[prob.columns[j].m]]) for j in cols if prob.committed(j)}
        y[:] = 0
    for j, val in fixed.items():
        y[j, periods] = val
    per_period = {j for j in cols if not prob.committed(j)}
    for t in periods:
        ok &= _period(prob, v, t, cols, y, per_period)
    cost = prob.cost(y, cols, periods)
    status = "greedy" if ok else "infeasible"
    return Solution(
        y, cost if ok else np.inf, status, seconds=time.perf_counter() - t0, message="greedy"
    )
