"""Prometheus metrics of one gateway process (own registry; per-endpoint gauges on scrape)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from skyfleet.gateway.fleet import Fleet
from skyfleet.gateway.ledger import UsageRecord

disable_created_metrics()  # type: ignore[no-untyped-call]

_LAT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _EndpointCollector(Collector):
    """Reads live endpoint state at scrape time (no per-request gauge updates)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        labels = ["endpoint", "provider", "tier"]
        inflight = GaugeMetricFamily(
            "skyfleet_endpoint_in_flight", "Requests open on the endpoint", labels=labels
        )
        healthy = GaugeMetricFamily(
            "skyfleet_endpoint_healthy", "1 if the endpoint takes traffic", labels=labels
        )
        capacity = GaugeMetricFamily(
            "skyfleet_endpoint_capacity", "Configured capacity", labels=labels
        )
        waiting = GaugeMetricFamily(
            "skyfleet_endpoint_num_requests_waiting", "Scraped vLLM queue", labels=labels
        )
        kv_cache = GaugeMetricFamily(
            "skyfleet_endpoint_kv_cache_usage", "Scraped vLLM KV-cache usage", labels=labels
        )
        ejections = CounterMetricFamily(
            "skyfleet_endpoint_ejections", "Outlier ejections of the endpoint", labels=labels
        )
        for endpoint in self.fleet.endpoints.values():
            state = endpoint.state
            label_values = [state.name, state.provider, state.tier]
            inflight.add_metric(label_values, state.in_flight)
            healthy.add_metric(label_values, 1.0 if state.healthy else 0.0)
            capacity.add_metric(label_values, state.capacity)
            if state.num_waiting is not None:
                waiting.add_metric(label_values, state.num_waiting)
            if state.kv_cache_usage is not None:
                kv_cache.add_metric(label_values, state.kv_cache_usage)
            ejections.add_metric(label_values, endpoint.health.total_ejections)
        yield from (inflight, healthy, capacity, waiting, kv_cache, ejections)


@dataclass(slots=True)
class _ModelSeries:
    latency: Histogram
    ttft: Histogram
    prompt: Counter
    completion: Counter
    requests: dict[int, Counter]  # by final status


class GatewayMetrics:
    """All metrics the request path updates."""

    def __init__(self, fleet: Fleet) -> None:
        registry = self.registry = CollectorRegistry()
        self.requests = Counter(
            "skyfleet_requests",
            "Requests by model and final status",
            ["model", "status"],
            registry=registry,
        )
        self.errors = Counter("skyfleet_errors", "Errors by cause", ["cause"], registry=registry)
        self.attempts = Counter(
            "skyfleet_upstream_attempts",
            "Upstream attempts by endpoint and outcome",
            ["endpoint", "outcome"],
            registry=registry,
        )
        self.retries = Counter(
            "skyfleet_retries", "Retries on another endpoint", ["model", "cause"], registry=registry
        )
        self.retry_budget_exhausted = Counter(
            "skyfleet_retry_budget_exhausted", "Retries refused by the budget", registry=registry
        )
        self.spillovers = Counter(
            "skyfleet_spillovers",
            "Requests served beyond the first tier",
            ["model", "tier"],
            registry=registry,
        )
        self.ttft = Histogram(
            "skyfleet_ttft_seconds",
            "Time to first token (streams)",
            ["model"],
            buckets=_LAT_BUCKETS,
            registry=registry,
        )
        self.latency = Histogram(
            "skyfleet_request_duration_seconds",
            "End-to-end latency",
            ["model"],
            buckets=_LAT_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "skyfleet_tokens", "Tokens by model and kind", ["model", "kind"], registry=registry
        )
        self.reloads = Counter(
            "skyfleet_config_reloads", "Config reloads by result", ["result"], registry=registry
        )
        registry.register(_EndpointCollector(fleet))
        self._per_model: dict[str, _ModelSeries] = {}

    def observe(self, record: UsageRecord) -> None:
        """A finished request: its status, latency, time to first token and tokens."""
        model = record.model
        per = self._per_model.get(model)
        if per is None:  # labelled children looked up once per model (labels() takes a lock)
            per = self._per_model[model] = _ModelSeries(
                self.latency.labels(model),
                self.ttft.labels(model),
                self.tokens.labels(model, "prompt"),
                self.tokens.labels(model, "completion"),
                {},
            )
        by_status = per.requests.get(record.status)
        if by_status is None:
            by_status = per.requests[record.status] = self.requests.labels(
                model, str(record.status)
            )
        by_status.inc()
        per.latency.observe(record.latency_s)
        if record.ttft_s is not None:
            per.ttft.observe(record.ttft_s)
        if record.prompt_tokens:
            per.prompt.inc(record.prompt_tokens)
        if record.completion_tokens:
            per.completion.inc(record.completion_tokens)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
