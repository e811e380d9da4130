"""What the dashboard knows about the gateway at one instant (normalised, source-agnostic)."""

from __future__ import annotations

from dataclasses import dataclass, field

from skyfleet.vocab import PRIORITY_LABELS, ROUTE_TIERS

PRIORITIES = PRIORITY_LABELS
TIERS = ROUTE_TIERS


@dataclass(frozen=True)
class EndpointState:
    """One endpoint as the gateway sees it now; `status` is up, ejected or down."""

    name: str
    provider: str
    tier: str = "primary"
    model: str = ""
    region: str = ""
    accelerator: str = ""
    status: str = "up"
    in_flight: float = 0.0
    capacity: float = 0.0
    price_per_hour: float = 0.0

    @property
    def healthy(self) -> bool:
        return self.status == "up"


@dataclass(frozen=True)
class GatewaySample:
    """One scrape of the gateway: gauges as they are, counters cumulative since start."""

    scraped_at: float  # wall-clock time of the scrape
    endpoints: tuple[EndpointState, ...] = ()
    requests: dict[str, float] = field(default_factory=dict)  # per endpoint, answered
    errors: dict[str, float] = field(default_factory=dict)  # per endpoint, failed attempts
    ttft_sum: dict[str, float] = field(default_factory=dict)  # per provider, seconds
    ttft_count: dict[str, float] = field(default_factory=dict)  # per provider
    queue: dict[str, float] = field(default_factory=dict)  # per priority, waiting now
    shed: dict[str, float] = field(default_factory=dict)  # per priority, rejected so far
    admitted: dict[str, float] = field(default_factory=dict)  # per priority, accepted so far
    retries: float = 0.0
    spillovers: float = 0.0
    cost: float | None = None  # dollars so far if the gateway accounts it (usage-based)
