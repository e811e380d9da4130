"""Turn a solution into a Plan: split pools back over regions, route buckets, explain."""

from __future__ import annotations

import numpy as np

from skyfleet.planner.milp import Solution
from skyfleet.planner.plan import ModelDemand, Plan, PlanEntry, PlanMeta, Totals
from skyfleet.planner.problem import Problem
from skyfleet.planner.routing import route


def _split(total: int, quotas: list[int], tp: int, used: list[int]) -> list[int]:
    """Spread `total` replicas over regions as evenly as their remaining quotas allow."""
    out = [0] * len(quotas)
    left = total
    while left > 0:
        room = [i for i in range(len(quotas)) if used[i] + tp <= quotas[i]]
        if not room:
            out[0] += left  # cannot happen for a feasible solution; keep the count
            break
        for i in sorted(room, key=lambda i: out[i]):
            if left == 0:
                break
            if used[i] + tp <= quotas[i]:
                out[i] += 1
                used[i] += tp
                left -= 1
    return out


def _region_counts(prob: Problem, y: np.ndarray) -> dict[int, list[list[int]]]:
    """Column → per-offering-in-pool → replicas per period."""
    out: dict[int, list[list[int]]] = {}
    by_pool: dict[int, list[int]] = {}
    for jj in np.nonzero(y.sum(axis=1) > 0.5)[0]:
        by_pool.setdefault(prob.columns[int(jj)].pool, []).append(int(jj))
    for pi, js in by_pool.items():
        offs = prob.pools[pi].offerings
        quotas = [o.quota for o in offs]
        js.sort(key=lambda j: (not prob.committed(j), j))
        for j in js:
            out[j] = [[0] * prob.T for _ in offs]
        for t in range(prob.T):
            used = [0] * len(offs)
            for j in js:
                parts = _split(round(float(y[j, t])), quotas, prob.columns[j].rtype.tp, used)
                for i, n in enumerate(parts):
                    out[j][i][t] = n
    return out


def _reasons(prob: Problem, y: np.ndarray, j: int, shares: dict[str, float]) -> str:
    col = prob.columns[j]
    o = prob.offering(j)
    m = col.m
    parts: list[str] = []
    if o.committed:
        parts.append(
            f"{o.tier.replace('_', ' ')} at ${o.price:.2f}/accelerator-h covers the always-on base"
        )
    # Cheapest $/req for which bucket among the columns the plan uses for this model?
    used = [k for k in range(len(prob.columns)) if prob.columns[k].m == m and y[k].sum() > 0]
    labels = [b.label for b in prob.workload.models[m].sizes]
    for bi, lab in enumerate(labels):

        def per_req(k: int, bi: int = bi) -> float:
            c = prob.columns[k]
            cap = c.rtype.cap[bi] * prob.offering(k).availability
            return prob.replica_price(k) / cap if cap > 0 else np.inf

        best = min(used, key=per_req)
        if best == j and shares.get(lab, 0) > 0.01:
            parts.append(f"cheapest $/request for {lab}-token requests")
    if o.tier == "spot":
        parts.append(f"spot, counted at {o.availability:.0%} availability")
    pool = prob.pools[col.pool]
    gpus = sum(
        y[k].max() * prob.columns[k].rtype.tp
        for k in range(len(prob.columns))
        if prob.columns[k].pool == col.pool
    )
    if gpus >= pool.quota - 1e-6:
        parts.append(f"quota-bound (all {pool.quota} accelerators)")
    if prob.options.resilience != "none":
        # Needed for N-1 if, in its peak period, the plan would still serve normal demand without
        # it but then fail N-1.
        t = int(np.argmax(y[j]))
        d = float(prob.demand[m, t])
        caps: dict[str, float] = {}
        for k in used:
            g = prob.group_of(k)
            caps[g] = caps.get(g, 0.0) + prob.eff_cap(k) * y[k, t]
        g = prob.group_of(j)
        caps[g] -= prob.eff_cap(j) * y[j, t]
        total = sum(caps.values())
        if total >= d and total - max(caps.values()) < d:
            parts.append(f"needed for N-1 (survives the loss of any one {prob.options.resilience})")
    if not parts:
        parts.append("cheapest capacity left under the quota, share and N-1 constraints")
    return "; ".join(parts)


def to_plan(prob: Problem, sol: Solution, solver: str = "highs-milp") -> Plan:
    """A Plan from a feasible solution."""
    w = prob.workload
    y = np.round(sol.y)
    regions = _region_counts(prob, y)
    # Routing per model and period: bucket shares per replica type, utilisation.
    type_share: dict[tuple[int, int], dict[int, float]] = {}  # (m, k) → bucket → req/s·periods
    for m in range(prob.M):
        rts = prob.rtypes[m]
        for t in range(prob.T):
            units = [0.0] * len(rts)
            for j in range(len(prob.columns)):
                c = prob.columns[j]
                if c.m == m and y[j, t] > 0:
                    units[rts.index(c.rtype)] += y[j, t] * prob.offering(j).availability
            lam = [float(prob.demand[m, t]) * f for f in prob.fractions[m]]
            r = route(rts, units, lam)
            if r is None:
                continue
            z, _ = r
            for k in range(len(rts)):
                for b in range(len(lam)):
                    if z[b, k] > 0:
                        d = type_share.setdefault((m, k), {})
                        d[b] = d.get(b, 0.0) + z[b, k]
    entries: list[PlanEntry] = []
    for j, per_region in regions.items():
        col = prob.columns[j]
        m = col.m
        mw = w.models[m]
        rts = prob.rtypes[m]
        k = rts.index(col.rtype)
        # This column's share of its type's capacity, over the horizon.
        type_units = sum(
            y[i].sum() * prob.offering(i).availability
            for i in range(len(prob.columns))
            if prob.columns[i].m == m and prob.columns[i].rtype == col.rtype
        )
        frac = y[j].sum() * prob.offering(j).availability / type_units if type_units else 0.0
        totals_b = [float(prob.demand[m].sum()) * f for f in prob.fractions[m]]
        shares = {
            mw.sizes[b].label: round(frac * v / totals_b[b], 4)
            for b, v in type_share.get((m, k), {}).items()
            if totals_b[b] > 0
        }
        reason = _reasons(prob, y, j, shares)
        capacity = col.rtype.cap_mix
        if capacity <= 0:  # a type that serves only some buckets: capacity for those it serves
            wts = {b: v for b, v in type_share.get((m, k), {}).items() if col.rtype.cap[b] > 0}
            load = sum(v / col.rtype.cap[b] for b, v in wts.items())
            capacity = sum(wts.values()) / load if load > 0 else max(col.rtype.cap)
        for i, counts in enumerate(per_region):
            if not any(counts):
                continue
            o = prob.pools[col.pool].offerings[i]
            part = sum(counts) / max(y[j].sum(), 1)
            entries.append(
                PlanEntry(
                    model=mw.name,
                    model_spec=mw.model,
                    offering=o.id,
                    provider=o.provider,
                    region=o.region,
                    accelerator=o.accelerator,
                    accelerators_per_replica=col.rtype.tp,
                    tier=o.tier,
                    price_per_replica_hour=round(o.price * col.rtype.tp, 4),
                    capacity_rps_per_replica=round(capacity, 4),
                    concurrency_per_replica=col.rtype.concurrency,
                    capacity_by_bucket={
                        mw.sizes[b].label: round(c, 4) for b, c in enumerate(col.rtype.cap)
                    },
                    bucket_shares={b: round(s * part, 4) for b, s in shares.items()},
                    availability=o.availability,
                    replicas=[int(x) for x in counts],
                    reason=reason,
                )
            )
    entries.sort(key=lambda e: (e.model, e.provider, e.region, e.accelerator, e.tier))
    hours = prob.period_hours * prob.T
    cost = sum(e.cost(prob.period_hours) for e in entries)
    tokens_day = sum(w.requests_per_day(mw.name) * mw.tokens_per_request for mw in w.models)
    per_day = cost / hours * 24.0
    opts = prob.options
    plan = Plan(
        meta=PlanMeta(
            workload=w.name,
            period_hours=prob.period_hours,
            periods=prob.T,
            objective="min cost subject to SLO capacity, quotas, N-1, shares",
            solver=solver,
            status=sol.status,
            optimality_gap=None if sol.gap is None else round(sol.gap, 6),
            solve_seconds=round(sol.seconds, 2),
            resilience=opts.resilience,
            max_share=opts.max_share,
            min_providers=opts.min_providers,
            spot_availability=w.planning.spot_availability,
            notes=list(sol.notes),
        ),
        models=[
            ModelDemand(
                name=mw.name,
                model=mw.model,
                demand_rps=[round(float(x), 4) for x in prob.demand[m]],
                tokens_per_request=round(mw.tokens_per_request, 2),
                slo={
                    "ttft_ms": mw.slo.ttft_ms,
                    "tpot_ms": mw.slo.tpot_ms,
                    "percentile": mw.slo.percentile,
                },
            )
            for m, mw in enumerate(w.models)
        ],
        entries=entries,
        totals=Totals(
            cost_horizon=round(cost, 2),
            cost_per_day=round(per_day, 2),
            cost_per_month=round(cost / hours * 730.0, 2),
            usd_per_million_tokens=round(per_day / tokens_day * 1e6, 5) if tokens_day else 0.0,
            tokens_per_day=round(tokens_day, 0),
        ),
    )
    return plan
