"""Turn a solution into a Plan: fill rented units, split pools over regions exactly, route
buckets, explain each entry, and state the N-1 coverage per model."""

from __future__ import annotations

import math

import numpy as np

from skyfleet.errors import SkyfleetError
from skyfleet.planner.milp import Solution
from skyfleet.planner.plan import (
    Coverage,
    IdleCapacity,
    ModelDemand,
    Plan,
    PlanEntry,
    PlanMeta,
    Totals,
)
from skyfleet.planner.problem import Problem
from skyfleet.planner.routing import route


class PlanSplitError(SkyfleetError):
    """A pooled offering's replicas could not be placed in its regions' quotas."""


def split_pool(
    quotas: list[int], block: int, replicas: list[tuple[int, int]], idle: int = 0
) -> tuple[dict[int, list[int]], list[int]]:
    """Place replicas (column, TP) and `idle` accelerators in regions of `quotas`.

    Blocks of `block` accelerators are opened one after another, each in the region with the
    most blocks left; replicas go in, largest TP first. With every TP a power of two dividing
    `block` and every quota a multiple of it, each block fills before the next opens, so this
    succeeds whenever the accelerators fit the summed quota. Returns column → replicas per
    region, and idle accelerators per region.
    """
    left = [q // block for q in quotas]
    out: dict[int, list[int]] = {}
    idle_by: list[int] = [0] * len(quotas)
    region, room = -1, 0
    order = sorted(replicas, key=lambda r: (-r[1], r[0]))

    def open_block() -> None:
        nonlocal region, room
        if max(left, default=0) <= 0:
            raise PlanSplitError(
                f"{sum(t for _, t in replicas) + idle} accelerators do not fit quotas {quotas} "
                f"in blocks of {block}"
            )
        region = max(range(len(left)), key=lambda i: (left[i], -i))
        left[region] -= 1
        room = block

    for col, tp in order:
        if room < tp:
            if room:
                raise PlanSplitError(f"TP {tp} does not pack into blocks of {block}")
            open_block()
        out.setdefault(col, [0] * len(quotas))[region] += 1
        room -= tp
    while idle > 0:
        if room == 0:
            open_block()
        take = min(room, idle)
        idle_by[region] += take
        room -= take
        idle -= take
    return out, idle_by


def _fill_units(prob: Problem, y: np.ndarray) -> np.ndarray:
    """Accelerators paid for but idle, per pool and period; partial billing units are filled
    with replicas of the smallest TP on the pool where the max-share limit allows."""
    idle = np.zeros((len(prob.pools), prob.T), dtype=int)
    share = prob.options.max_share
    for p in np.nonzero(prob.pool_units)[0]:
        js = [int(j) for j in np.nonzero(prob.col_pool == p)[0]]
        unit = prob.pools[p].unit
        periods = [0] if prob.committed(js[0]) else range(prob.T)
        for t in periods:
            ts = list(range(prob.T)) if prob.committed(js[0]) else [t]
            gpus = int(sum(y[j, t] * prob.col_tp[j] for j in js))
            free = -gpus % unit
            if free == 0:
                continue
            for j in sorted((j for j in js if y[j, t] > 0), key=lambda j: prob.col_tp[j]):
                add = free // int(prob.col_tp[j])
                if add and _share_ok(prob, y, j, add, ts, share):
                    y[j, ts] += add
                    free -= add * int(prob.col_tp[j])
                if free == 0:
                    break
            idle[p, ts] = free
    return idle


def _share_ok(
    prob: Problem, y: np.ndarray, j: int, add: int, ts: list[int], share: float | None
) -> bool:
    if share is None or share >= 1:
        return True
    m = prob.col_m[j]
    mcols = prob.col_m == m
    prov = prob.col_provider == prob.col_provider[j]
    for t in ts:
        total = float(prob.col_cap[mcols] @ y[mcols, t]) + add * prob.col_cap[j]
        mine = float(prob.col_cap[mcols & prov] @ y[mcols & prov, t]) + add * prob.col_cap[j]
        if mine > share * total + 1e-9:
            return False
    return True


def _region_counts(
    prob: Problem, y: np.ndarray, idle: np.ndarray
) -> tuple[dict[int, list[list[int]]], dict[int, list[list[int]]]]:
    """Column → per-offering-in-pool → replicas per period; pool → idle per region per period."""
    out: dict[int, list[list[int]]] = {}
    idle_out: dict[int, list[list[int]]] = {}
    used_pools = {int(prob.col_pool[j]) for j in np.nonzero(y.sum(axis=1) > 0.5)[0]}
    used_pools |= {int(p) for p in np.nonzero(idle.sum(axis=1) > 0)[0]}
    for pi in sorted(used_pools):
        pool = prob.pools[pi]
        js = [int(j) for j in np.nonzero(prob.col_pool == pi)[0] if y[j].sum() > 0.5]
        quotas = [o.quota for o in pool.offerings]
        block = max([pool.unit] + [int(prob.col_tp[j]) for j in js])
        for j in js:
            out[j] = [[0] * prob.T for _ in quotas]
        idle_out[pi] = [[0] * prob.T for _ in quotas]
        cache: dict[tuple[int, ...], tuple[dict[int, list[int]], list[int]]] = {}
        for t in range(prob.T):
            counts = (*[int(y[j, t]) for j in js], int(idle[pi, t]))
            if counts not in cache:
                reps = [
                    (j, int(prob.col_tp[j]))
                    for j, n in zip(js, counts, strict=False)
                    for _ in range(n)
                ]
                if len(quotas) == 1:  # nothing to split; the solver kept the quota
                    cache[counts] = (
                        {j: [n] for j, n in zip(js, counts, strict=False)},
                        [counts[-1]],
                    )
                else:
                    cache[counts] = split_pool(quotas, block, reps, counts[-1])
            per_col, idle_by = cache[counts]
            for j in js:
                for i, n in enumerate(per_col.get(j, [0] * len(quotas))):
                    out[j][i][t] = n
            for i, n in enumerate(idle_by):
                idle_out[pi][i][t] = n
    return out, idle_out


def _reasons(prob: Problem, y: np.ndarray, j: int, shares: dict[str, float]) -> str:
    col = prob.columns[j]
    o = prob.offering(j)
    m = col.m
    parts: list[str] = []
    if o.committed:
        parts.append(
            f"{o.tier.replace('_', ' ')} at ${o.price:.2f}/accelerator-h covers the always-on base"
        )
    used = [k for k in range(len(prob.columns)) if prob.col_m[k] == m and y[k].sum() > 0]
    labels = [b.label for b in prob.workload.models[m].sizes]
    for bi, lab in enumerate(labels):

        def per_req(k: int, bi: int = bi) -> float:
            cap = prob.columns[k].rtype.cap[bi] * prob.col_avail[k]
            return prob.replica_price(k) / cap if cap > 0 else np.inf

        best = min(used, key=per_req)
        if best == j and shares.get(lab, 0) > 0.01:
            parts.append(f"cheapest $/request for {lab}-token requests")
    if o.tier == "spot":
        after = (
            "not counted after a loss"
            if prob.options.spot_in_survivors == "none"
            else "counted so after a loss too"
        )
        parts.append(f"spot, counted at {o.availability:.0%} availability; {after}")
    pool = prob.pools[col.pool]
    gpus = sum(
        y[k].max() * prob.col_tp[k]
        for k in range(len(prob.columns))
        if prob.col_pool[k] == col.pool
    )
    if gpus >= pool.quota - 1e-6:
        parts.append(f"quota-bound (all {pool.quota} accelerators)")
    if prob.options.resilience != "none" and prob.col_surv[j] > 0:
        # Needed for N-1 if, in its peak period, some single loss would leave too little
        # without it.
        t = int(np.argmax(y[j]))
        caps: dict[int, float] = {}
        for k in used:
            g = int(prob.col_group[k])
            caps[g] = caps.get(g, 0.0) + prob.col_surv[k] * y[k, t]
        total = sum(caps.values())
        mine = prob.col_surv[j] * y[j, t]
        g = int(prob.col_group[j])
        need = float(prob.need_n1[m, t])
        if any(total - c - (mine if h != g else 0.0) < need for h, c in caps.items() if h != g):
            parts.append(f"needed for N-1 (survives the loss of any one {prob.options.resilience})")
    if not parts:
        parts.append("cheapest capacity left under the quota, share and N-1 constraints")
    return "; ".join(parts)


def coverage(prob: Problem, y: np.ndarray) -> list[Coverage]:
    """Per model: what the worst single loss leaves (survivor capacity ÷ demand)."""
    out: list[Coverage] = []
    for m, mw in enumerate(prob.workload.models):
        mc = prob.col_m == m
        kept = mw.kept_on_loss(prob.options.shed_on_loss)
        worst, worst_g, shed, shed_share = math.inf, "", 0.0, 0.0
        for t in range(prob.T):
            d = float(prob.demand[m, t])
            if d <= 0:
                continue
            total = float(prob.col_surv[mc] @ y[mc, t])
            for g in range(len(prob.groups)):
                gm = mc & (prob.col_group == g)
                if not gm.any():
                    continue
                left = total - float(prob.col_surv[gm] @ y[gm, t])
                if left / d < worst:
                    worst, worst_g = left / d, prob.groups[g]
                if d - left > shed:
                    shed, shed_share = d - left, (d - left) / d
        if prob.options.resilience == "none" or not math.isfinite(worst):
            continue
        out.append(
            Coverage(
                model=mw.name,
                worst_loss=worst_g,
                required=round(kept, 4),
                served_after_worst_loss=round(worst, 4),
                shed_rps_peak=round(max(shed, 0.0), 4),
                shed_share_peak=round(max(shed_share, 0.0), 4),
            )
        )
    return out


def _type_shares(prob: Problem, y: np.ndarray) -> dict[tuple[int, int], dict[int, float]]:
    """(model, replica type) → bucket → req/s·periods routed to it (the Mélange split)."""
    type_share: dict[tuple[int, int], dict[int, float]] = {}
    for m in range(prob.M):
        rts = prob.rtypes[m]
        mc = np.nonzero(prob.col_m == m)[0]
        for t in range(prob.T):
            units = [0.0] * len(rts)
            for j in mc:
                if y[j, t] > 0:
                    units[prob.col_k[j]] += y[j, t] * prob.col_avail[j]
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
    return type_share


def to_plan(prob: Problem, sol: Solution, solver: str = "highs-milp") -> Plan:
    """A Plan from a feasible solution."""
    w = prob.workload
    y = np.round(sol.y)
    idle = _fill_units(prob, y)
    regions, idle_regions = _region_counts(prob, y, idle)
    type_share = _type_shares(prob, y)
    entries: list[PlanEntry] = []
    for j, per_region in regions.items():
        col = prob.columns[j]
        m = col.m
        mw = w.models[m]
        k = int(prob.col_k[j])
        same = (prob.col_m == m) & (prob.col_k == k)
        type_units = float((y[same].sum(axis=1) * prob.col_avail[same]).sum())
        frac = y[j].sum() * prob.col_avail[j] / type_units if type_units else 0.0
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
            capacity = math.floor(capacity * 1e4) / 1e4
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
                    instance=o.instance,
                    provider=o.provider,
                    region=o.region,
                    accelerator=o.accelerator,
                    accelerators_per_replica=col.rtype.tp,
                    tier=o.tier,
                    price_per_replica_hour=round(o.price * col.rtype.tp, 4),
                    capacity_rps_per_replica=capacity,
                    concurrency_per_replica=col.rtype.concurrency,
                    capacity_by_bucket={mw.sizes[b].label: c for b, c in enumerate(col.rtype.cap)},
                    bucket_shares={b: round(s * part, 4) for b, s in shares.items()},
                    availability=o.availability,
                    replicas=[int(x) for x in counts],
                    reason=reason,
                )
            )
    entries.sort(key=lambda e: (e.model, e.provider, e.region, e.accelerator, e.tier, e.key))
    idle_rows = [
        IdleCapacity(
            offering=o.id,
            provider=o.provider,
            region=o.region,
            accelerator=o.accelerator,
            tier=o.tier,
            price_per_accelerator_hour=o.price,
            accelerators=[int(x) for x in counts],
        )
        for pi, per_region in idle_regions.items()
        for o, counts in zip(prob.pools[pi].offerings, per_region, strict=True)
        if any(counts)
    ]
    hours = prob.period_hours * prob.T
    cost = sum(e.cost(prob.period_hours) for e in entries) + sum(
        i.cost(prob.period_hours) for i in idle_rows
    )
    tokens_day = sum(w.requests_per_day(mw.name) * mw.tokens_per_request for mw in w.models)
    per_day = cost / hours * 24.0
    opts = prob.options
    return Plan(
        meta=PlanMeta(
            workload=w.name,
            period_hours=prob.period_hours,
            periods=prob.T,
            objective="min cost subject to SLO capacity with headroom, quotas, N-1, shares",
            solver=solver,
            status=sol.status,
            optimality_gap=None if sol.gap is None else round(sol.gap, 6),
            solve_seconds=round(sol.seconds, 2),
            resilience=opts.resilience,
            spot_in_survivors=opts.spot_in_survivors,
            headroom=opts.headroom,
            shed_on_loss=list(opts.shed_on_loss),
            target_utilization=opts.utilization,
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
                bucket_fractions={
                    b.label: round(f, 6)
                    for b, f in zip(mw.sizes, mw.bucket_fractions(), strict=True)
                },
                priority=mw.priority.model_dump(),
            )
            for m, mw in enumerate(w.models)
        ],
        entries=entries,
        idle=idle_rows,
        coverage=coverage(prob, y),
        totals=Totals(
            cost_horizon=round(cost, 2),
            cost_per_day=round(per_day, 2),
            cost_per_month=round(cost / hours * 730.0, 2),
            usd_per_million_tokens=round(per_day / tokens_day * 1e6, 5) if tokens_day else 0.0,
            tokens_per_day=round(tokens_day, 0),
        ),
    )
