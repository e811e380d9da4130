"""Plain data shared by the pure policies (routing, admission) and their callers.

The gateway keeps one `EndpointState` per endpoint and updates it in place (in-flight count,
health, scraped engine signals, and the other replicas' in-flight count when fleet state is
shared); the simulator builds its own. Policies only read them.
"""

from __future__ import annotations

from dataclasses import dataclass

from skyfleet.vocab import ROUTE_TIER_ORDER as TIER_ORDER
from skyfleet.vocab import Priority, RouteTier

__all__ = [
    "TIER_ORDER",
    "EndpointState",
    "Priority",
    "RequestFeatures",
    "RouteDecision",
    "RouteTier",
]


@dataclass(slots=True)
class EndpointState:
    """Live state of one endpoint as the policies see it."""

    name: str
    provider: str
    tier: RouteTier
    capacity: int
    model: str = ""  # model name sent upstream
    region: str = ""
    in_flight: int = 0  # requests this gateway process has open on it
    peer_in_flight: int = 0  # other gateway replicas' open requests, as last published
    healthy: bool = True  # False while ejected or failing probes
    num_waiting: float | None = None  # scraped vllm:num_requests_waiting
    kv_cache_usage: float | None = None  # scraped vllm:kv_cache_usage_perc (0..1)
    scraped_at: float | None = None  # monotonic time of the last successful scrape
    throttled_until: float | None = None  # after a 429: saturated until then (Retry-After)
    price_per_hour: float | None = None
    price_per_1m_input: float | None = None
    price_per_1m_output: float | None = None

    @property
    def outstanding(self) -> int:
        """Open requests on the endpoint: this process's and (shared state) the others'."""
        return self.in_flight + self.peer_in_flight

    @property
    def load(self) -> float:
        """Outstanding requests per unit of capacity."""
        return self.outstanding / self.capacity


@dataclass(slots=True, frozen=True)
class RequestFeatures:
    """What the policies know about a request before it is sent."""

    model: str
    tenant: str = "anonymous"
    priority: Priority = Priority.STANDARD
    stream: bool = False
    input_tokens_est: int = 0
    max_tokens: int | None = None
    prefix_key: int | None = None  # hash of the prompt's first characters (affinity)


@dataclass(slots=True, frozen=True)
class RouteDecision:
    """Where to send one attempt; endpoint None means nothing is available."""

    endpoint: str | None
    tier: RouteTier | None = None
    spilled: bool = False  # served by a later tier than the model's first
    saturated: bool = False  # every healthy candidate was saturated
    reason: str = ""
