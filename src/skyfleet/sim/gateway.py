"""The simulated gateway: admission, routing, attempts, outlier detection and probes in
simulated time, calling the same policy code as `skyfleet serve`.

Read it next to the gateway: `admit` is `OverloadController.admit` (`policy.admission.decide`
over a `WaitQueue` per model, against `policy.admission.fleet_load`), `send` is
`gateway.proxy.Proxy.forward` (`policy.route`, an attempt, a retry on another endpoint
within `policy.retry.RetryBudget`), `attempt_failed` is `AttemptRecorder.record`
(`policy.outlier.OutlierDetector`), `on_probe` is `gateway.monitor.Monitor._probe`.
The request-level engine (`sim.des`) owns the replicas and calls in here.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from skyfleet.config import HealthConfig, RoutingConfig
from skyfleet.policy.admission import (
    AdmissionRequest,
    AdmissionSettings,
    FleetLoad,
    ServiceTime,
    decide,
    fleet_load,
    next_to_dispatch,
)
from skyfleet.policy.health import EndpointHealth
from skyfleet.policy.outcome import OUTCOMES, Outcome
from skyfleet.policy.outlier import OutlierDetector
from skyfleet.policy.priority import Priority, WaitQueue
from skyfleet.policy.routing import route
from skyfleet.policy.settings import retry_budget
from skyfleet.policy.types import RequestFeatures
from skyfleet.sim.fleet import Fleet
from skyfleet.sim.routing import endpoint_states

PENDING = -1
OUTCOME_CODE = {outcome: code for code, outcome in enumerate(OUTCOMES)}
PROBE_TICK_S = 0.25
"""The gateway monitor's loop period: endpoints on probation are probed on every tick."""


class ReplicaView(Protocol):
    """What the gateway sees of one replica."""

    up: bool
    draining: bool

    @property
    def in_flight(self) -> int: ...


class Backend(Protocol):
    """The engine side the simulated gateway sends to."""

    def replicas(self, group: int) -> Sequence[ReplicaView]:
        """Every replica of `group`, draining ones included."""
        ...

    def place(self, group: int, request: int, now: float) -> None:
        """Start `request` on the least-loaded replica of `group` that takes new work."""
        ...

    def schedule_probe(self, group: int, due: float) -> None:
        """Run `SimGateway.on_probe(group, due)` at `due`."""
        ...

    def schedule_expiry(self, model: int, due: float) -> None:
        """Run `SimGateway.on_expire(model)` at `due`."""
        ...


class Requests:
    """Every request of the run: arrivals (sorted), then what happened to each."""

    def __init__(
        self,
        time: np.ndarray,
        model: np.ndarray,
        input_tokens: np.ndarray,
        output_tokens: np.ndarray,
        priority: np.ndarray,
    ) -> None:
        self.time, self.model, self.priority = time, model, priority
        self.input_tokens, self.output_tokens = input_tokens, output_tokens
        count = len(time)
        self.outcome = np.full(count, PENDING, dtype=np.int8)  # OUTCOME_CODE, or PENDING
        self.first_token = np.full(count, np.nan)
        self.finished = np.full(count, np.nan)
        self.attempts = np.zeros(count, dtype=np.int64)
        self.served_group = np.full(count, -1, dtype=np.int64)
        self.admitted_at = np.full(count, np.nan)

    def __len__(self) -> int:
        return len(self.time)

    def codes(self, predicate: Callable[[Outcome], bool]) -> np.ndarray:
        """A mask of the requests whose outcome satisfies `predicate`."""
        wanted = [OUTCOME_CODE[outcome] for outcome in OUTCOMES if predicate(outcome)]
        return np.isin(self.outcome, wanted)


class SimGateway:
    """The gateway of the request-level engine."""

    def __init__(
        self,
        fleet: Fleet,
        requests: Requests,
        backend: Backend,
        admission: AdmissionSettings,
        routing: RoutingConfig,
        health: HealthConfig,
        seed: int,
    ) -> None:
        self.fleet, self.requests, self.backend = fleet, requests, backend
        self.admission, self.routing, self.health_settings = admission, routing, health
        self.rng = random.Random(seed)
        groups = fleet.groups
        self.models = list(fleet.models)
        self.model_of_group = [self.models.index(group.model) for group in groups]
        self.groups_of_model = [
            [index for index in range(len(groups)) if self.model_of_group[index] == model]
            for model in range(len(self.models))
        ]
        self.states = [
            endpoint_states([groups[index] for index in members])
            for members in self.groups_of_model
        ]
        self.features = [RequestFeatures(model=model) for model in self.models]
        self.queues: list[WaitQueue[int]] = [WaitQueue(admission.queue_size) for _ in self.models]
        self.service = [ServiceTime() for _ in self.models]
        self.health = [EndpointHealth() for _ in groups]
        self.outliers = OutlierDetector(health)
        self.retry_budget = retry_budget(routing)
        self.tried: dict[int, list[str]] = {}  # endpoints a retried request already failed on
        self.retry: list[int] = []  # lost before their first token: to retry now
        self.probe_at = [math.inf] * len(groups)
        self.expiry_at = [math.inf] * len(self.models)

    # ---- the gateway's view of the fleet ------------------------------------------------
    def refresh(self, model: int) -> None:
        """The endpoint states of `model`'s groups: healthy unless ejected or probed down (a
        group that went down unnoticed keeps its capacity until failures or probes show
        it), in-flight counts including replicas that are draining."""
        for position, group in enumerate(self.groups_of_model[model]):
            replicas = self.backend.replicas(group)
            active = [replica for replica in replicas if not replica.draining]
            replicas_up = sum(1 for replica in active if replica.up)
            state = self.states[model][position]
            state.healthy = bool(active) and self.health[group].routable(0.0)
            state.capacity = max(
                1, (replicas_up or len(active)) * self.fleet.groups[group].concurrency
            )
            state.in_flight = sum(replica.in_flight for replica in replicas)

    def fleet_load(self, model: int) -> FleetLoad:
        """As `OverloadController.fleet_load`: in flight against the healthy limit, and
        limit ÷ mean service time as the drain rate."""
        return fleet_load(self.states[model], service=self.service[model])

    # ---- a request's life ---------------------------------------------------------------
    def admit(self, model: int, request: int, now: float) -> None:
        """Admit, queue or shed an arriving request."""
        self.refresh(model)
        reqs = self.requests
        priority = Priority(int(reqs.priority[request]))
        ask = AdmissionRequest(
            "sim", priority, int(reqs.input_tokens[request]), int(reqs.output_tokens[request])
        )
        verdict = decide(
            ask, None, self.queues[model], self.fleet_load(model), self.admission, now, request
        )
        if verdict.action == "admit":
            self.send(model, request, now)
        elif verdict.action == "queue":
            if verdict.displaced is not None:
                self.finish(verdict.displaced.payload, Outcome.SHED, now)
            self.schedule_expiry(model)
        elif verdict.reason == "no_capacity":
            self.finish(request, Outcome.NO_HEALTHY_ENDPOINT, now)
        else:
            self.finish(request, Outcome.SHED, now)

    def send(self, model: int, request: int, now: float) -> bool:
        """Route an admitted request as `Proxy.forward` does: an attempt on a group that is
        down (unnoticed) fails, counts for outlier detection and is retried on another
        endpoint within the retry budget. False if the request failed."""
        reqs = self.requests
        if math.isnan(reqs.admitted_at[request]):
            reqs.admitted_at[request] = now
            self.retry_budget.record_request(now)
        states = self.states[model]
        while True:
            self.refresh(model)
            exclude = self.tried.get(request, ())
            decision = route(
                self.features[model], states, self.routing, self.rng, exclude=exclude, now=now
            )
            if decision.endpoint is None:
                self.finish(request, Outcome.NO_HEALTHY_ENDPOINT, now)
                return False
            position = next(
                index for index, state in enumerate(states) if state.name == decision.endpoint
            )
            group = self.groups_of_model[model][position]
            reqs.attempts[request] += 1
            if any(replica.up and not replica.draining for replica in self.backend.replicas(group)):
                break
            self.attempt_failed(group, now)  # refused: the group is down
            if not self.retry_budget.try_retry(int(reqs.attempts[request]), now):
                self.finish(request, Outcome.UPSTREAM_CONNECT, now)
                return False
            self.tried.setdefault(request, []).append(decision.endpoint)
        reqs.served_group[request] = group
        states[position].in_flight += 1
        self.backend.place(group, request, now)
        return True

    def finish(self, request: int, outcome: Outcome, now: float) -> None:
        """A request ends; an admitted one updates the mean service time."""
        reqs = self.requests
        reqs.outcome[request] = OUTCOME_CODE[outcome]
        reqs.finished[request] = now
        admitted = reqs.admitted_at[request]
        if not math.isnan(admitted):
            self.service[int(reqs.model[request])].observe(now - float(admitted))

    def lost_before_first_token(self, request: int) -> None:
        """Its replica went down before a token: retried at the next `flush_retries`."""
        self.retry.append(request)

    def flush_retries(self, now: float) -> None:
        """Attempts lost before their first token: retried at once on another endpoint
        (they keep their admission), within the retry budget."""
        reqs = self.requests
        while self.retry:
            request = self.retry.pop()
            if not self.retry_budget.try_retry(int(reqs.attempts[request]), now):
                self.finish(request, Outcome.UPSTREAM_CONNECT, now)
            else:
                group = self.fleet.groups[int(reqs.served_group[request])]
                self.tried.setdefault(request, []).append(group.name)
                self.send(int(reqs.model[request]), request, now)

    # ---- queue --------------------------------------------------------------------------
    def schedule_expiry(self, model: int) -> None:
        deadline = self.queues[model].next_deadline()
        if deadline is not None and deadline < self.expiry_at[model]:
            self.expiry_at[model] = deadline
            self.backend.schedule_expiry(model, deadline)

    def on_expire(self, model: int, now: float) -> None:
        """Queued requests past their deadline are shed."""
        self.expiry_at[model] = math.inf
        for entry in self.queues[model].expire(now):
            self.finish(entry.payload, Outcome.SHED, now)
        self.schedule_expiry(model)

    def drain_queue(self, model: int, now: float) -> None:
        """Dispatch queued requests while the fleet has room (the controller's pump)."""
        queue = self.queues[model]
        while len(queue):
            self.refresh(model)
            entry = next_to_dispatch(queue, self.fleet_load(model), self.admission)
            if entry is None:
                break
            self.send(model, entry.payload, now)

    # ---- health -------------------------------------------------------------------------
    def attempt_failed(self, group: int, now: float) -> None:
        """An attempt on `group` failed on the endpoint's side (the replica is down)."""
        ejected = self.outliers.observe(
            self.health[group], Outcome.UPSTREAM_CONNECT, self.health, now
        )
        if ejected:
            self.schedule_probe(group, now)

    def schedule_probe(self, group: int, now: float) -> None:
        """Next probe of `group` on the monitor's grid: every `probe_interval_s`, and every
        tick once an ejection has expired (probation)."""
        interval = self.health_settings.probe_interval_s
        health = self.health[group]
        due = (math.floor(now / interval + 1e-9) + 1) * interval
        if health.ejected_until is not None:
            back = max(health.ejected_until, now + 1e-9)
            due = min(due, math.ceil(back / PROBE_TICK_S - 1e-9) * PROBE_TICK_S)
        if due < self.probe_at[group]:
            self.probe_at[group] = due
            self.backend.schedule_probe(group, due)

    def on_probe(self, group: int, due: float, now: float) -> None:
        """A probe of `group` (scheduled for `due`; stale ones are ignored)."""
        if due != self.probe_at[group]:
            return
        self.probe_at[group] = math.inf
        health = self.health[group]
        replicas = self.backend.replicas(group)
        reachable = any(replica.up and not replica.draining for replica in replicas)
        health.on_probe(reachable, now, self.health_settings)
        if not (reachable and health.routable(now)):
            self.schedule_probe(group, now)  # keep probing until it is back
        self.drain_queue(self.model_of_group[group], now)
