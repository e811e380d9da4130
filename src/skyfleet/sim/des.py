"""Request-level discrete-event engine: every request, every engine iteration.

Each replica is the emulator's pure continuous-batching `Engine` (the same scheduler
`skyfleet emulate` runs), timed by the perf model. The gateway side is `sim.gateway.
SimGateway`, which calls the gateway's policy code in simulated time: admission with a
`WaitQueue` per model, `policy.route` over `EndpointState` snapshots (one per replica
group; inside a group the least-loaded replica), outlier ejection with back-off, /health
probes and probation, and the retry budget. `RequestLevelSim` is the event loop: an
`Event` kind per entry in the queue and one handler per kind (`handlers`).

Outages and preemptions take replicas down at their exact times: requests that already
streamed a token fail, the others are retried on another endpoint (or, for an
outage with `in_flight: finish`, they complete); a group that went down is only known to
be down once attempts on it fail or probes say so. Suited to hours at moderate rates.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np

from skyfleet.config import HealthConfig, RoutingConfig
from skyfleet.emulator.engine import Engine
from skyfleet.policy.admission import AdmissionSettings
from skyfleet.policy.outcome import Outcome
from skyfleet.policy.priority import Priority
from skyfleet.policy.settings import admission_settings
from skyfleet.sim import autoscale
from skyfleet.sim.fleet import Fleet
from skyfleet.sim.fluid import TPOT_TOLERANCE, _demand_steps, rate_at_concurrency
from skyfleet.sim.gateway import OUTCOME_CODE, PENDING, Requests, SimGateway
from skyfleet.sim.result import TTFT_EDGES, SimResult
from skyfleet.sim.scenario import Scenario
from skyfleet.sim.timeline import Timeline
from skyfleet.sim.trace import replay_index


@dataclass(eq=False)
class Replica:
    """One replica of a group: the emulator's engine and the requests it runs."""

    group: int
    engine: Engine
    up: bool = True
    draining: bool = False
    busy: bool = False
    version: int = 0
    reqs: dict[int, int] = field(default_factory=dict)  # seq_id → request index
    last_step: Any = None
    step_start: float = 0.0

    @property
    def in_flight(self) -> int:
        return len(self.reqs)


def _arrivals(fleet: Fleet, tl: Timeline, step: float, rng: np.random.Generator) -> Requests:
    """All arrivals of the run, sorted: time, model index, tokens, priority."""
    edges = np.arange(math.ceil(tl.horizon / step - 1e-9) + 1) * step
    demand = _demand_steps(fleet, tl, edges, None)
    times, models, inputs, outputs, priorities = [], [], [], [], []
    for index, (name, load) in enumerate(fleet.models.items()):
        scripted: np.ndarray | None = None
        if load.trace is not None:
            t, source = replay_index(load.trace, load.daily_volume, tl.horizon, rng)
            if tl.surges:  # thin or repeat by the surge multiplier
                mult = np.array([tl.surge_at(name, float(x)) for x in t])
                repeats = np.floor(mult).astype(np.int64) + (
                    rng.random(len(t)) < mult - np.floor(mult)
                )
                t, source = np.repeat(t, repeats), np.repeat(source, repeats)
            inp, out = load.trace.input_tokens[source], load.trace.output_tokens[source]
            if load.trace.priorities is not None:  # a scripted load names each class
                scripted = np.asarray(load.trace.priorities, dtype=np.int64)[source]
        else:
            counts = rng.poisson(demand[name] * step)
            t = np.repeat(edges[:-1], counts) + rng.random(counts.sum()) * step
            shares = np.array([f for _, _, f in load.sizes])
            bucket = rng.choice(len(load.sizes), size=len(t), p=shares / shares.sum())
            inp = np.array([size[0] for size in load.sizes])[bucket]
            out = np.array([size[1] for size in load.sizes])[bucket]
        mix = np.asarray(load.priority_mix, dtype=float)
        times.append(t)
        models.append(np.full(len(t), index))
        inputs.append(np.maximum(np.round(inp), 1))
        outputs.append(np.maximum(np.round(out), 1))
        drawn = rng.choice(3, size=len(t), p=mix / mix.sum())
        priorities.append(drawn if scripted is None else scripted)
    t = np.concatenate(times)
    order = np.argsort(t, kind="stable")
    return Requests(
        t[order],
        np.concatenate(models)[order].astype(np.int64),
        np.concatenate(inputs)[order].astype(np.int64),
        np.concatenate(outputs)[order].astype(np.int64),
        np.concatenate(priorities)[order].astype(np.int64),
    )


class Event(IntEnum):
    """What the engine's event queue holds (ties at one instant break in push order)."""

    STEP = 0  # a replica's engine iteration ended
    DOWN_CHANGE = 1  # an outage of a group starts or ends
    PERIOD = 2  # the plan's next period: replica counts change
    SCALE = 3  # the autoscaler looks
    READY = 4  # replicas the autoscaler asked for are up
    EXPIRE = 5  # a queued request's deadline
    TICK = 6  # a reporting step (cost, capacity, queue lengths)
    PROBE = 7  # the gateway probes a group


class RequestLevelSim:
    """One run of the request-level engine: replicas and their engines, the event queue,
    and the simulated gateway (`sim.gateway.SimGateway`) that sends to them."""

    def __init__(
        self,
        fleet: Fleet,
        scenario: Scenario,
        timeline: Timeline,
        *,
        step: float | None = None,
        admission: AdmissionSettings | None = None,
        routing: RoutingConfig | None = None,
        seed: int = 0,
        progress: Callable[[float], None] | None = None,
        max_requests: int = 5_000_000,
    ) -> None:
        self.fleet, self.scenario, self.timeline = fleet, scenario, timeline
        self.progress = progress
        self.dt = float(step or scenario.step)
        self.horizon = timeline.horizon
        self.steps = math.ceil(self.horizon / self.dt - 1e-9)
        self.rng = np.random.default_rng(seed)
        self.requests = _arrivals(fleet, timeline, self.dt, self.rng)
        n = len(self.requests)
        if max_requests < n:
            from skyfleet.errors import SkyfleetError

            raise SkyfleetError(
                f"the request-level engine would simulate {n:,} requests (limit "
                f"{max_requests:,}); use --engine fluid for this volume or a shorter horizon"
            )
        self.gateway = SimGateway(
            fleet,
            self.requests,
            self,
            admission or fleet.admission or admission_settings(),
            routing or fleet.routing or RoutingConfig(),
            fleet.health or HealthConfig(),
            seed,
        )
        groups = fleet.groups
        self.route_rps = np.array(
            [
                rate_at_concurrency(
                    g.profile,
                    g.concurrency,
                    fleet.models[g.model].mean_sizes,
                    fleet.models[g.model].slo.percentile,
                )
                for g in groups
            ]
        )
        self.prices = np.array([g.price_per_replica_hour for g in groups])
        self.reps: list[list[Replica]] = [[] for _ in groups]
        self.extras = [0] * len(groups)  # replicas the autoscaler added
        self.pending = [0] * len(groups)  # replicas the autoscaler asked for, not yet up
        self.heap: list[tuple[float, int, Event, Any]] = []
        self._seq = 0
        self.cost = np.zeros(self.steps)
        self.capacity = np.zeros(self.steps)
        self.queue_length = np.zeros((self.steps, 3))
        self.next_arrival = 0
        self.handlers: dict[Event, Callable[[float, Any], None]] = {
            Event.STEP: self._on_step,
            Event.DOWN_CHANGE: self._on_down_change,
            Event.PERIOD: self._on_period,
            Event.SCALE: self._on_scale,
            Event.READY: self._on_ready,
            Event.EXPIRE: lambda now, model: self.gateway.on_expire(model, now),
            Event.TICK: self._on_tick,
            Event.PROBE: lambda now, data: self.gateway.on_probe(data[0], data[1], now),
        }

    # ---- the Backend the simulated gateway sends to -------------------------------------
    def replicas(self, group: int) -> list[Replica]:
        return self.reps[group]

    def place(self, group: int, request: int, now: float) -> None:
        replica = min(
            (r for r in self.reps[group] if r.up and not r.draining), key=lambda x: x.in_flight
        )
        inp = int(self.requests.input_tokens[request])
        out = int(self.requests.output_tokens[request])
        cap = replica.engine.max_sequence_tokens
        if inp + out > cap:
            inp = max(1, min(inp, cap - 1))
            out = max(1, cap - inp)
        seq = replica.engine.add(inp, out)
        replica.reqs[seq.seq_id] = request
        self.start_step(replica, now)

    def schedule_probe(self, group: int, at: float) -> None:
        self.push(at, Event.PROBE, (group, at))

    def schedule_expiry(self, model: int, at: float) -> None:
        self.push(at, Event.EXPIRE, model)

    # ---- events -------------------------------------------------------------------------
    def push(self, t: float, kind: Event, data: object) -> None:
        self._seq += 1
        heapq.heappush(self.heap, (t, self._seq, kind, data))

    def run(self) -> SimResult:
        """Arrivals and events in time order until both run out (or an hour past the end)."""
        t_wall = time.perf_counter()
        self._schedule_initial()
        reqs, gateway = self.requests, self.gateway
        n = len(reqs)
        end_time = self.horizon + 3600.0
        while True:
            next_arrival = reqs.time[self.next_arrival] if self.next_arrival < n else math.inf
            next_event = self.heap[0][0] if self.heap else math.inf
            if next_arrival == math.inf and next_event == math.inf:
                break
            if next_arrival <= next_event:
                request = self.next_arrival
                self.next_arrival += 1
                gateway.admit(int(reqs.model[request]), request, float(next_arrival))
                continue
            now, _, kind, data = heapq.heappop(self.heap)
            if now > end_time:
                break
            self.handlers[kind](now, data)
            gateway.flush_retries(now)
        # anything still pending at the cut-off failed: the gateway's timeout ended it
        reqs.outcome[reqs.outcome == PENDING] = OUTCOME_CODE[Outcome.UPSTREAM_TIMEOUT]
        return _collect(self, time.perf_counter() - t_wall)

    def _schedule_initial(self) -> None:
        for group in range(len(self.fleet.groups)):
            self.reconcile(group, 0.0)
        for down in self.timeline.downs:
            self.push(down.start, Event.DOWN_CHANGE, down.group)
            if down.end < self.horizon:
                self.push(down.end, Event.DOWN_CHANGE, down.group)
        for period in range(1, math.ceil(self.horizon / self.fleet.period_s)):
            self.push(period * self.fleet.period_s, Event.PERIOD, None)
        if self.scenario.autoscaling.enabled:
            self.push(0.0, Event.SCALE, None)
        for i in range(self.steps):
            self.push(i * self.dt, Event.TICK, i)

    def _on_step(self, now: float, data: tuple[Replica, int]) -> None:
        replica, version = data
        if version != replica.version:
            return
        replica.busy = False
        result = replica.last_step
        reqs, gateway = self.requests, self.gateway
        done = False
        for offset, seqs in result.events:
            for seq in seqs:
                request = replica.reqs.get(seq.seq_id)
                if request is not None and math.isnan(reqs.first_token[request]):
                    reqs.first_token[request] = replica.step_start + offset
        for seq in result.finished:
            request = replica.reqs.pop(seq.seq_id, None)
            if request is not None:
                gateway.finish(request, Outcome.OK, now)
                done = True
        if replica.draining and replica.in_flight == 0:
            if replica in self.reps[replica.group]:
                self.reps[replica.group].remove(replica)
        else:
            self.start_step(replica, now)
        if done:
            gateway.drain_queue(gateway.model_of_group[replica.group], now)

    def _on_down_change(self, now: float, group: int) -> None:
        self._reconcile_all(now, [group])

    def _on_period(self, now: float, _: None) -> None:
        self._reconcile_all(now, range(len(self.fleet.groups)))

    def _reconcile_all(self, now: float, groups: Iterable[int]) -> None:
        gateway = self.gateway
        for group in groups:
            self.reconcile(group, now)
            gateway.schedule_probe(group, now)
        gateway.flush_retries(now)
        for model in range(len(gateway.models)):
            gateway.drain_queue(model, now)

    def _on_ready(self, now: float, data: tuple[int, int]) -> None:
        group, n = data
        self.pending[group] -= n
        self.extras[group] += n
        self.reconcile(group, now)
        self.gateway.drain_queue(self.gateway.model_of_group[group], now)

    def _on_scale(self, now: float, _: None) -> None:
        scaling = self.scenario.autoscaling
        groups, reqs, gateway = self.fleet.groups, self.requests, self.gateway
        seen = self.next_arrival
        for model in range(len(gateway.models)):
            rate = 0.0  # recent arrival rate of the model (last ≤ 2000 arrivals)
            recent = reqs.time[max(0, seen - 2000) : seen]
            recent = recent[reqs.model[max(0, seen - 2000) : seen] == model]
            if len(recent) > 1 and now - recent[0] > 0:
                rate = len(recent) / max(now - recent[0], 1e-9)
            need = rate + len(gateway.queues[model]) / scaling.interval
            need /= scaling.target_utilisation
            views = []
            for group in gateway.groups_of_model[model]:
                ups = sum(1 for r in self.reps[group] if r.up and not r.draining)
                views.append(
                    autoscale.GroupView(
                        group,
                        groups[group].capacity_rps,
                        groups[group].price_per_replica_hour,
                        ups,
                        self.pending[group],
                        self.extras[group] + self.pending[group],
                        math.ceil(scaling.max_scale * max(int(groups[group].replicas.max()), 1)),
                        self.planned(group, now),
                        ups > 0 and not self.timeline.locked(groups[group].provider, now),
                    )
                )
            for group, delta in autoscale.decide(need, views).items():
                if delta > 0:
                    self.pending[group] += delta
                    self.push(now + self.scenario.provisioning.total, Event.READY, (group, delta))
                else:
                    self.extras[group] = max(0, self.extras[group] + delta)
                    self.reconcile(group, now)
        if now + scaling.interval < self.horizon:
            self.push(now + scaling.interval, Event.SCALE, None)

    def _on_tick(self, now: float, i: int) -> None:
        groups = range(len(self.fleet.groups))
        replicas = np.array([sum(1 for r in self.reps[g] if not r.draining) for g in groups])
        self.cost[i] = float((replicas * self.prices).sum() * self.dt / 3600.0)
        self.capacity[i] = float(
            sum(
                self.route_rps[g] * sum(1 for r in self.reps[g] if r.up and not r.draining)
                for g in groups
            )
        )
        for queue in self.gateway.queues:
            for p in range(3):
                self.queue_length[i, p] += queue.count(Priority(p))
        if self.progress is not None and i % 16 == 0:
            self.progress(i / self.steps)

    # ---- replicas -----------------------------------------------------------------------
    def planned(self, group: int, t: float) -> int:
        return self.fleet.groups[group].replicas_at(int(t // self.fleet.period_s))

    def _down_fraction(self, group: int, t: float) -> float:
        up = 1.0
        for down in self.timeline.downs:
            if down.group == group and down.start <= t < down.end:
                up *= 1.0 - down.fraction
        return 1.0 - up

    def _kills(self, group: int, t: float) -> bool:
        """Whether replicas of `group` going down at `t` lose their running requests."""
        return any(
            d.fails_in_flight
            for d in self.timeline.downs
            if d.group == group and d.start <= t < d.end
        )

    def start_step(self, replica: Replica, now: float) -> None:
        if replica.busy or not replica.up or replica.engine.idle:
            return
        result = replica.engine.step()
        if result.duration <= 0 and not result.emitted:
            return
        replica.busy = True
        replica.last_step = result
        replica.step_start = now
        self.push(now + max(result.duration, 1e-6), Event.STEP, (replica, replica.version))

    def lose(self, replica: Replica, now: float) -> None:
        """A replica goes down: streamed requests fail, the others are retried. When the
        group has no other replica up, each is a failed attempt for the gateway's outlier
        detection (a partly lost group stands for endpoints that are still up)."""
        gateway, reqs = self.gateway, self.requests
        siblings = (x for x in self.reps[replica.group] if x is not replica)
        whole = not any(x.up and not x.draining for x in siblings)
        for request in list(replica.reqs.values()):
            if not math.isnan(reqs.first_token[request]):
                gateway.finish(request, Outcome.MID_STREAM, now)
            else:
                gateway.lost_before_first_token(request)
            if whole:
                gateway.attempt_failed(replica.group, now)
        replica.reqs.clear()
        replica.engine = Engine(self.fleet.groups[replica.group].profile)
        replica.busy = False
        replica.version += 1

    def reconcile(self, group: int, now: float) -> None:
        """Replicas of `group` to the plan (+ autoscaled extras), and as many down as its
        outages say now."""
        profile = self.fleet.groups[group].profile
        reps = self.reps[group]
        active = [r for r in reps if not r.draining]
        target = self.planned(group, now) + self.extras[group]
        while len(active) < target:
            replica = Replica(group, Engine(profile))
            reps.append(replica)
            active.append(replica)
        while len(active) > target:
            replica = min(active, key=lambda x: (x.up, x.in_flight))
            active.remove(replica)
            replica.draining = True
            if not replica.up or replica.in_flight == 0:
                if replica.up:
                    self.lose(replica, now)
                reps.remove(replica)
        want_down = round(self._down_fraction(group, now) * len(active))
        downs = [r for r in active if not r.up]
        ups = [r for r in active if r.up]
        while len(downs) < want_down and ups:
            replica = ups.pop(0)
            if replica.in_flight and not self._kills(group, now):
                # refuses new requests; those running finish (then it is removed)
                replica.draining = True
                replica = Replica(group, Engine(profile), up=False)
                reps.append(replica)
            else:
                self.lose(replica, now)
                replica.up = False
            downs.append(replica)
        while len(downs) > want_down:
            replica = downs.pop()
            replica.up = True
            replica.engine = Engine(profile)
            replica.version += 1


def _collect(sim: RequestLevelSim, wall: float) -> SimResult:
    """Per-step results from the requests' outcomes."""
    fleet, reqs, dt, T = sim.fleet, sim.requests, sim.dt, sim.steps
    served_group = reqs.served_group
    models = list(fleet.models)
    step_i = np.minimum((reqs.time // dt).astype(np.int64), T - 1)
    ttft = reqs.first_token - reqs.time
    out = reqs.output_tokens
    tpot = np.where(out > 1, (reqs.finished - reqs.first_token) / np.maximum(out - 1, 1), 0.0)
    ttft_slo = np.array([fleet.models[m].slo.ttft_s for m in models])[reqs.model]
    tpot_slo = np.array([fleet.models[m].slo.tpot_s for m in models])[reqs.model]
    served = reqs.outcome == OUTCOME_CODE[Outcome.OK]
    # TPOT's SLO is on the mean: judged per endpoint group and step, like the fluid engine
    n_groups = max(len(fleet.groups), 1)
    cell = step_i * n_groups + np.maximum(served_group, 0)
    sums = np.bincount(cell[served], weights=tpot[served], minlength=T * n_groups)
    cnts = np.bincount(cell[served], minlength=T * n_groups)
    mean_tpot = np.where(cnts > 0, sums / np.maximum(cnts, 1), 0.0)[cell]
    ok = served & (ttft <= ttft_slo + 1e-12) & (mean_tpot <= tpot_slo * TPOT_TOLERANCE)

    def binned(mask: np.ndarray) -> np.ndarray:
        counts = np.zeros((T, 3))
        np.add.at(counts, (step_i[mask], reqs.priority[mask]), 1.0)
        return counts

    by_provider: dict[str, np.ndarray] = {
        p: np.zeros(T) for p in sorted({g.provider for g in fleet.groups})
    }
    for index, group in enumerate(fleet.groups):
        mask = served & (served_group == index)
        np.add.at(by_provider[group.provider], step_i[mask], 1.0)
    hist, _ = np.histogram(ttft[served], bins=TTFT_EDGES)
    return SimResult(
        engine="des",
        step_s=dt,
        slo_target=sim.scenario.slo_target,
        arrivals=binned(np.ones(len(reqs), dtype=bool)),
        served=binned(served),
        served_ok=binned(ok),
        shed=binned(reqs.codes(lambda o: o.shed)),
        failed=binned(reqs.codes(lambda o: not (o.ok or o.shed))),
        queue=sim.queue_length,
        capacity_rps=sim.capacity,
        cost=sim.cost,
        served_by_provider=by_provider,
        ttft_hist=hist.astype(float),
        outages=list(sim.timeline.outages),
        ttft_samples=ttft[served],
        tpot_samples=tpot[served],
        wall_s=wall,
    )
