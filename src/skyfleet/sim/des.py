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


def _arrivals(fleet: Fleet, timeline: Timeline, step: float, rng: np.random.Generator) -> Requests:
    """All arrivals of the run, sorted: time, model index, tokens, priority."""
    edges = np.arange(math.ceil(timeline.horizon / step - 1e-9) + 1) * step
    demand = _demand_steps(fleet, timeline, edges)
    times, models, inputs, outputs, priorities = [], [], [], [], []
    for index, (name, load) in enumerate(fleet.models.items()):
        scripted: np.ndarray | None = None
        if load.trace is not None:
            arrival_times, source = replay_index(
                load.trace, load.daily_volume, timeline.horizon, rng
            )
            if timeline.surges:  # thin or repeat by the surge multiplier
                mult = np.array([timeline.surge_at(name, float(when)) for when in arrival_times])
                repeats = np.floor(mult).astype(np.int64) + (
                    rng.random(len(arrival_times)) < mult - np.floor(mult)
                )
                arrival_times, source = (
                    np.repeat(arrival_times, repeats),
                    np.repeat(source, repeats),
                )
            input_tokens, output_tokens = (
                load.trace.input_tokens[source],
                load.trace.output_tokens[source],
            )
            if load.trace.priorities is not None:  # a scripted load names each class
                scripted = np.asarray(load.trace.priorities, dtype=np.int64)[source]
        else:
            counts = rng.poisson(demand[name] * step)
            arrival_times = np.repeat(edges[:-1], counts) + rng.random(counts.sum()) * step
            shares = np.array([fraction for _, _, fraction in load.sizes])
            bucket = rng.choice(len(load.sizes), size=len(arrival_times), p=shares / shares.sum())
            input_tokens = np.array([size[0] for size in load.sizes])[bucket]
            output_tokens = np.array([size[1] for size in load.sizes])[bucket]
        mix = np.asarray(load.priority_mix, dtype=float)
        times.append(arrival_times)
        models.append(np.full(len(arrival_times), index))
        inputs.append(np.maximum(np.round(input_tokens), 1))
        outputs.append(np.maximum(np.round(output_tokens), 1))
        drawn = rng.choice(3, size=len(arrival_times), p=mix / mix.sum())
        priorities.append(drawn if scripted is None else scripted)
    arrival_times = np.concatenate(times)
    order = np.argsort(arrival_times, kind="stable")
    return Requests(
        arrival_times[order],
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
        self.step_s = float(step or scenario.step)
        self.horizon = timeline.horizon
        self.steps = math.ceil(self.horizon / self.step_s - 1e-9)
        self.rng = np.random.default_rng(seed)
        self.requests = _arrivals(fleet, timeline, self.step_s, self.rng)
        count = len(self.requests)
        if max_requests < count:
            from skyfleet.errors import SkyfleetError

            raise SkyfleetError(
                f"the request-level engine would simulate {count:,} requests (limit "
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
                    group.profile,
                    group.concurrency,
                    fleet.models[group.model].mean_sizes,
                    fleet.models[group.model].slo.percentile,
                )
                for group in groups
            ]
        )
        self.prices = np.array([group.price_per_replica_hour for group in groups])
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
            (
                candidate
                for candidate in self.reps[group]
                if candidate.up and not candidate.draining
            ),
            key=lambda candidate: candidate.in_flight,
        )
        input_tokens = int(self.requests.input_tokens[request])
        output_tokens = int(self.requests.output_tokens[request])
        limit = replica.engine.max_sequence_tokens
        if input_tokens + output_tokens > limit:
            input_tokens = max(1, min(input_tokens, limit - 1))
            output_tokens = max(1, limit - input_tokens)
        seq = replica.engine.add(input_tokens, output_tokens)
        replica.reqs[seq.seq_id] = request
        self.start_step(replica, now)

    def schedule_probe(self, group: int, due: float) -> None:
        self.push(due, Event.PROBE, (group, due))

    def schedule_expiry(self, model: int, due: float) -> None:
        self.push(due, Event.EXPIRE, model)

    # ---- events -------------------------------------------------------------------------
    def push(self, when: float, kind: Event, data: object) -> None:
        self._seq += 1
        heapq.heappush(self.heap, (when, self._seq, kind, data))

    def run(self) -> SimResult:
        """Arrivals and events in time order until both run out (or an hour past the end)."""
        wall_start = time.perf_counter()
        self._schedule_initial()
        reqs, gateway = self.requests, self.gateway
        count = len(reqs)
        end_time = self.horizon + 3600.0
        while True:
            next_arrival = reqs.time[self.next_arrival] if self.next_arrival < count else math.inf
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
        return _collect(self, time.perf_counter() - wall_start)

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
        for tick in range(self.steps):
            self.push(tick * self.step_s, Event.TICK, tick)

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
        group, count = data
        self.pending[group] -= count
        self.extras[group] += count
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
                ups = sum(1 for replica in self.reps[group] if replica.up and not replica.draining)
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

    def _on_tick(self, now: float, tick: int) -> None:
        groups = range(len(self.fleet.groups))
        replicas = np.array(
            [sum(1 for replica in self.reps[group] if not replica.draining) for group in groups]
        )
        self.cost[tick] = float((replicas * self.prices).sum() * self.step_s / 3600.0)
        self.capacity[tick] = float(
            sum(
                self.route_rps[group]
                * sum(1 for replica in self.reps[group] if replica.up and not replica.draining)
                for group in groups
            )
        )
        for queue in self.gateway.queues:
            for priority in range(3):
                self.queue_length[tick, priority] += queue.count(Priority(priority))
        if self.progress is not None and tick % 16 == 0:
            self.progress(tick / self.steps)

    # ---- replicas -----------------------------------------------------------------------
    def planned(self, group: int, now: float) -> int:
        return self.fleet.groups[group].replicas_at(int(now // self.fleet.period_s))

    def _down_fraction(self, group: int, now: float) -> float:
        up_share = 1.0
        for down in self.timeline.downs:
            if down.group == group and down.start <= now < down.end:
                up_share *= 1.0 - down.fraction
        return 1.0 - up_share

    def _kills(self, group: int, now: float) -> bool:
        """Whether replicas of `group` going down at `t` lose their running requests."""
        return any(
            down.fails_in_flight
            for down in self.timeline.downs
            if down.group == group and down.start <= now < down.end
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
        siblings = (other for other in self.reps[replica.group] if other is not replica)
        whole = not any(sibling.up and not sibling.draining for sibling in siblings)
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
        active = [replica for replica in reps if not replica.draining]
        target = self.planned(group, now) + self.extras[group]
        while len(active) < target:
            replica = Replica(group, Engine(profile))
            reps.append(replica)
            active.append(replica)
        while len(active) > target:
            replica = min(active, key=lambda candidate: (candidate.up, candidate.in_flight))
            active.remove(replica)
            replica.draining = True
            if not replica.up or replica.in_flight == 0:
                if replica.up:
                    self.lose(replica, now)
                reps.remove(replica)
        want_down = round(self._down_fraction(group, now) * len(active))
        downs = [replica for replica in active if not replica.up]
        ups = [replica for replica in active if replica.up]
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
    fleet, reqs, step_s, steps = sim.fleet, sim.requests, sim.step_s, sim.steps
    served_group = reqs.served_group
    models = list(fleet.models)
    step_i = np.minimum((reqs.time // step_s).astype(np.int64), steps - 1)
    ttft = reqs.first_token - reqs.time
    out = reqs.output_tokens
    tpot = np.where(out > 1, (reqs.finished - reqs.first_token) / np.maximum(out - 1, 1), 0.0)
    ttft_slo = np.array([fleet.models[model].slo.ttft_s for model in models])[reqs.model]
    tpot_slo = np.array([fleet.models[model].slo.tpot_s for model in models])[reqs.model]
    served = reqs.outcome == OUTCOME_CODE[Outcome.OK]
    # TPOT's SLO is on the mean: judged per endpoint group and step, like the fluid engine
    n_groups = max(len(fleet.groups), 1)
    cell = step_i * n_groups + np.maximum(served_group, 0)
    sums = np.bincount(cell[served], weights=tpot[served], minlength=steps * n_groups)
    group_counts = np.bincount(cell[served], minlength=steps * n_groups)
    mean_tpot = np.where(group_counts > 0, sums / np.maximum(group_counts, 1), 0.0)[cell]
    within_slo = served & (ttft <= ttft_slo + 1e-12) & (mean_tpot <= tpot_slo * TPOT_TOLERANCE)

    def binned(mask: np.ndarray) -> np.ndarray:
        counts = np.zeros((steps, 3))
        np.add.at(counts, (step_i[mask], reqs.priority[mask]), 1.0)
        return counts

    by_provider: dict[str, np.ndarray] = {
        provider: np.zeros(steps) for provider in sorted({group.provider for group in fleet.groups})
    }
    for index, group in enumerate(fleet.groups):
        mask = served & (served_group == index)
        np.add.at(by_provider[group.provider], step_i[mask], 1.0)
    hist, _ = np.histogram(ttft[served], bins=TTFT_EDGES)
    return SimResult(
        engine="des",
        step_s=step_s,
        slo_target=sim.scenario.slo_target,
        arrivals=binned(np.ones(len(reqs), dtype=bool)),
        served=binned(served),
        served_ok=binned(within_slo),
        shed=binned(reqs.codes(lambda outcome: outcome.shed)),
        failed=binned(reqs.codes(lambda outcome: not (outcome.ok or outcome.shed))),
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
