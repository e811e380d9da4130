"""Greedy fallback: add the replica with the most constraint repair per dollar until every
period of every model is covered (N-1, max share, min providers, quotas).

Each replica counts at its bucket-mix capacity (every replica serves the workload's mix), so
the result is feasible for the MILP too; it is only used when the MILP runs out of time.
"""

from __future__ import annotations

import time

import numpy as np

from skyfleet.planner.milp import Solution, Variant
from skyfleet.planner.problem import Problem


def _deficit(prob: Problem, caps: dict[str, float], d: float, v: Variant) -> float:
    """How far one model-period is from meeting every constraint (0 = met), in req/s."""
    o = prob.options
    total = sum(caps.values())
    short = max(0.0, d - total)
    if v.resilience and o.resilience != "none":
        # One term per failure scenario, so adding to any domain helps the others' scenarios.
        short += sum(max(0.0, d - (total - c)) for c in caps.values())
    by_prov: dict[str, float] = {}
    for g, c in caps.items():
        p = g.split("/")[0]
        by_prov[p] = by_prov.get(p, 0.0) + c
    if v.share and o.max_share is not None and o.max_share < 1:
        short += sum(max(0.0, c - o.max_share * total) for c in by_prov.values())
    if v.min_providers and o.min_providers > 1:
        need = o.min_provider_share * d
        have = sorted((c for c in by_prov.values()), reverse=True)
        have += [0.0] * o.min_providers
        short += sum(max(0.0, need - c) for c in have[: o.min_providers])
    return short


def _period(
    prob: Problem, v: Variant, t: int, cols: list[int], y: np.ndarray, per_period: set[int]
) -> bool:
    used: dict[int, int] = {}
    for j in cols:
        pool = prob.columns[j].pool
        used[pool] = used.get(pool, 0) + int(y[j, t]) * prob.columns[j].rtype.tp
    for m in range(prob.M):
        d = float(prob.demand[m, t])
        mcols = [j for j in cols if prob.columns[j].m == m and prob.eff_cap(j) > 0]
        cap = {j: prob.eff_cap(j) for j in mcols}
        grp = {j: prob.group_of(j) for j in mcols}
        price = {j: prob.replica_price(j) for j in mcols}
        caps: dict[str, float] = {g: 0.0 for g in grp.values()}
        for j in mcols:
            caps[grp[j]] += cap[j] * y[j, t]
        # Within a failure domain only the cheapest capacity with quota left can be best.
        order = sorted((j for j in mcols if j in per_period), key=lambda j: price[j] / cap[j])
        for _ in range(100000):
            short = _deficit(prob, caps, d, v)
            if short <= 1e-9:
                break
            best, best_score, best_n = -1, 0.0, 0
            seen: set[str] = set()
            for j in order:
                g = grp[j]
                if g in seen:
                    continue
                col = prob.columns[j]
                room = (prob.pools[col.pool].quota - used[col.pool]) // col.rtype.tp
                if room <= 0:
                    continue
                seen.add(g)
                n = int(max(1, min(room, short / cap[j] / 4)))
                trial = dict(caps)
                trial[g] += cap[j] * n
                gain = short - _deficit(prob, trial, d, v)
                score = gain / (price[j] * n + 1e-9)
                if gain > 1e-12 and score > best_score:
                    best, best_score, best_n = j, score, n
            if best < 0:
                return False
            col = prob.columns[best]
            y[best, t] += best_n
            used[col.pool] += best_n * col.rtype.tp
            caps[grp[best]] += cap[best] * best_n
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
    cost = float(sum(prob.replica_price(j) * prob.period_hours * y[j, periods].sum() for j in cols))
    status = "greedy" if ok else "infeasible"
    return Solution(
        y, cost if ok else np.inf, status, seconds=time.perf_counter() - t0, message="greedy"
    )
