"""Fluid engine: request rates per time step and replica group, vectorised with numpy.

Per step and model: arrivals (demand × surges, or a rescaled trace) join the gateway's
queue; the routable capacity is Σ up replicas × the rate at which a replica holds its
concurrency limit (the router's saturation point); admission control serves classes in
priority order within their capacity shares and sheds what cannot start within its
deadline (the same `AdmissionSettings` as the gateway); the served flow is split over
groups by the gateway's pure `route` function (`FlowRouter`). Each group's latency comes
from the perf model's steady state at its per-replica rate: TTFT = gateway wait + base +
an exponential queueing tail of mass ρ (prefill share), the same form `perf.steady_state`
uses for its percentiles. When replicas go down, their in-flight requests fail if they had
started streaming and are retried otherwise (unless the outage lets them finish). Cost
is replicas × price × time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from skyfleet.perf import Profile, RequestSizes, steady_state
from skyfleet.policy.admission import AdmissionSettings
from skyfleet.policy.settings import admission_settings
from skyfleet.sim import autoscale
from skyfleet.sim.fleet import Fleet, Group
from skyfleet.sim.result import TTFT_EDGES, SimResult
from skyfleet.sim.routing import FlowRouter
from skyfleet.sim.scenario import Scenario
from skyfleet.sim.timeline import Timeline

GRID = 40
TPOT_TOLERANCE = 1.02
"""The TPOT SLO is on the mean: met when an endpoint's mean TPOT over a step is ≤ SLO (+2 %)."""
PCTS = np.array([0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1.0])
"""Percentiles at which the perf model's TTFT distribution is tabulated (0 and 1: the ends)."""
_ASK = np.concatenate([[0.001], PCTS[1:-1], [0.9999]])


@dataclass
class LatencyTable:
    """Per-replica latency vs per-replica rate, on a uniform grid from 0 to `r_max`."""

    r_max: float
    quant: np.ndarray  # [GRID, len(PCTS)] TTFT quantiles (s)
    tpot: np.ndarray  # [GRID]
    e2e: np.ndarray
    ttft_mean: np.ndarray


_TABLES: dict[tuple[str, float, float, float, float], LatencyTable] = {}
_RATES: dict[tuple[str, float, float, float, float], float] = {}


def rate_at_concurrency(profile: Profile, conc: float, sizes: RequestSizes, pct: float) -> float:
    """The request rate at which one replica holds `conc` requests in flight (bisection)."""
    key = (profile.model_dump_json(), float(conc), sizes.input_tokens, sizes.output_tokens, pct)
    if key in _RATES:
        return _RATES[key]
    lo, hi = 0.0, 1.0 / max(profile.prefill_time(sizes.input_tokens), 1e-9)
    for _ in range(40):
        mid = (lo + hi) / 2
        s = steady_state(profile, mid, sizes, pct)
        if s.stable and s.batch <= conc:
            lo = mid
        else:
            hi = mid
    _RATES[key] = lo
    return lo


def latency_table(profile: Profile, sizes: RequestSizes, r_max: float) -> LatencyTable:
    """Tabulate `perf.steady_state` (TTFT quantiles, TPOT, E2E) over per-replica rates."""
    key = (profile.model_dump_json(), r_max, sizes.input_tokens, sizes.output_tokens, 0.0)
    if key in _TABLES:
        return _TABLES[key]
    rates = np.linspace(0.0, max(r_max, 1e-9), GRID)
    quant = np.zeros((GRID, len(PCTS)))
    tpot = np.zeros(GRID)
    e2e = np.zeros(GRID)
    tmean = np.zeros(GRID)
    for i, r in enumerate(rates):
        for j, pc in enumerate(_ASK):
            s = steady_state(profile, float(r), sizes, float(pc))
            if not s.stable:  # just past the edge: keep the last stable row
                quant[i] = quant[i - 1] if i else np.inf
                break
            quant[i, j] = s.ttft_p
        else:
            tpot[i], e2e[i], tmean[i] = s.tpot_mean, s.e2e_mean, s.ttft_mean
            quant[i] = np.maximum.accumulate(quant[i])
            continue
        tpot[i], e2e[i], tmean[i] = tpot[i - 1], e2e[i - 1], tmean[i - 1]
    t = LatencyTable(float(max(r_max, 1e-9)), quant, tpot, e2e, tmean)
    _TABLES[key] = t
    return t


def ttft_cdf(x: np.ndarray, quant: np.ndarray) -> np.ndarray:
    """P(TTFT ≤ x) per row of tabulated quantiles (linear between the tabulated points)."""
    lo, hi = quant[..., :-1], quant[..., 1:]
    part = np.clip((x[..., None] - lo) / np.maximum(hi - lo, 1e-12), 0.0, 1.0)
    return np.asarray((part * np.diff(PCTS)).sum(axis=-1))


def _lerp(tab: np.ndarray, ix: np.ndarray, i0: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Row `ix` of a [groups, GRID] table at fractional grid positions `i0 + w`."""
    return np.asarray(tab[ix, i0] * (1 - w) + tab[ix, i0 + 1] * w)


def _demand_steps(
    fleet: Fleet, tl: Timeline, edges: np.ndarray, daily: float | None
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    mid = (edges[:-1] + edges[1:]) / 2
    for name, m in fleet.models.items():
        if m.trace is not None:
            base = m.trace.rate_series(edges[1] - edges[0], edges[-1], m.daily_volume)
        else:
            idx = (mid // m.period_s).astype(np.int64) % len(m.demand_rps)  # repeats
            base = m.demand_rps[idx].astype(float)
        out[name] = base * tl.surge_factor(name, edges)
    return out


def run_fluid(
    fleet: Fleet,
    scenario: Scenario,
    timeline: Timeline,
    *,
    step: float | None = None,
    admission: AdmissionSettings | None = None,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
) -> SimResult:
    """Simulate the fleet through the timeline at rate level; see the module docstring."""
    t_wall = time.perf_counter()
    adm = admission or fleet.admission or admission_settings()
    dt = float(step or scenario.step)
    horizon = timeline.horizon
    T = math.ceil(horizon / dt - 1e-9)
    edges = np.arange(T + 1) * dt
    G = len(fleet.groups)
    groups = fleet.groups
    deadlines = np.array(
        [adm.critical_deadline_s, adm.standard_deadline_s, adm.sheddable_deadline_s]
    )
    shares = np.array([adm.critical_share, adm.standard_share, adm.sheddable_share])

    # -- per-group constants -------------------------------------------------------------
    route_rps = np.zeros(G)
    # admission lets class k start while fleet in-flight < share_k × concurrency: per replica
    # that is the rate at which it holds share_k × its concurrency limit
    share_rps = np.zeros((G, 3))
    tables: list[LatencyTable] = []
    for i, g in enumerate(groups):
        ml = fleet.models[g.model]
        sizes = ml.mean_sizes
        route_rps[i] = rate_at_concurrency(g.profile, g.concurrency, sizes, ml.slo.percentile)
        for k in range(3):
            share_rps[i, k] = (
                route_rps[i]
                if shares[k] >= 1.0
                else rate_at_concurrency(
                    g.profile, shares[k] * g.concurrency, sizes, ml.slo.percentile
                )
            )
        tables.append(latency_table(g.profile, sizes, route_rps[i]))
    QT = np.stack([tb.quant for tb in tables]) if G else np.zeros((0, GRID, len(PCTS)))
    TP = np.stack([tb.tpot for tb in tables]) if G else np.zeros((0, GRID))
    E2 = np.stack([tb.e2e for tb in tables]) if G else np.zeros((0, GRID))
    TM = np.stack([tb.ttft_mean for tb in tables]) if G else np.zeros((0, GRID))
    rmax = np.array([tb.r_max for tb in tables])
    conc = np.array([g.concurrency for g in groups], dtype=float)
    cap_slo = np.array([g.capacity_rps for g in groups])
    price = np.array([g.price_per_replica_hour for g in groups])
    period_idx = (edges[:-1] // fleet.period_s).astype(np.int64)
    planned = np.zeros((T, G))
    for i, g in enumerate(groups):
        planned[:, i] = g.replicas[period_idx % len(g.replicas)]
    up = timeline.up_matrix(G, edges)
    keeps = np.zeros((T, G), dtype=bool)  # replicas lost in this step let running requests end
    for d in timeline.downs:
        if not d.fails_in_flight and d.start < horizon:
            keeps[min(int(d.start // dt), T - 1), d.group] = True
    demand = _demand_steps(fleet, timeline, edges, None)

    # -- outputs -------------------------------------------------------------------------
    arrivals = np.zeros((T, 3))
    served = np.zeros((T, 3))
    served_ok = np.zeros((T, 3))
    shed = np.zeros((T, 3))
    failed = np.zeros((T, 3))
    queue_out = np.zeros((T, 3))
    capacity = np.zeros(T)
    cost = np.zeros(T)
    by_provider = {p: np.zeros(T) for p in sorted({g.provider for g in groups})}
    hist = np.zeros(len(TTFT_EDGES) - 1)
    mids = np.sqrt(np.maximum(TTFT_EDGES[1:], 1e-4) * np.maximum(TTFT_EDGES[:-1], 1e-4))
    del mids

    models = list(fleet.models)
    gidx = {
        m: np.array([i for i, g in enumerate(groups) if g.model == m], dtype=np.int64)
        for m in models
    }
    routers = {
        m: FlowRouter([groups[i] for i in gidx[m]], fleet.routing, seed=seed) for m in models
    }
    mix = {m: np.asarray(fleet.models[m].priority_mix, dtype=float) for m in models}
    q = {m: np.zeros(3) for m in models}
    inflight = np.zeros((G, 3))  # by priority
    inflight_ok = np.zeros((G, 3))
    decode_share = np.zeros(G)
    prev_up = np.ones(G)
    extras = np.zeros(G)  # added replicas serving
    pending: list[tuple[float, int, int]] = []  # (ready time, group, count)
    next_scale = 0.0
    providers = [g.provider for g in groups]

    for t in range(T):
        t0 = edges[t]
        # provisioning completes
        if pending:
            keep = []
            for ready, gi, n in pending:
                if ready <= t0:
                    extras[gi] += n
                else:
                    keep.append((ready, gi, n))
            pending = keep
        upf = up[t]
        # failures: replicas lost since the last step take their in-flight requests
        drop = np.where(prev_up > 0, np.clip(1.0 - upf / np.maximum(prev_up, 1e-12), 0, 1), 0.0)
        drop[keeps[t]] = 0.0
        prev_up = upf
        n_up = (planned[t] + extras) * upf
        rate_caps = n_up * route_rps
        for m in models:
            ix = gidx[m]
            if len(ix) == 0:
                continue
            lost = inflight[ix] * drop[ix, None]  # [g,3]
            if lost.sum() > 0:
                dec = decode_share[ix, None]
                fail = lost * dec
                failed[t] += fail.sum(axis=0)
                # those already counted as served are taken back out of it
                served[t] -= lost.sum(axis=0)
                ok_lost = inflight_ok[ix] * drop[ix, None]
                served_ok[t] -= ok_lost.sum(axis=0)
                q[m] += (lost - fail).sum(axis=0)  # retried by the gateway
            lam = demand[m][t]
            a = lam * dt * mix[m]
            arrivals[t] += a
            C = float(rate_caps[ix].sum())
            capacity[t] += C
            if C <= 1e-12:
                failed[t] += q[m] + a  # no healthy endpoint: 503 at once
                q[m] = np.zeros(3)
                inflight[ix] = 0
                inflight_ok[ix] = 0
                continue
            want = q[m] + a
            srv = np.zeros(3)
            used = 0.0
            for k in range(3):
                budget = max(0.0, float((n_up[ix] * share_rps[ix, k]).sum()) * dt - used)
                srv[k] = min(want[k], budget)
                used += srv[k]
            rest = want - srv
            ahead = np.concatenate([[0.0], np.cumsum(rest)[:-1]])
            allowed = np.clip(deadlines * C - ahead, 0, None)
            sh = np.clip(rest - allowed, 0, None)
            shed[t] += sh
            q[m] = rest - sh
            waits = np.minimum((ahead + q[m]) / C, deadlines)
            waits = np.where(q[m] > 1e-9, waits, 0.0)
            queue_out[t] += q[m]
            served[t] += srv
            R = srv.sum() / dt
            frac = routers[m].split(R, rate_caps[ix], n_up[ix] * conc[ix])
            r_g = frac * R
            per = np.where(n_up[ix] > 0, r_g / np.maximum(n_up[ix], 1e-12), 0.0)
            u = np.clip(per / rmax[ix], 0.0, 1.0) * (GRID - 1)
            i0 = np.minimum(u.astype(np.int64), GRID - 2)
            w = u - i0
            qrow = QT[ix, i0] * (1 - w)[:, None] + QT[ix, i0 + 1] * w[:, None]  # [g,J]

            tpot, e2e, tmean = (_lerp(tab, ix, i0, w) for tab in (TP, E2, TM))
            slo = fleet.models[m].slo
            n_gp = frac[:, None] * srv[None, :]  # [g,3]
            x = slo.ttft_s - waits[None, :]  # [1,3]
            p_ok = ttft_cdf(
                np.broadcast_to(x, n_gp.shape),
                np.broadcast_to(qrow[:, None, :], (*n_gp.shape, len(PCTS))),
            )
            p_ok = p_ok * (tpot <= slo.tpot_s * TPOT_TOLERANCE)[:, None]
            served_ok[t] += (n_gp * p_ok).sum(axis=0)
            # TTFT histogram: each tabulated quantile interval's mass at its midpoint
            if n_gp.sum() > 0:
                pts = (qrow[:, None, :-1] + qrow[:, None, 1:]) / 2 + waits[None, :, None]
                mass = n_gp[:, :, None] * np.diff(PCTS)[None, None, :]
                k = np.clip(
                    np.searchsorted(TTFT_EDGES, pts.ravel(), side="right") - 1, 0, len(hist) - 1
                )
                np.add.at(hist, k, mass.ravel())
            inflight[ix] = (
                r_g[:, None]
                * (srv / max(srv.sum(), 1e-12))[None, :]
                * (e2e[:, None] + waits[None, :])
            )
            inflight_ok[ix] = inflight[ix] * p_ok
            decode_share[ix] = np.where(e2e > 0, (e2e - tmean) / np.maximum(e2e, 1e-12), 0.0)
            for j, gi in enumerate(ix):
                by_provider[providers[gi]][t] += n_gp[j].sum()
            # autoscaling (pure decision shared with the request-level engine)
            if scenario.autoscaling.enabled and t0 >= next_scale:
                need = (
                    lam + q[m].sum() / scenario.autoscaling.interval
                ) / scenario.autoscaling.target_utilisation
                views = [
                    autoscale.GroupView(
                        int(gi),
                        float(cap_slo[gi]),
                        float(price[gi]),
                        float(n_up[gi]),
                        sum(n for _, g2, n in pending if g2 == gi),
                        int(extras[gi]) + sum(n for _, g2, n in pending if g2 == gi),
                        math.ceil(scenario.autoscaling.max_scale * max(planned[:, gi].max(), 1)),
                        int(planned[t, gi]),
                        bool(upf[gi] > 0.5 and not timeline.locked(providers[gi], t0)),
                    )
                    for gi in ix
                ]
                for gi, delta in autoscale.decide(need, views).items():
                    if delta > 0:
                        pending.append((t0 + scenario.provisioning.total, gi, delta))
                    else:
                        extras[gi] = max(0.0, extras[gi] + delta)
        if scenario.autoscaling.enabled and t0 >= next_scale:
            next_scale = t0 + scenario.autoscaling.interval
        cost[t] = float(((planned[t] + extras) * price).sum() * dt / 3600.0)
        if progress is not None and t % 256 == 0:
            progress(t / T)
    # end of run: whatever is still queued is served if capacity allows within its deadline
    for m in models:
        if q[m].sum() > 0 and T > 0:
            C = capacity[-1]
            can = np.clip(deadlines * C, 0, None)
            s = np.minimum(q[m], can)
            served[-1] += s
            shed[-1] += q[m] - s
    res = SimResult(
        engine="fluid",
        step_s=dt,
        slo_target=scenario.slo_target,
        arrivals=arrivals,
        served=served,
        served_ok=np.clip(served_ok, 0, None),
        shed=shed,
        failed=failed,
        queue=queue_out,
        capacity_rps=capacity,
        cost=cost,
        served_by_provider=by_provider,
        ttft_hist=hist,
        outages=list(timeline.outages),
    )
    res.wall_s = time.perf_counter() - t_wall
    return res


def group_route_rps(fleet: Fleet, g: Group) -> float:
    """The rate at which one replica of `g` reaches its concurrency limit."""
    ml = fleet.models[g.model]
    return rate_at_concurrency(g.profile, g.concurrency, ml.mean_sizes, ml.slo.percentile)
