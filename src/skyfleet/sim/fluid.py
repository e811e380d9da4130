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


def rate_at_concurrency(
    profile: Profile, concurrency: float, sizes: RequestSizes, pct: float
) -> float:
    """The request rate at which one replica holds `concurrency` requests in flight (bisection)."""
    key = (
        profile.model_dump_json(),
        float(concurrency),
        sizes.input_tokens,
        sizes.output_tokens,
        pct,
    )
    if key in _RATES:
        return _RATES[key]
    low, high = 0.0, 1.0 / max(profile.prefill_time(sizes.input_tokens), 1e-9)
    for _ in range(40):
        mid = (low + high) / 2
        state = steady_state(profile, mid, sizes, pct)
        if state.stable and state.batch <= concurrency:
            low = mid
        else:
            high = mid
    _RATES[key] = low
    return low


def latency_table(profile: Profile, sizes: RequestSizes, r_max: float) -> LatencyTable:
    """Tabulate `perf.steady_state` (TTFT quantiles, TPOT, E2E) over per-replica rates."""
    key = (profile.model_dump_json(), r_max, sizes.input_tokens, sizes.output_tokens, 0.0)
    if key in _TABLES:
        return _TABLES[key]
    rates = np.linspace(0.0, max(r_max, 1e-9), GRID)
    quant = np.zeros((GRID, len(PCTS)))
    tpot = np.zeros(GRID)
    e2e = np.zeros(GRID)
    ttft_mean = np.zeros(GRID)
    for row, rate in enumerate(rates):
        for column, level in enumerate(_ASK):
            state = steady_state(profile, float(rate), sizes, float(level))
            if not state.stable:  # just past the edge: keep the last stable row
                quant[row] = quant[row - 1] if row else np.inf
                break
            quant[row, column] = state.ttft_p
        else:
            tpot[row], e2e[row], ttft_mean[row] = state.tpot_mean, state.e2e_mean, state.ttft_mean
            quant[row] = np.maximum.accumulate(quant[row])
            continue
        tpot[row], e2e[row], ttft_mean[row] = tpot[row - 1], e2e[row - 1], ttft_mean[row - 1]
    table = LatencyTable(float(max(r_max, 1e-9)), quant, tpot, e2e, ttft_mean)
    _TABLES[key] = table
    return table


def ttft_cdf(x: np.ndarray, quant: np.ndarray) -> np.ndarray:
    """P(TTFT ≤ x) per row of tabulated quantiles (linear between the tabulated points)."""
    lower, upper = quant[..., :-1], quant[..., 1:]
    part = np.clip((x[..., None] - lower) / np.maximum(upper - lower, 1e-12), 0.0, 1.0)
    return np.asarray((part * np.diff(PCTS)).sum(axis=-1))


def _lerp(table: np.ndarray, rows: np.ndarray, cell: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Rows `rows` of a [groups, GRID] table at fractional grid positions `cell + weight`."""
    return np.asarray(table[rows, cell] * (1 - weight) + table[rows, cell + 1] * weight)


def _demand_steps(fleet: Fleet, timeline: Timeline, edges: np.ndarray) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    mid = (edges[:-1] + edges[1:]) / 2
    for name, load in fleet.models.items():
        if load.trace is not None:
            base = load.trace.rate_series(edges[1] - edges[0], edges[-1], load.daily_volume)
        else:
            period = (mid // load.period_s).astype(np.int64) % len(load.demand_rps)  # repeats
            base = load.demand_rps[period].astype(float)
        out[name] = base * timeline.surge_factor(name, edges)
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
    wall_start = time.perf_counter()
    settings = admission or fleet.admission or admission_settings()
    step_s = float(step or scenario.step)
    horizon = timeline.horizon
    steps = math.ceil(horizon / step_s - 1e-9)
    edges = np.arange(steps + 1) * step_s
    group_count = len(fleet.groups)
    groups = fleet.groups
    deadlines = np.array(
        [settings.critical_deadline_s, settings.standard_deadline_s, settings.sheddable_deadline_s]
    )
    shares = np.array([settings.critical_share, settings.standard_share, settings.sheddable_share])

    # -- per-group constants -------------------------------------------------------------
    route_rps = np.zeros(group_count)
    # admission lets class k start while fleet in-flight < share_k × concurrency: per replica
    # that is the rate at which it holds share_k × its concurrency limit
    share_rps = np.zeros((group_count, 3))
    tables: list[LatencyTable] = []
    for index, group in enumerate(groups):
        load = fleet.models[group.model]
        sizes = load.mean_sizes
        route_rps[index] = rate_at_concurrency(
            group.profile, group.concurrency, sizes, load.slo.percentile
        )
        for priority in range(3):
            share_rps[index, priority] = (
                route_rps[index]
                if shares[priority] >= 1.0
                else rate_at_concurrency(
                    group.profile, shares[priority] * group.concurrency, sizes, load.slo.percentile
                )
            )
        tables.append(latency_table(group.profile, sizes, route_rps[index]))
    ttft_quantiles = (
        np.stack([table.quant for table in tables])
        if group_count
        else np.zeros((0, GRID, len(PCTS)))
    )
    tpot_table = np.stack([table.tpot for table in tables]) if group_count else np.zeros((0, GRID))
    e2e_table = np.stack([table.e2e for table in tables]) if group_count else np.zeros((0, GRID))
    ttft_mean_table = (
        np.stack([table.ttft_mean for table in tables]) if group_count else np.zeros((0, GRID))
    )
    rate_max = np.array([table.r_max for table in tables])
    concurrency = np.array([group.concurrency for group in groups], dtype=float)
    cap_slo = np.array([group.capacity_rps for group in groups])
    price = np.array([group.price_per_replica_hour for group in groups])
    period_index = (edges[:-1] // fleet.period_s).astype(np.int64)
    planned = np.zeros((steps, group_count))
    for index, group in enumerate(groups):
        planned[:, index] = group.replicas[period_index % len(group.replicas)]
    up_share = timeline.up_matrix(group_count, edges)
    # replicas lost in this step let running requests end
    keeps = np.zeros((steps, group_count), dtype=bool)
    for down in timeline.downs:
        if not down.fails_in_flight and down.start < horizon:
            keeps[min(int(down.start // step_s), steps - 1), down.group] = True
    demand = _demand_steps(fleet, timeline, edges)

    # -- outputs -------------------------------------------------------------------------
    arrivals = np.zeros((steps, 3))
    served = np.zeros((steps, 3))
    served_ok = np.zeros((steps, 3))
    shed = np.zeros((steps, 3))
    failed = np.zeros((steps, 3))
    queue_out = np.zeros((steps, 3))
    capacity = np.zeros(steps)
    cost = np.zeros(steps)
    by_provider = {
        provider: np.zeros(steps) for provider in sorted({group.provider for group in groups})
    }
    ttft_hist = np.zeros(len(TTFT_EDGES) - 1)

    models = list(fleet.models)
    group_rows = {
        name: np.array(
            [index for index, group in enumerate(groups) if group.model == name], dtype=np.int64
        )
        for name in models
    }
    routers = {
        name: FlowRouter([groups[index] for index in group_rows[name]], fleet.routing, seed=seed)
        for name in models
    }
    mix = {name: np.asarray(fleet.models[name].priority_mix, dtype=float) for name in models}
    queued = {name: np.zeros(3) for name in models}
    inflight = np.zeros((group_count, 3))  # by priority
    inflight_ok = np.zeros((group_count, 3))
    decode_share = np.zeros(group_count)
    prev_up = np.ones(group_count)
    extras = np.zeros(group_count)  # added replicas serving
    pending: list[tuple[float, int, int]] = []  # (ready time, group, count)
    next_scale = 0.0
    providers = [group.provider for group in groups]

    for step_index in range(steps):
        step_start = edges[step_index]
        # provisioning completes
        if pending:
            keep = []
            for ready, group_index, count in pending:
                if ready <= step_start:
                    extras[group_index] += count
                else:
                    keep.append((ready, group_index, count))
            pending = keep
        up_now = up_share[step_index]
        # failures: replicas lost since the last step take their in-flight requests
        drop = np.where(prev_up > 0, np.clip(1.0 - up_now / np.maximum(prev_up, 1e-12), 0, 1), 0.0)
        drop[keeps[step_index]] = 0.0
        prev_up = up_now
        replicas_up = (planned[step_index] + extras) * up_now
        rate_caps = replicas_up * route_rps
        for model in models:
            rows = group_rows[model]
            if len(rows) == 0:
                continue
            lost = inflight[rows] * drop[rows, None]  # [g,3]
            if lost.sum() > 0:
                decoding = decode_share[rows, None]
                failing = lost * decoding
                failed[step_index] += failing.sum(axis=0)
                # those already counted as served are taken back out of it
                served[step_index] -= lost.sum(axis=0)
                ok_lost = inflight_ok[rows] * drop[rows, None]
                served_ok[step_index] -= ok_lost.sum(axis=0)
                queued[model] += (lost - failing).sum(axis=0)  # retried by the gateway
            rate = demand[model][step_index]
            arriving = rate * step_s * mix[model]
            arrivals[step_index] += arriving
            model_capacity = float(rate_caps[rows].sum())
            capacity[step_index] += model_capacity
            if model_capacity <= 1e-12:
                failed[step_index] += queued[model] + arriving  # no healthy endpoint: 503 at once
                queued[model] = np.zeros(3)
                inflight[rows] = 0
                inflight_ok[rows] = 0
                continue
            want = queued[model] + arriving
            started = np.zeros(3)
            used = 0.0
            for priority in range(3):
                budget = max(
                    0.0,
                    float((replicas_up[rows] * share_rps[rows, priority]).sum()) * step_s - used,
                )
                started[priority] = min(want[priority], budget)
                used += started[priority]
            rest = want - started
            ahead = np.concatenate([[0.0], np.cumsum(rest)[:-1]])
            allowed = np.clip(deadlines * model_capacity - ahead, 0, None)
            shed_now = np.clip(rest - allowed, 0, None)
            shed[step_index] += shed_now
            queued[model] = rest - shed_now
            waits = np.minimum((ahead + queued[model]) / model_capacity, deadlines)
            waits = np.where(queued[model] > 1e-9, waits, 0.0)
            queue_out[step_index] += queued[model]
            served[step_index] += started
            started_rps = started.sum() / step_s
            frac = routers[model].split(
                started_rps, rate_caps[rows], replicas_up[rows] * concurrency[rows]
            )
            group_rps = frac * started_rps
            per_replica = np.where(
                replicas_up[rows] > 0, group_rps / np.maximum(replicas_up[rows], 1e-12), 0.0
            )
            position = np.clip(per_replica / rate_max[rows], 0.0, 1.0) * (GRID - 1)
            cell = np.minimum(position.astype(np.int64), GRID - 2)
            weight = position - cell
            quantiles = (
                ttft_quantiles[rows, cell] * (1 - weight)[:, None]
                + ttft_quantiles[rows, cell + 1] * weight[:, None]
            )  # [g,J]

            tpot, e2e, ttft_mean = (
                _lerp(table, rows, cell, weight)
                for table in (tpot_table, e2e_table, ttft_mean_table)
            )
            slo = fleet.models[model].slo
            started_by_group = frac[:, None] * started[None, :]  # [g,3]
            ttft_budget = slo.ttft_s - waits[None, :]  # [1,3]
            p_ok = ttft_cdf(
                np.broadcast_to(ttft_budget, started_by_group.shape),
                np.broadcast_to(quantiles[:, None, :], (*started_by_group.shape, len(PCTS))),
            )
            p_ok = p_ok * (tpot <= slo.tpot_s * TPOT_TOLERANCE)[:, None]
            served_ok[step_index] += (started_by_group * p_ok).sum(axis=0)
            # TTFT histogram: each tabulated quantile interval's mass at its midpoint
            if started_by_group.sum() > 0:
                midpoints = (quantiles[:, None, :-1] + quantiles[:, None, 1:]) / 2
                midpoints = midpoints + waits[None, :, None]
                mass = started_by_group[:, :, None] * np.diff(PCTS)[None, None, :]
                bins = np.clip(
                    np.searchsorted(TTFT_EDGES, midpoints.ravel(), side="right") - 1,
                    0,
                    len(ttft_hist) - 1,
                )
                np.add.at(ttft_hist, bins, mass.ravel())
            inflight[rows] = (
                group_rps[:, None]
                * (started / max(started.sum(), 1e-12))[None, :]
                * (e2e[:, None] + waits[None, :])
            )
            inflight_ok[rows] = inflight[rows] * p_ok
            decode_share[rows] = np.where(e2e > 0, (e2e - ttft_mean) / np.maximum(e2e, 1e-12), 0.0)
            for row, group_index in enumerate(rows):
                by_provider[providers[group_index]][step_index] += started_by_group[row].sum()
            # autoscaling (pure decision shared with the request-level engine)
            if scenario.autoscaling.enabled and step_start >= next_scale:
                need = (
                    rate + queued[model].sum() / scenario.autoscaling.interval
                ) / scenario.autoscaling.target_utilisation
                views = [
                    autoscale.GroupView(
                        int(group_index),
                        float(cap_slo[group_index]),
                        float(price[group_index]),
                        float(replicas_up[group_index]),
                        sum(count for _, other, count in pending if other == group_index),
                        int(extras[group_index])
                        + sum(count for _, other, count in pending if other == group_index),
                        math.ceil(
                            scenario.autoscaling.max_scale * max(planned[:, group_index].max(), 1)
                        ),
                        int(planned[step_index, group_index]),
                        bool(
                            up_now[group_index] > 0.5
                            and not timeline.locked(providers[group_index], step_start)
                        ),
                    )
                    for group_index in rows
                ]
                for group_index, delta in autoscale.decide(need, views).items():
                    if delta > 0:
                        pending.append(
                            (step_start + scenario.provisioning.total, group_index, delta)
                        )
                    else:
                        extras[group_index] = max(0.0, extras[group_index] + delta)
        if scenario.autoscaling.enabled and step_start >= next_scale:
            next_scale = step_start + scenario.autoscaling.interval
        cost[step_index] = float(((planned[step_index] + extras) * price).sum() * step_s / 3600.0)
        if progress is not None and step_index % 256 == 0:
            progress(step_index / steps)
    # end of run: whatever is still queued is served if capacity allows within its deadline
    for model in models:
        if queued[model].sum() > 0 and steps > 0:
            last_capacity = capacity[-1]
            room = np.clip(deadlines * last_capacity, 0, None)
            finishing = np.minimum(queued[model], room)
            served[-1] += finishing
            shed[-1] += queued[model] - finishing
    result = SimResult(
        engine="fluid",
        step_s=step_s,
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
        ttft_hist=ttft_hist,
        outages=list(timeline.outages),
    )
    result.wall_s = time.perf_counter() - wall_start
    return result


def group_route_rps(fleet: Fleet, group: Group) -> float:
    """The rate at which one replica of `group` reaches its concurrency limit."""
    load = fleet.models[group.model]
    return rate_at_concurrency(
        group.profile, group.concurrency, load.mean_sizes, load.slo.percentile
    )
