"""Overload control at runtime: the gateway's `AdmissionController`.

Per-tenant limiters (`policy.ratelimit`, shared through Redis when `server.redis_url` is
set), one priority wait queue per model whose waiters are asyncio futures
(`policy.priority`), and the fleet-level admit/queue/shed decision (`policy.admission`)
against the model's endpoints' adaptive limits (`gateway.limits`). An admitted request
holds an `OverloadTicket` until it ends; its release corrects the token charge to the
actual usage, adds its cost to the tenant's budget, frees its slot and lets the next queued
request start. Metrics go into the gateway's Prometheus registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from skyfleet.config import FleetConfig, TenantConfig
from skyfleet.gateway.admission import NO_HOLD, Rejected, Ticket, Usage
from skyfleet.gateway.fleet import Fleet
from skyfleet.gateway.limits import AdaptiveLimits
from skyfleet.policy.admission import (
    AdmissionRequest,
    FleetLoad,
    ServiceTime,
    Verdict,
    decide,
    fleet_load,
    next_to_dispatch,
    shed_response,
)
from skyfleet.policy.outcome import Outcome
from skyfleet.policy.priority import Priority, WaitQueue, token_cost
from skyfleet.policy.ratelimit import Charge, RateLimiter, TenantLimiter, TenantLimits
from skyfleet.policy.settings import admission_settings
from skyfleet.policy.types import EndpointState, RequestFeatures

if TYPE_CHECKING:
    from skyfleet.gateway.shared_limits import SharedLimits

_WAIT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
_PUMP_INTERVAL_S = 0.05
_UNBOUNDED = FleetLoad(0, 1 << 40)  # tenant limits only: the fleet never says no

Waiter = asyncio.Future[Verdict[None] | None]  # None: dispatched; a Verdict: shed
"""A queued request's future: set when the pump dispatches it or it is shed."""


class OverloadTicket:
    """An admitted request's hold: its tenant charge and, with overload on, a fleet slot."""

    __slots__ = (
        "charge",
        "controller",
        "counted",
        "est_cost",
        "limiter",
        "model",
        "priority",
        "started",
        "tenant",
    )

    def __init__(
        self,
        controller: OverloadController,
        model: str,
        tenant: str,
        priority: Priority,
        limiter: TenantLimiter | None,
        charge: Charge | None,
        est_cost: float,
        counted: bool,
    ) -> None:
        self.controller, self.model, self.tenant, self.priority = (
            controller,
            model,
            tenant,
            priority,
        )
        self.limiter, self.charge, self.est_cost = limiter, charge, est_cost
        self.counted = counted
        self.started = time.monotonic()

    def release(self, outcome: Outcome, usage: Usage) -> None:
        """The request ended: settle its charge exactly, free its slot."""
        self.controller.release(self, usage)


class OverloadMetrics:
    """Queue wait per priority, shed and admitted counts, queue length and admitted gauges."""

    def __init__(self, registry: CollectorRegistry, controller: OverloadController) -> None:
        self.queue_wait = Histogram(
            "skyfleet_queue_wait_seconds",
            "Time admitted requests waited in the overload queue",
            ["priority"],
            buckets=_WAIT_BUCKETS,
            registry=registry,
        )
        self.shed = Counter(
            "skyfleet_shed",
            "Requests refused by admission control, by priority and reason",
            ["priority", "reason"],
            registry=registry,
        )
        self.admitted = Counter(
            "skyfleet_admitted",
            "Requests admitted, directly or after queueing",
            ["priority", "path"],
            registry=registry,
        )
        self._admitted = {
            (p, path): self.admitted.labels(p.label, path)
            for p in Priority
            for path in ("direct", "queued")
        }
        registry.register(_QueueCollector(controller))

    def count_admitted(self, priority: Priority, path: str) -> None:
        """One more request admitted by `path` (direct or queued)."""
        self._admitted[(priority, path)].inc()


class _QueueCollector(Collector):
    """Gauges read at scrape time: queue length per model and priority, admitted in flight."""

    def __init__(self, controller: OverloadController) -> None:
        self._controller = controller

    def collect(self) -> Iterator[GaugeMetricFamily]:
        queued = GaugeMetricFamily(
            "skyfleet_queue_length",
            "Requests waiting in the overload queue",
            labels=["model", "priority"],
        )
        for model, queue in self._controller.queues.items():
            for p in Priority:
                queued.add_metric([model, p.label], queue.count(p))
        active = GaugeMetricFamily(
            "skyfleet_admitted_in_flight", "Admitted requests not yet finished", labels=["model"]
        )
        for model, n in self._controller.active.items():
            active.add_metric([model], n)
        yield from (queued, active)


class OverloadController:
    """Admission control for one gateway process (the gateway's `AdmissionController`)."""

    def __init__(
        self,
        fleet: Fleet,
        registry: CollectorRegistry,
        limits: AdaptiveLimits | None = None,
        shared: SharedLimits | None = None,
    ) -> None:
        self.fleet = fleet
        self.limits = limits or AdaptiveLimits(fleet, registry)
        self.limits.on_raise = self.pump_all
        self.rates = RateLimiter()
        self.queues: dict[str, WaitQueue[Waiter]] = {}
        self.active: dict[str, int] = {}  # admitted requests in flight per model
        self._service: dict[str, ServiceTime] = {}  # admitted-to-released seconds
        self._endpoints: dict[str, Sequence[EndpointState]] = {}
        self._pump_task: asyncio.Task[None] | None = None
        self.metrics = OverloadMetrics(registry, self)
        self.shared = shared  # tenant limits in Redis (server.redis_url; build_gateway)
        self.configure(fleet.cfg)

    # ---- configuration ------------------------------------------------------------------
    def configure(self, cfg: FleetConfig) -> None:
        """(Re)read the `overload:` section and tenant limits; keeps live state."""
        self.cfg = cfg.overload
        self.settings = admission_settings(cfg.overload)
        for queue in self.queues.values():
            queue.capacity = cfg.overload.queue_size
        self.limits.configure(cfg)

    def limiter(self, tenant: TenantConfig | None) -> TenantLimiter | None:
        """The tenant's limiter, or None when it has no limits."""
        if tenant is None:
            return None
        limits = tenant.limits
        if (
            limits.rpm is None
            and limits.tpm is None
            and limits.max_concurrency is None
            and limits.daily_budget_usd is None
        ):
            return None
        return self.rates.get(
            tenant.name,
            TenantLimits(
                rpm=limits.rpm,
                tpm=limits.tpm,
                max_concurrency=limits.max_concurrency,
                daily_budget_usd=limits.daily_budget_usd,
                burst_s=self.cfg.rate_limit_burst_s,
            ),
        )

    def limit_headers(self, tenant: TenantConfig) -> dict[str, str]:
        """Current `x-ratelimit-*` headers for a tenant (empty without RPM/TPM limits)."""
        limiter = self.limiter(tenant)
        if limiter is not None and self.shared is not None:
            return self.shared.headers(tenant.name, limiter)
        return {} if limiter is None else limiter.state(time.time()).headers()

    # ---- fleet view ---------------------------------------------------------------------
    def fleet_load(self, model: str) -> FleetLoad:
        """Admitted in-flight requests of `model` (and, with shared fleet state, the other
        replicas' open requests on its endpoints) against the sum of its endpoints' limits
        (the adaptive limits are applied to the endpoints' capacity already: `AdaptiveLimits`)."""
        endpoints = self._endpoints.get(model, ())
        return fleet_load(
            endpoints,
            in_flight=self.active.get(model, 0) + sum(e.peer_in_flight for e in endpoints),
            service=self._service.get(model),
        )

    # ---- admission ----------------------------------------------------------------------
    async def admit(
        self, req: RequestFeatures, tenant: TenantConfig | None, eps: Sequence[EndpointState]
    ) -> Ticket:
        """Admit now, or wait in the queue until dispatched or the deadline; raises
        `Rejected` when the tenant's limits or the fleet's load say no."""
        limiter = self.limiter(tenant)
        prio = req.priority
        if not self.cfg.enabled and limiter is None:
            return NO_HOLD
        max_tokens = req.max_tokens if req.max_tokens is not None else self.cfg.default_max_tokens
        areq = AdmissionRequest(req.tenant, prio, req.input_tokens_est, max_tokens)
        est_cost = token_cost(areq.input_tokens, areq.max_tokens)
        if self.shared is not None and limiter is not None and tenant is not None:
            limiter = await self.shared.acquire(tenant.name, limiter, areq.est_tokens)
        now = time.time()
        self._endpoints[req.model] = eps
        queue = self._queue(req.model)
        fleet = self.fleet_load(req.model) if self.cfg.enabled else _UNBOUNDED
        if fleet.limit <= 0:  # nothing healthy: routing answers with its own 503
            fleet = _UNBOUNDED
        waiter: Waiter = asyncio.get_running_loop().create_future()
        verdict = decide(areq, limiter, queue, fleet, self.settings, now, waiter)
        if verdict.action == "reject":
            self.metrics.shed.labels(prio.label, verdict.reason).inc()
            raise _rejected(verdict, tenant)
        if verdict.action == "admit":
            return self._hold(req, prio, limiter, verdict.charge, est_cost, "direct")
        entry = verdict.entry
        assert entry is not None and verdict.deadline is not None
        if verdict.displaced is not None:
            self._shed_waiter(verdict.displaced.payload, verdict.displaced.priority, "displaced")
        self._ensure_pump()
        try:
            await asyncio.wait({waiter}, timeout=max(0.0, verdict.deadline - now))
        except asyncio.CancelledError:  # the client went away while waiting
            if not queue.remove(entry) and waiter.done() and waiter.result() is None:
                self.active[req.model] -= 1
            if limiter is not None and verdict.charge is not None:
                limiter.refund(time.time(), verdict.charge)
            self._pump(req.model)
            raise
        self.metrics.queue_wait.labels(prio.label).observe(time.time() - now)
        if not waiter.done():
            queue.remove(entry)
            waiter.set_result(
                self._shed("queue_deadline", prio, self._expected_wait(req.model, prio))
            )
        shed = waiter.result()
        if shed is not None:
            if limiter is not None and verdict.charge is not None:
                limiter.refund(time.time(), verdict.charge)
            self.metrics.shed.labels(prio.label, shed.reason).inc()
            raise _rejected(shed, tenant)
        return self._hold(
            req, prio, limiter, verdict.charge, est_cost, "queued", counted_already=True
        )

    def release(self, ticket: OverloadTicket, usage: Usage) -> None:
        """An admitted request ended: correct its token charge exactly, free its slot."""
        if ticket.limiter is not None and ticket.charge is not None:
            tokens = usage.prompt_tokens + usage.completion_tokens
            ticket.limiter.complete(time.time(), ticket.charge, tokens, usage.cost_usd)
        queue = self.queues.get(ticket.model)
        if queue is not None:
            actual = token_cost(usage.prompt_tokens, usage.completion_tokens)
            queue.charge(ticket.priority, ticket.tenant, actual - ticket.est_cost)
        if ticket.counted:
            self.active[ticket.model] = max(0, self.active.get(ticket.model, 0) - 1)
            service = self._service.get(ticket.model)
            if service is None:
                service = self._service[ticket.model] = ServiceTime()
            service.observe(time.monotonic() - ticket.started)
            self._pump(ticket.model)

    # ---- queue mechanics ----------------------------------------------------------------
    def _queue(self, model: str) -> WaitQueue[Waiter]:
        queue = self.queues.get(model)
        if queue is None:
            queue = self.queues[model] = WaitQueue(self.cfg.queue_size)
        return queue

    def _hold(
        self,
        req: RequestFeatures,
        prio: Priority,
        limiter: TenantLimiter | None,
        charge: Charge | None,
        est_cost: float,
        path: str,
        counted_already: bool = False,
    ) -> OverloadTicket:
        counted = self.cfg.enabled
        if counted and not counted_already:
            self.active[req.model] = self.active.get(req.model, 0) + 1
        queue = self.queues.get(req.model)
        if queue is not None and path == "direct":
            queue.charge(prio, req.tenant, est_cost)
        self.metrics.count_admitted(prio, path)
        return OverloadTicket(self, req.model, req.tenant, prio, limiter, charge, est_cost, counted)

    def _expected_wait(self, model: str, prio: Priority) -> float:
        fleet = self.fleet_load(model)
        ahead = self._queue(model).count_at_or_above(prio) + 1
        return ahead / fleet.drain_rate_per_s if fleet.drain_rate_per_s > 0 else 1.0

    def _shed(self, reason: str, prio: Priority, wait_s: float) -> Verdict[None]:
        return shed_response(prio, reason, wait_s, self.settings)

    def _shed_waiter(self, waiter: Waiter, prio: Priority, reason: str) -> None:
        if not waiter.done():
            waiter.set_result(self._shed(reason, prio, self.settings.min_retry_after_s))

    def _pump(self, model: str) -> None:
        """Dispatch queued requests while the fleet has room for them."""
        queue = self.queues.get(model)
        if not queue:
            return
        for expired in queue.expire(time.time()):  # their waiters time out on their own
            self._shed_waiter(expired.payload, expired.priority, "queue_deadline")
        while queue:
            entry = next_to_dispatch(queue, self.fleet_load(model), self.settings)
            if entry is None:
                return
            if entry.payload.done():  # already answered (deadline); slot not taken
                continue
            self.active[model] = self.active.get(model, 0) + 1
            entry.payload.set_result(None)

    def pump_all(self) -> None:
        """Dispatch for every model (an endpoint's limit went up)."""
        for model in list(self.queues):
            self._pump(model)

    def _ensure_pump(self) -> None:
        if self._pump_task is None or self._pump_task.done():
            self._pump_task = asyncio.get_running_loop().create_task(self._pump_loop())

    async def _pump_loop(self) -> None:
        """Safety net: dispatch when limits rise or endpoints recover without a release."""
        while any(self.queues.values()):
            await asyncio.sleep(_PUMP_INTERVAL_S)
            self.pump_all()

    async def start(self) -> None:
        """Connect the shared limits store, if configured (fails naming the Redis URL)."""
        if self.shared is not None:
            await self.shared.start()

    async def close(self) -> None:
        """Stop the background task (gateway shutdown)."""
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
        if self.shared is not None:
            await self.shared.close()


_MESSAGES = {
    "rate_limit_requests": "Rate limit reached for requests per minute (limit {rpm})",
    "rate_limit_tokens": "Rate limit reached for tokens per minute (limit {tpm})",
    "rate_limit_concurrency": "Too many concurrent requests (limit {max_concurrency})",
    "rate_limit_budget": "Daily budget of {daily_budget_usd} USD used up; it resets at 00:00 UTC",
    "expected_wait_over_deadline": "The service is overloaded (expected wait exceeds the "
    "{priority} deadline)",
    "queue_full": "The service is overloaded (wait queue full)",
    "queue_deadline": "The service is overloaded (waited past the {priority} deadline)",
    "displaced": "The service is overloaded (a more important request took the slot)",
}


def _rejected(verdict: Verdict[Any], tenant: TenantConfig | None) -> Rejected:
    """The refusal with a readable message and a whole-second Retry-After."""
    retry_after = None if verdict.retry_after_s is None else float(math.ceil(verdict.retry_after_s))
    headers = {k: v for k, v in verdict.headers.items() if k.lower() != "retry-after"}
    fields: dict[str, object] = {"priority": verdict.priority.label}
    if tenant is not None:
        fields |= tenant.limits.model_dump()
    message = _MESSAGES.get(verdict.reason, verdict.reason).format(**fields)
    if retry_after is not None:
        message += f"; retry after {retry_after:.0f} s."
    outcome = Outcome.RATE_LIMITED if verdict.reason.startswith("rate_limit") else Outcome.SHED
    return Rejected(outcome, verdict.status, message, retry_after, headers)
