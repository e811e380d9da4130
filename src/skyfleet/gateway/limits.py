"""Adaptive concurrency limits per endpoint (Gradient2, `policy.concurrency`), fed by attempt
latencies and overload answers.

The limit is applied by lowering the endpoint's `EndpointState.capacity` (never above the
configured capacity), so the routing policy sees a slowed endpoint as saturated and moves
traffic elsewhere without any change to it; admission sums the same limits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from skyfleet.config import FleetConfig, OverloadConfig
from skyfleet.gateway.fleet import Fleet, LiveEndpoint
from skyfleet.policy.concurrency import AdaptiveLimit
from skyfleet.policy.settings import gradient_settings


class _EndpointLimit:
    __slots__ = ("capacity", "limit")

    def __init__(self, overload: OverloadConfig, capacity: int) -> None:
        self.limit = AdaptiveLimit(gradient_settings(overload, capacity))
        self.capacity = capacity


class AdaptiveLimits:
    """One adaptive limit per endpoint (the gateway's `LatencyObserver`)."""

    def __init__(
        self,
        fleet: Fleet,
        registry: CollectorRegistry,
        on_raise: Callable[[], None] = lambda: None,
    ) -> None:
        self.fleet = fleet
        self.on_raise = on_raise  # a limit went up: queued requests may start
        self.endpoints: dict[str, _EndpointLimit] = {}
        self.changes = Counter(
            "skyfleet_concurrency_limit_changes",
            "Adaptive concurrency limit changes by endpoint and direction",
            ["endpoint", "direction"],
            registry=registry,
        )
        registry.register(_LimitCollector(self))
        self.configure(fleet.cfg)

    def configure(self, cfg: FleetConfig) -> None:
        """Re-read the settings; an endpoint whose capacity changed starts over."""
        self.overload = cfg.overload
        capacities = {endpoint_cfg.name: endpoint_cfg.capacity for endpoint_cfg in cfg.endpoints}
        for name in list(self.endpoints):
            if capacities.get(name) != self.endpoints[name].capacity:
                del self.endpoints[name]
        if self.enabled:
            for name, endpoint in self.fleet.endpoints.items():
                if name in self.endpoints:
                    endpoint.state.capacity = min(
                        endpoint.cfg.capacity, self.endpoints[name].limit.limit
                    )

    @property
    def enabled(self) -> bool:
        """Whether adaptive limits apply (`overload.enabled` and `adaptive_concurrency`)."""
        return self.overload.enabled and self.overload.adaptive_concurrency

    def _limit_of(self, endpoint: LiveEndpoint) -> _EndpointLimit | None:
        if not self.enabled:
            return None
        endpoint_limit = self.endpoints.get(endpoint.cfg.name)
        if endpoint_limit is None:
            endpoint_limit = self.endpoints[endpoint.cfg.name] = _EndpointLimit(
                self.overload, endpoint.cfg.capacity
            )
        return endpoint_limit

    def _apply(self, endpoint: LiveEndpoint, endpoint_limit: _EndpointLimit, before: int) -> None:
        after = endpoint_limit.limit.limit
        endpoint.state.capacity = min(endpoint.cfg.capacity, after)
        if after != before:
            direction = "down" if after < before else "up"
            self.changes.labels(endpoint.cfg.name, direction).inc()
            if after > before:
                self.on_raise()

    def on_latency(self, endpoint: LiveEndpoint, seconds: float) -> None:
        """A time-to-first-byte sample of one attempt on `endpoint`."""
        endpoint_limit = self._limit_of(endpoint)
        if endpoint_limit is not None:
            before = endpoint_limit.limit.limit
            endpoint_limit.limit.on_sample(
                time.monotonic(), seconds, endpoint.state.outstanding + 1
            )
            self._apply(endpoint, endpoint_limit, before)

    def on_drop(self, endpoint: LiveEndpoint) -> None:
        """`endpoint` answered 429/503 or timed out: an overload signal for its limit."""
        endpoint_limit = self._limit_of(endpoint)
        if endpoint_limit is not None:
            before = endpoint_limit.limit.limit
            endpoint_limit.limit.on_drop(time.monotonic(), endpoint.state.outstanding + 1)
            self._apply(endpoint, endpoint_limit, before)


class _LimitCollector(Collector):
    def __init__(self, limits: AdaptiveLimits) -> None:
        self._limits = limits

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "skyfleet_endpoint_concurrency_limit",
            "Adaptive concurrency limit of the endpoint",
            labels=["endpoint"],
        )
        for name, endpoint_limit in self._limits.endpoints.items():
            gauge.add_metric([name], endpoint_limit.limit.limit)
        yield gauge
