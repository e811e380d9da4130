"""Send an admitted request upstream: route, attempt, fail over within the retry budget.

For each attempt the pure routing policy picks an endpoint (tiers in order, power of two
choices inside a tier, excluding endpoints this request already failed on); the attempt
strategy (plain or hedged) makes the attempt. A failure before the first byte reached the
client is retried on another endpoint while the outcome allows it, attempts are left and
the retry budget has room; otherwise the last failure is the answer.
`sim.gateway.SimGateway.send` is the simulator's twin of `Proxy.forward`.
"""

from __future__ import annotations

import random
import time

from aiohttp import web

from skyfleet.config import FleetConfig
from skyfleet.gateway.attempts import AttemptFailed, AttemptStrategy
from skyfleet.gateway.call import Answer, Call
from skyfleet.gateway.errors import error_response
from skyfleet.gateway.fleet import Fleet
from skyfleet.gateway.metrics import GatewayMetrics
from skyfleet.policy.outcome import Outcome
from skyfleet.policy.retry import RetryBudget
from skyfleet.policy.routing import route
from skyfleet.policy.settings import retry_budget


class Proxy:
    """The attempt loop of one gateway process."""

    def __init__(
        self,
        fleet: Fleet,
        attempts: AttemptStrategy,
        metrics: GatewayMetrics,
    ) -> None:
        self.fleet = fleet
        self.attempts = attempts
        self.metrics = metrics
        self.rng = random.Random()
        self.retry_budget: RetryBudget = retry_budget(fleet.cfg.routing)

    def configure(self, cfg: FleetConfig, old: FleetConfig) -> None:
        """A reloaded config: a new retry budget if the routing settings changed."""
        if cfg.routing != old.routing:
            self.retry_budget = retry_budget(cfg.routing)

    async def forward(self, request: web.Request, call: Call) -> Answer:
        """Attempts until one answers or no retry is left."""
        fleet = self.fleet
        routing = fleet.cfg.routing
        features, record = call.features, call.record
        states = fleet.states.get(features.model, [])  # [] if a reload removed the model
        now = time.monotonic()
        self.retry_budget.record_request(now)
        tried: list[str] = []
        last: AttemptFailed | None = None
        unsupported: AttemptFailed | None = None  # an endpoint's provider cannot take it
        while True:
            decision = route(features, states, routing, self.rng, exclude=tried, now=now)
            if decision.endpoint is None:
                failed = last or unsupported
                if failed is not None:
                    return Answer(failed.response(), failed.outcome, failed.status)
                return self.no_healthy_endpoint(features.model, now)
            endpoint = fleet.endpoints.get(decision.endpoint)
            if endpoint is None:  # removed by a reload since this request started
                tried.append(decision.endpoint)
                continue
            if decision.spilled:
                self.metrics.spillovers.labels(features.model, decision.tier or "").inc()
            record.attempts += 1
            record.endpoint, record.provider = endpoint.cfg.name, endpoint.cfg.provider
            record.tier = endpoint.cfg.tier
            try:
                if features.stream:
                    return await self.attempts.stream(request, call, endpoint)
                return await self.attempts.json(call, endpoint)
            except AttemptFailed as failed:
                if failed.outcome is Outcome.UNSUPPORTED:  # nothing was sent: not an attempt
                    record.attempts -= 1
                    unsupported = failed
                    tried.append(endpoint.cfg.name)
                    continue
                last = failed
                now = time.monotonic()
                if not failed.outcome.retryable:
                    return Answer(failed.response(), failed.outcome, failed.status)
                if not self.retry_budget.try_retry(record.attempts, now):
                    if record.attempts < routing.max_attempts:
                        self.metrics.retry_budget_exhausted.inc()
                    return Answer(failed.response(), failed.outcome, failed.status)
                self.metrics.retries.labels(features.model, failed.outcome.value).inc()
                tried.append(endpoint.cfg.name)

    def no_healthy_endpoint(self, model: str, now: float) -> Answer:
        """503 with Retry-After = time until the first ejection of the model's endpoints ends."""
        endpoints = self.fleet.models.get(model, [])
        wait = min((e.health.seconds_until_retry(now) for e in endpoints), default=1.0)
        response = error_response(
            503,
            f"no healthy endpoint for model '{model}'",
            code="no_healthy_endpoint",
            retry_after_s=wait,
        )
        return Answer(response, Outcome.NO_HEALTHY_ENDPOINT, 503)
