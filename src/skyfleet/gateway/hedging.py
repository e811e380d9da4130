"""Hedged attempts: a second attempt on another endpoint once the first is slower than the
model's recent TTFT percentile (within a budget); the first success wins, the loser is
cancelled (its upstream connection closed). Without hedging for the model (off, or too few
TTFT samples yet) an attempt is the plain one."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from skyfleet.config import FleetConfig
from skyfleet.gateway.attempts import OpenedStream, PlainAttempts
from skyfleet.gateway.call import Answer, Call
from skyfleet.gateway.fleet import Fleet, LiveEndpoint
from skyfleet.policy.hedging import HedgePolicy
from skyfleet.policy.routing import route
from skyfleet.policy.settings import hedge_settings

T = TypeVar("T")


class Hedging:
    """One hedging policy per model, from `overload.hedging`."""

    def __init__(self, cfg: FleetConfig, registry: CollectorRegistry) -> None:
        self.policies: dict[str, HedgePolicy] = {}
        self.configure(cfg)
        self.hedges = Counter(
            "skyfleet_hedges",
            "Hedged attempts by model and result (won: the hedge answered first)",
            ["model", "result"],
            registry=registry,
        )

    def configure(self, cfg: FleetConfig) -> None:
        """New settings for every model's policy (their samples are kept)."""
        self.settings = hedge_settings(cfg.overload)
        for policy in self.policies.values():
            policy.settings = self.settings

    def policy(self, model: str) -> HedgePolicy | None:
        """The model's hedging policy, or None when hedging is off."""
        if not self.settings.enabled:
            return None
        policy = self.policies.get(model)
        if policy is None:
            policy = self.policies[model] = HedgePolicy(self.settings)
        return policy


class HedgedAttempts:
    """The attempt strategy with hedging: plain attempts raced when the policy says so."""

    def __init__(self, plain: PlainAttempts, hedging: Hedging, fleet: Fleet) -> None:
        self.plain = plain
        self.hedging = hedging
        self.fleet = fleet
        self.rng = random.Random()

    async def json(self, call: Call, endpoint: LiveEndpoint) -> Answer:
        """A JSON attempt, hedged once it is slow."""
        if self.hedging.policy(call.features.model) is None:
            return await self.plain.json(call, endpoint)
        answer, winner = await self._race(call, endpoint, lambda e: self.plain.json(call, e))
        _adopt(call, winner, endpoint)
        return answer

    async def stream(self, request: web.Request, call: Call, endpoint: LiveEndpoint) -> Answer:
        """Open the stream (hedged once slow), then relay the winner's."""
        if self.hedging.policy(call.features.model) is None:
            return await self.plain.stream(request, call, endpoint)
        opened, winner = await self._race(call, endpoint, lambda e: self.plain.open_stream(call, e))
        _adopt(call, winner, endpoint)
        if isinstance(opened, Answer):
            return opened
        return await self.plain.commit_stream(request, call, winner, opened)

    def _hedge_target(self, call: Call, endpoint: LiveEndpoint) -> LiveEndpoint | None:
        fleet = self.fleet
        states = fleet.states.get(call.features.model, [])
        decision = route(
            call.features,
            states,
            fleet.cfg.routing,
            self.rng,
            exclude=[endpoint.cfg.name],
            now=time.monotonic(),
        )
        if decision.endpoint is None or decision.saturated:
            return None
        return fleet.endpoints.get(decision.endpoint)

    async def _race(
        self,
        call: Call,
        endpoint: LiveEndpoint,
        attempt: Callable[[LiveEndpoint], Awaitable[T]],
    ) -> tuple[T, LiveEndpoint]:
        """The attempt on `endpoint`, hedged on another endpoint once it is slower than the
        policy's percentile (within budget). Returns the first success and its endpoint."""
        model = call.features.model
        policy = self.hedging.policy(model)
        if policy is not None and call.record.attempts == 1:
            policy.record_request(time.time())
        delay = None if policy is None else policy.delay_s()
        started = time.monotonic()
        if policy is None or delay is None:  # no hedging (off, or too few TTFT samples yet)
            result = await attempt(endpoint)
            if policy is not None:
                policy.record_ttft(time.monotonic() - started)
            return result, endpoint
        first = asyncio.ensure_future(attempt(endpoint))
        tasks: dict[asyncio.Future[T], LiveEndpoint] = {first: endpoint}
        try:
            await asyncio.wait({first}, timeout=delay)
            if not first.done():
                second = self._hedge_target(call, endpoint)
                if second is not None and policy.try_hedge(time.time()):
                    tasks[asyncio.ensure_future(attempt(second))] = second
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
                    policy.record_ttft(time.monotonic() - started)
                    if len(tasks) > 1:
                        won = "won" if winner is not endpoint else "lost"
                        self.hedging.hedges.labels(model, won).inc()
                    return wins[0].result(), winner
                for task in done:
                    failure = failure or task.exception()
            assert failure is not None
            raise failure
        finally:
            await _cancel_all({t for t in tasks if not t.done()})

    def _discard(self, result: object, endpoint: LiveEndpoint) -> None:
        """Release an attempt result that will not be used (an opened upstream stream)."""
        if isinstance(result, OpenedStream):
            self.plain.discard(result, endpoint)


def _adopt(call: Call, winner: LiveEndpoint, endpoint: LiveEndpoint) -> None:
    """The hedge answered: the record names its endpoint."""
    if winner is not endpoint:
        record = call.record
        record.attempts += 1
        record.endpoint, record.provider = winner.cfg.name, winner.cfg.provider
        record.tier = winner.cfg.tier


async def _cancel_all(tasks: set[asyncio.Future[T]]) -> None:
    """Cancel `tasks` and wait until they have cleaned up (connections closed)."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
