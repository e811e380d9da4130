"""Overload control at runtime: the glue between the pure policies and the gateway.

`OverloadController` implements the gateway's `Admission` protocol: per-tenant limiters
(`policy.ratelimit`), one priority wait queue per model whose waiters are asyncio futures
(`policy.priority`), the fleet-level admit/queue/shed decision (`policy.admission`), one
adaptive concurrency limit per endpoint fed by observed TTFT (`policy.concurrency`) and the
hedging policy (`policy.hedging`). `OverloadGateway` is the gateway with the hooks that feed
it: attempt latencies, overload answers, hedged attempts, and `x-ratelimit-*` headers on every
response. Metrics go into the gateway's Prometheus registry.

The adaptive limit is applied by lowering the endpoint's `EndpointState.capacity` (never above
the configured capacity), so the routing policy sees a slowed endpoint as saturated and moves
traffic elsewhere without any change to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from skyfleet.config import FleetConfig, OverloadConfig, TenantConfig
from skyfleet.gateway.app import AttemptFailed, Call, Gateway, OpenedStream, _bearer
from skyfleet.gateway.fleet import Fleet, LiveEndpoint
from skyfleet.gateway.ledger import UsageRecord
from skyfleet.policy.admission import (
    AdmissionRequest,
    AdmissionSettings,
    FleetLoad,
    decide,
    next_to_dispatch,
)
from skyfleet.policy.concurrency import AdaptiveLimit, GradientSettings
from skyfleet.policy.hedging import HedgePolicy, HedgeSettings
from skyfleet.policy.priority import Priority, WaitQueue, parse_priority, token_cost
from skyfleet.policy.ratelimit import Charge, RateLimiter, TenantLimiter, TenantLimits
from skyfleet.policy.routing import route
from skyfleet.policy.types import ADMIT, AdmissionDecision, EndpointState, RequestFeatures

if TYPE_CHECKING:
    from skyfleet.gateway.shared_limits import SharedLimits

T = TypeVar("T")
_WAIT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
_SERVICE_EMA = 0.05
_PUMP_INTERVAL_S = 0.05
_OVERLOAD_CAUSES = {"upstream_429", "upstream_timeout"}
_UNBOUNDED = FleetLoad(0, 1 << 40)  # tenant limits only: the fleet never says no


def admission_settings(o: OverloadConfig) -> AdmissionSettings:
    """The pure policy's settings from the `overload:` config section."""
    return AdmissionSettings(
        queue_size=o.queue_size,
        critical_deadline_s=o.critical_deadline_s,
        standard_deadline_s=o.standard_deadline_s,
        sheddable_deadline_s=o.sheddable_deadline_s,
        standard_share=o.standard_share,
        sheddable_share=o.sheddable_share,
        shed_status=o.shed_status,
    )


def gradient_settings(o: OverloadConfig, capacity: int) -> GradientSettings:
    """Adaptive-limit settings for an endpoint of `capacity` (the limit never exceeds it)."""
    return GradientSettings(
        initial_limit=capacity,
        min_limit=min(o.min_limit, capacity),
        max_limit=capacity,
        window_s=o.limit_window_s,
        tolerance=o.limit_tolerance,
    )


def hedge_settings(o: OverloadConfig) -> HedgeSettings:
    """Hedging settings from the config."""
    h = o.hedging
    return HedgeSettings(
        enabled=h.enabled,
        percentile=h.percentile,
        budget_fraction=h.budget_percent / 100.0,
        min_samples=h.min_samples,
        min_delay_s=h.min_delay_s,
    )


@dataclass(slots=True)
class _Held:
    """An admitted request until `release`."""

    model: str
    priority: Priority
    limiter: TenantLimiter | None
    charge: Charge | None
    est_cost: float
    counted: bool  # holds a fleet slot (overload enabled)
    started: float
    rec: UsageRecord | None = None


@dataclass(slots=True)
class _EndpointLimit:
    limit: AdaptiveLimit
    capacity: int


class OverloadMetrics:
    """Queue length and wait per priority, shed counts by reason, limits, hedges."""

    def __init__(self, registry: CollectorRegistry, ctl: OverloadController) -> None:
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
        self.limit_changes = Counter(
            "skyfleet_concurrency_limit_changes",
            "Adaptive concurrency limit changes by endpoint and direction",
            ["endpoint", "direction"],
            registry=registry,
        )
        self.hedges = Counter(
            "skyfleet_hedges",
            "Hedged attempts by model and result (won: the hedge answered first)",
            ["model", "result"],
            registry=registry,
        )
        registry.register(_OverloadCollector(ctl))


class _OverloadCollector(Collector):
    """Gauges read at scrape time: queue length per model and priority, endpoint limits."""

    def __init__(self, ctl: OverloadController) -> None:
        self._ctl = ctl

    def collect(self) -> Iterator[GaugeMetricFamily]:
        q = GaugeMetricFamily(
            "skyfleet_queue_length",
            "Requests waiting in the overload queue",
            labels=["model", "priority"],
        )
        for model, wq in self._ctl.queues.items():
            for p in Priority:
                q.add_metric([model, p.label], wq.count(p))
        lim = GaugeMetricFamily(
            "skyfleet_endpoint_concurrency_limit",
            "Adaptive concurrency limit of the endpoint",
            labels=["endpoint"],
        )
        for name, el in self._ctl.limits.items():
            lim.add_metric([name], el.limit.limit)
        act = GaugeMetricFamily(
            "skyfleet_admitted_in_flight", "Admitted requests not yet finished", labels=["model"]
        )
        for model, n in self._ctl.active.items():
            act.add_metric([model], n)
        yield from (q, lim, act)


class OverloadController:
    """Admission control for one gateway process (the gateway's `Admission` protocol)."""

    def __init__(self, fleet: Callable[[], Fleet], registry: CollectorRegistry) -> None:
        self._fleet = fleet
        self.rates = RateLimiter()
        self.queues: dict[str, WaitQueue[asyncio.Future[AdmissionDecision]]] = {}
        self.active: dict[str, int] = {}
        self.limits: dict[str, _EndpointLimit] = {}
        self.hedging: dict[str, HedgePolicy] = {}
        self._held: dict[int, _Held] = {}
        self._service_s: dict[str, float] = {}  # EMA of admitted-to-released seconds
        self._eps: dict[str, Sequence[EndpointState]] = {}
        self._pump_task: asyncio.Task[None] | None = None
        self.metrics = OverloadMetrics(registry, self)
        self._admitted: dict[tuple[Priority, str], Counter] = {}
        self.shared: SharedLimits | None = None  # tenant limits in Redis (server.redis_url)
        redis_url = fleet().cfg.server.redis_url
        if redis_url is not None:
            from skyfleet.gateway.shared_limits import SharedLimits

            self.shared = SharedLimits(redis_url, registry)
        self.configure(fleet().cfg)

    # ---- configuration ------------------------------------------------------------------
    def configure(self, cfg: FleetConfig) -> None:
        """(Re)read the `overload:` section and tenant limits; keeps live state."""
        o = self.cfg = cfg.overload
        self.settings = admission_settings(o)
        self.hedge_settings = hedge_settings(o)
        for q in self.queues.values():
            q.capacity = o.queue_size
        for policy in self.hedging.values():
            policy.settings = self.hedge_settings
        caps = {e.name: e.capacity for e in cfg.endpoints}
        for name in list(self.limits):
            if caps.get(name) != self.limits[name].capacity:
                del self.limits[name]
        if o.enabled and o.adaptive_concurrency:
            for name, ep in self._fleet().endpoints.items():
                if name in self.limits:
                    ep.state.capacity = min(ep.cfg.capacity, self.limits[name].limit.limit)

    def _tenant_limits(self, t: TenantConfig) -> TenantLimits:
        lim = t.limits
        return TenantLimits(
            rpm=lim.rpm,
            tpm=lim.tpm,
            max_concurrency=lim.max_concurrency,
            daily_budget_usd=lim.daily_budget_usd,
            burst_s=self.cfg.rate_limit_burst_s,
        )

    def limiter(self, tenant: TenantConfig | None) -> TenantLimiter | None:
        """The tenant's limiter, or None when it has no limits."""
        if tenant is None:
            return None
        lim = tenant.limits
        if (
            lim.rpm is None
            and lim.tpm is None
            and lim.max_concurrency is None
            and lim.daily_budget_usd is None
        ):
            return None
        return self.rates.get(tenant.name, self._tenant_limits(tenant))

    def limit_headers(self, tenant: TenantConfig) -> dict[str, str]:
        """Current `x-ratelimit-*` headers for a tenant (empty without RPM/TPM limits)."""
        lim = self.limiter(tenant)
        if lim is not None and self.shared is not None:
            return self.shared.headers(tenant.name, lim)
        return {} if lim is None else lim.state(time.time()).headers()

    # ---- fleet view ---------------------------------------------------------------------
    def _limit_of(self, ep: EndpointState) -> int:
        el = self.limits.get(ep.name)
        return ep.capacity if el is None else min(ep.capacity, el.limit.limit)

    def fleet_load(self, model: str, now: float) -> FleetLoad:
        """Admitted in-flight requests of `model` against the sum of its endpoints' limits."""
        eps = self._eps.get(model, ())
        limit = sum(self._limit_of(e) for e in eps if e.healthy)
        service = self._service_s.get(model)
        drain = limit / service if service else 0.0  # Little's law at full concurrency
        return FleetLoad(self.active.get(model, 0), limit, drain)

    # ---- the Admission protocol ---------------------------------------------------------
    async def admit(
        self, req: RequestFeatures, tenant: TenantConfig | None, eps: Sequence[EndpointState]
    ) -> AdmissionDecision:
        """Admit now, wait in the queue (until dispatched or the deadline), or reject."""
        limiter = self.limiter(tenant)
        if not self.cfg.enabled and limiter is None:
            return ADMIT
        prio = parse_priority(req.priority)
        max_tokens = req.max_tokens if req.max_tokens is not None else self.cfg.default_max_tokens
        areq = AdmissionRequest(req.tenant, prio, req.input_tokens_est, max_tokens)
        est_cost = token_cost(areq.input_tokens, areq.max_tokens)
        if self.shared is not None and limiter is not None and tenant is not None:
            limiter = await self.shared.acquire(tenant.name, limiter, areq.est_tokens)
        now = time.time()
        self._eps[req.model] = eps
        queue = self._queue(req.model)
        fleet = self.fleet_load(req.model, now) if self.cfg.enabled else _UNBOUNDED
        if fleet.limit <= 0:  # nothing healthy: routing answers with its own 503
            fleet = _UNBOUNDED
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[AdmissionDecision] = loop.create_future()
        a = decide(areq, limiter, queue, fleet, self.settings, now, fut)
        if a.action == "reject":
            self.metrics.shed.labels(prio.label, a.reason).inc()
            return _reject(a.as_decision(), tenant, prio)
        if a.action == "admit":
            self._hold(req, prio, limiter, a.charge, est_cost, "direct")
            return AdmissionDecision(headers=a.headers)
        entry = a.entry
        assert entry is not None and a.deadline is not None
        if a.displaced is not None:
            self._shed_waiter(a.displaced.payload, a.displaced.priority, "displaced")
        self._ensure_pump()
        try:
            await asyncio.wait({fut}, timeout=max(0.0, a.deadline - now))
        except asyncio.CancelledError:  # the client went away while waiting
            if not queue.remove(entry) and fut.done() and fut.result().action == "admit":
                self.active[req.model] -= 1
            if limiter is not None and a.charge is not None:
                limiter.refund(time.time(), a.charge)
            self._pump(req.model)
            raise
        waited = time.time() - now
        self.metrics.queue_wait.labels(prio.label).observe(waited)
        if not fut.done():
            queue.remove(entry)
            wait = self._expected_wait(req.model, prio)
            fut.set_result(self._shed_decision("queue_deadline", wait))
        decision = fut.result()
        if decision.action == "reject":
            if limiter is not None and a.charge is not None:
                limiter.refund(time.time(), a.charge)
            self.metrics.shed.labels(prio.label, decision.reason).inc()
            return _reject(decision, tenant, prio)
        self._hold(req, prio, limiter, a.charge, est_cost, "queued", counted_already=True)
        return AdmissionDecision(headers=a.headers)

    def release(
        self, req: RequestFeatures, tenant: TenantConfig | None, prompt: int, completion: int
    ) -> None:
        """An admitted request ended: correct its token charge exactly, free its slot."""
        h = self._held.pop(id(req), None)
        if h is None:
            return
        now = time.time()
        if h.limiter is not None and h.charge is not None:
            cost = h.rec.cost_usd if h.rec is not None else 0.0
            h.limiter.complete(now, h.charge, prompt + completion, cost)
        q = self.queues.get(h.model)
        if q is not None:
            q.charge(h.priority, req.tenant, token_cost(prompt, completion) - h.est_cost)
        if h.counted:
            self.active[h.model] = max(0, self.active.get(h.model, 0) - 1)
            took = time.monotonic() - h.started
            old = self._service_s.get(h.model)
            self._service_s[h.model] = took if old is None else old + _SERVICE_EMA * (took - old)
            self._pump(h.model)

    def attach_record(self, req: RequestFeatures, rec: UsageRecord) -> None:
        """The request's ledger record: `release` reads its cost (for the daily budget)."""
        h = self._held.get(id(req))
        if h is not None:
            h.rec = rec

    # ---- queue mechanics ----------------------------------------------------------------
    def _queue(self, model: str) -> WaitQueue[asyncio.Future[AdmissionDecision]]:
        q = self.queues.get(model)
        if q is None:
            q = self.queues[model] = WaitQueue(self.cfg.queue_size)
        return q

    def _hold(
        self,
        req: RequestFeatures,
        prio: Priority,
        limiter: TenantLimiter | None,
        charge: Charge | None,
        est_cost: float,
        path: str,
        counted_already: bool = False,
    ) -> None:
        counted = self.cfg.enabled
        if counted and not counted_already:
            self.active[req.model] = self.active.get(req.model, 0) + 1
        q = self.queues.get(req.model)
        if q is not None and path == "direct":
            q.charge(prio, req.tenant, est_cost)
        self._held[id(req)] = _Held(
            req.model, prio, limiter, charge, est_cost, counted, time.monotonic()
        )
        child = self._admitted.get((prio, path))
        if child is None:
            child = self._admitted[(prio, path)] = self.metrics.admitted.labels(prio.label, path)
        child.inc()

    def _expected_wait(self, model: str, prio: Priority) -> float:
        fleet = self.fleet_load(model, time.time())
        ahead = self._queue(model).count_at_or_above(prio) + 1
        return ahead / fleet.drain_rate_per_s if fleet.drain_rate_per_s > 0 else 1.0

    def _shed_decision(self, reason: str, wait_s: float) -> AdmissionDecision:
        ra = math.ceil(self.settings.retry_after(wait_s))
        return AdmissionDecision(
            action="reject",
            status=self.settings.shed_status,
            retry_after_s=ra,
            reason=reason,
            headers={"retry-after-ms": str(ra * 1000)},
        )

    def _shed_waiter(
        self, fut: asyncio.Future[AdmissionDecision], prio: Priority, reason: str
    ) -> None:
        if not fut.done():
            fut.set_result(self._shed_decision(reason, self.settings.min_retry_after_s))

    def _pump(self, model: str) -> None:
        """Dispatch queued requests while the fleet has room for them."""
        q = self.queues.get(model)
        if not q:
            return
        now = time.time()
        for e in q.expire(now):  # past deadline: their waiters time out on their own
            self._shed_waiter(e.payload, e.priority, "queue_deadline")
        while q:
            entry = next_to_dispatch(q, self.fleet_load(model, now), self.settings)
            if entry is None:
                return
            if entry.payload.done():  # already answered (deadline); slot not taken
                continue
            self.active[model] = self.active.get(model, 0) + 1
            entry.payload.set_result(ADMIT)

    def _ensure_pump(self) -> None:
        if self._pump_task is None or self._pump_task.done():
            self._pump_task = asyncio.get_running_loop().create_task(self._pump_loop())

    async def _pump_loop(self) -> None:
        """Safety net: dispatch when limits rise or endpoints recover without a release."""
        while any(self.queues.values()):
            await asyncio.sleep(_PUMP_INTERVAL_S)
            for model in list(self.queues):
                self._pump(model)

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

    # ---- adaptive concurrency -----------------------------------------------------------
    def _endpoint_limit(self, ep: LiveEndpoint) -> _EndpointLimit | None:
        if not (self.cfg.enabled and self.cfg.adaptive_concurrency):
            return None
        el = self.limits.get(ep.cfg.name)
        if el is None:
            cap = ep.cfg.capacity
            el = self.limits[ep.cfg.name] = _EndpointLimit(
                AdaptiveLimit(gradient_settings(self.cfg, cap)), cap
            )
        return el

    def _apply(self, ep: LiveEndpoint, el: _EndpointLimit, before: int) -> None:
        after = el.limit.limit
        ep.state.capacity = min(ep.cfg.capacity, after)
        if after != before:
            self.metrics.limit_changes.labels(ep.cfg.name, "down" if after < before else "up").inc()
            if after > before:
                for model in list(self.queues):
                    self._pump(model)

    def on_latency(self, ep: LiveEndpoint, seconds: float) -> None:
        """A time-to-first-byte sample of one attempt on `ep`."""
        el = self._endpoint_limit(ep)
        if el is not None:
            before = el.limit.limit
            el.limit.on_sample(time.monotonic(), seconds, ep.state.in_flight + 1)
            self._apply(ep, el, before)

    def on_drop(self, ep: LiveEndpoint) -> None:
        """`ep` answered 429 or timed out: an overload signal for its limit."""
        el = self._endpoint_limit(ep)
        if el is not None:
            before = el.limit.limit
            el.limit.on_drop(time.monotonic(), ep.state.in_flight + 1)
            self._apply(ep, el, before)

    # ---- hedging ------------------------------------------------------------------------
    def hedge_policy(self, model: str) -> HedgePolicy | None:
        """The model's hedging policy, or None when hedging is off."""
        if not self.hedge_settings.enabled:
            return None
        p = self.hedging.get(model)
        if p is None:
            p = self.hedging[model] = HedgePolicy(self.hedge_settings)
        return p


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


def _reject(d: AdmissionDecision, tenant: TenantConfig | None, prio: Priority) -> AdmissionDecision:
    """A reject with a readable message and whole-second Retry-After (the gateway rounds)."""
    ra = None if d.retry_after_s is None else float(math.ceil(d.retry_after_s))
    headers = {k: v for k, v in d.headers.items() if k.lower() != "retry-after"}
    fields: dict[str, object] = {"priority": prio.label}
    if tenant is not None:
        fields |= tenant.limits.model_dump()
    msg = _MESSAGES.get(d.reason, d.reason).format(**fields)
    if ra is not None:
        msg += f"; retry after {ra:.0f} s."
    return AdmissionDecision(d.action, d.status, ra, msg, headers)


class OverloadGateway(Gateway):
    """The gateway with overload control plugged in (admission, limits, hedging, headers)."""

    def __init__(self, cfg: FleetConfig, config_path: str | None = None) -> None:
        super().__init__(cfg, config_path)
        self.overload = OverloadController(lambda: self.fleet, self.metrics.registry)
        self.admission = self.overload

    def build_app(self) -> web.Application:
        """The gateway's app plus `x-ratelimit-*` headers on every inference response."""
        app = super().build_app()
        app.on_response_prepare.append(self._ratelimit_headers)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        await super()._on_startup(app)
        await self.overload.start()

    async def _on_cleanup(self, app: web.Application) -> None:
        await self.overload.close()
        await super()._on_cleanup(app)

    async def _ratelimit_headers(self, request: web.Request, resp: web.StreamResponse) -> None:
        if not request.path.startswith("/v1/") or "x-ratelimit-limit-requests" in resp.headers:
            return
        key = _bearer(request)
        tenant = self.fleet.tenant_for(key) if key else None
        if tenant is not None:
            resp.headers.update(self.overload.limit_headers(tenant))

    def reload(self) -> bool:
        """Reload the config and re-read the overload settings."""
        ok = super().reload()
        if ok:
            self.overload.configure(self.fleet.cfg)
        return ok

    def _finish(self, call: Call) -> None:
        self.overload.attach_record(call.feats, call.rec)  # release reads its cost
        super()._finish(call)

    # ---- attempts: latency samples, overload answers, hedging ---------------------------
    async def _timed(self, ep: LiveEndpoint, attempt: Awaitable[T], whole: Call | None) -> T:
        """Run one pre-commit attempt phase and feed its latency or failure to the limit.

        `whole` is given for non-streaming attempts: their time is divided by the answer's
        tokens + 1, so the sample stays comparable to a stream's time to first token.
        """
        t = time.monotonic()
        try:
            out = await attempt
        except AttemptFailed as f:
            if f.cause in _OVERLOAD_CAUSES or f.status == 503:
                self.overload.on_drop(ep)
            raise
        took = time.monotonic() - t
        if whole is not None:
            took /= whole.rec.completion_tokens + 1
        self.overload.on_latency(ep, took)
        return out

    def _hedge_target(self, call: Call, ep: LiveEndpoint) -> LiveEndpoint | None:
        states = self.fleet.states.get(call.feats.model, [])
        rc = self.fleet.cfg.routing
        d = route(call.feats, states, rc, self.rng, exclude=[ep.cfg.name], now=time.monotonic())
        if d.endpoint is None or d.saturated:
            return None
        return self.fleet.endpoints.get(d.endpoint)

    async def _race(
        self,
        call: Call,
        ep: LiveEndpoint,
        attempt: Callable[[LiveEndpoint], Awaitable[T]],
        whole: bool,
    ) -> tuple[T, LiveEndpoint]:
        """The attempt on `ep`, hedged on another endpoint once it is slower than the policy's
        percentile (within budget). Returns the first success and its endpoint; the loser is
        cancelled (its upstream connection closed)."""
        policy = self.overload.hedge_policy(call.feats.model)
        if policy is not None and call.rec.attempts == 1:
            policy.record_request(time.time())
        delay = None if policy is None else policy.delay_s()
        t0 = time.monotonic()
        if delay is None:  # no hedging (off, or too few TTFT samples yet)
            out = await self._timed(ep, attempt(ep), call if whole else None)
            if policy is not None:
                policy.record_ttft(time.monotonic() - t0)
            return out, ep
        first = asyncio.ensure_future(self._timed(ep, attempt(ep), call if whole else None))
        tasks: dict[asyncio.Future[T], LiveEndpoint] = {first: ep}
        try:
            await asyncio.wait({first}, timeout=delay)
            if not first.done() and policy is not None:
                ep2 = self._hedge_target(call, ep)
                if ep2 is not None and policy.try_hedge(time.time()):
                    tasks[
                        asyncio.ensure_future(
                            self._timed(ep2, attempt(ep2), call if whole else None)
                        )
                    ] = ep2
            pending: set[asyncio.Future[T]] = set(tasks)
            failure: BaseException | None = None
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                wins = [t for t in done if t.exception() is None]
                if wins:
                    for extra in wins[1:]:  # both answered in the same instant
                        self._discard(extra.result(), tasks[extra])
                    await _cancel_all(pending)
                    winner = tasks[wins[0]]
                    if policy is not None:
                        policy.record_ttft(time.monotonic() - t0)
                        if len(tasks) > 1:
                            won = "won" if winner is not ep else "lost"
                            self.overload.metrics.hedges.labels(call.feats.model, won).inc()
                    return wins[0].result(), winner
                for task in done:
                    failure = failure or task.exception()
            assert failure is not None
            raise failure
        finally:
            await _cancel_all({t for t in tasks if not t.done()})

    @staticmethod
    def _discard(result: object, ep: LiveEndpoint) -> None:
        """Release an attempt result that will not be used (an opened upstream stream)."""
        if isinstance(result, OpenedStream):
            ep.state.in_flight -= 1
            result.up.close()

    def _adopt(self, call: Call, winner: LiveEndpoint, ep: LiveEndpoint) -> None:
        if winner is not ep:  # the hedge answered: the record names its endpoint
            call.rec.attempts += 1
            call.rec.endpoint, call.rec.provider = winner.cfg.name, winner.cfg.provider
            call.rec.tier = winner.cfg.tier

    async def _attempt(self, call: Call, ep: LiveEndpoint) -> web.Response:
        resp, winner = await self._race(
            call, ep, lambda e: super(OverloadGateway, self)._attempt(call, e), True
        )
        self._adopt(call, winner, ep)
        return resp

    async def _attempt_stream(
        self, request: web.Request, call: Call, ep: LiveEndpoint
    ) -> web.StreamResponse:
        if self.overload.hedge_policy(call.feats.model) is None:
            return await self._plain_stream(request, call, ep)
        opened, winner = await self._race(call, ep, lambda e: self._open_stream(call, e), False)
        self._adopt(call, winner, ep)
        if isinstance(opened, web.Response):
            return opened
        return await self._commit_stream(request, call, winner, opened)

    async def _plain_stream(
        self, request: web.Request, call: Call, ep: LiveEndpoint
    ) -> web.StreamResponse:
        """The gateway's own streaming attempt; its TTFT feeds the endpoint's limit after."""
        t = time.monotonic()
        try:
            out = await super()._attempt_stream(request, call, ep)
        except AttemptFailed as f:
            if f.cause in _OVERLOAD_CAUSES or f.status == 503:
                self.overload.on_drop(ep)
            raise
        if call.rec.ttft_s is not None:
            self.overload.on_latency(ep, call.t0 + call.rec.ttft_s - t)
        return out


async def _cancel_all(tasks: set[asyncio.Future[T]]) -> None:
    """Cancel `tasks` and wait until they have cleaned up (connections closed)."""
    for t in tasks:
        t.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
