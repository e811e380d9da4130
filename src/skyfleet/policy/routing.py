"""Pure routing policy: pick an endpoint for one attempt from a snapshot of endpoint states.

Tiers are filled in order (primary → spillover → fallback). The policy moves to the next tier
only when every healthy endpoint of the current tier is saturated. Inside a tier it uses
power-of-two-choices on outstanding requests ÷ capacity, optionally preceded by prefix affinity
(rendezvous hashing) that yields when the preferred endpoint is much busier than the idlest one.
No I/O: the gateway and the simulator call the same code.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Collection, Sequence

from skyfleet.config import RoutingConfig
from skyfleet.policy.types import TIER_ORDER, EndpointState, RequestFeatures, RouteDecision


def is_saturated(endpoint: EndpointState, routing: RoutingConfig, now: float | None = None) -> bool:
    """Outstanding (this process's + other replicas') at capacity × threshold, throttled
    (429), or fresh scraped queue/KV over thresholds."""
    if endpoint.outstanding >= endpoint.capacity * routing.saturation_threshold:
        return True
    if endpoint.throttled_until is not None and (now is None or now < endpoint.throttled_until):
        return True  # it answered 429: treat as full until its Retry-After passes
    fresh = endpoint.scraped_at is not None and (
        now is None or now - endpoint.scraped_at <= routing.metrics_stale_s
    )
    if not fresh:
        return False  # fail open on stale or missing signals
    if (
        routing.queue_threshold is not None
        and endpoint.num_waiting is not None
        and endpoint.num_waiting >= routing.queue_threshold
    ):
        return True
    return (
        routing.kv_cache_threshold is not None
        and endpoint.kv_cache_usage is not None
        and endpoint.kv_cache_usage >= routing.kv_cache_threshold
    )


def _power_of_two_choices(candidates: Sequence[EndpointState], rng: random.Random) -> EndpointState:
    if len(candidates) == 1:
        return candidates[0]
    first, second = (candidates[index] for index in rng.sample(range(len(candidates)), 2))
    return first if first.load <= second.load else second


def _affinity(key: int, name: str) -> int:
    """Rendezvous-hash weight of (prefix, endpoint): stable across processes."""
    return int.from_bytes(hashlib.blake2b(f"{key}:{name}".encode(), digest_size=8).digest())


def pick_in_tier(
    candidates: Sequence[EndpointState],
    features: RequestFeatures,
    routing: RoutingConfig,
    rng: random.Random,
) -> EndpointState:
    """Prefix affinity (if on and not too imbalanced), else power-of-two-choices."""
    if routing.prefix_affinity and features.prefix_key is not None and len(candidates) > 1:
        key = features.prefix_key
        preferred = max(candidates, key=lambda endpoint: _affinity(key, endpoint.name))
        idlest_load = min(endpoint.load for endpoint in candidates)
        if preferred.load - idlest_load <= routing.affinity_max_imbalance:
            return preferred
    return _power_of_two_choices(candidates, rng)


def route(
    features: RequestFeatures,
    endpoints: Sequence[EndpointState],
    routing: RoutingConfig,
    rng: random.Random,
    *,
    exclude: Collection[str] = (),
    now: float | None = None,
) -> RouteDecision:
    """Choose the endpoint for the next attempt of the request described by `features` among
    the model's `endpoints`.

    `exclude` holds endpoints already tried for this request. `now` (monotonic seconds) lets
    stale scraped signals be ignored; pass None to trust them always.
    """
    if not endpoints:
        return RouteDecision(None, reason="model has no endpoints")
    first_tier = min(TIER_ORDER[endpoint.tier] for endpoint in endpoints)
    live = [endpoint for endpoint in endpoints if endpoint.healthy and endpoint.name not in exclude]
    if not live:
        why = "no healthy endpoint" if not exclude else "no healthy endpoint left to try"
        return RouteDecision(None, reason=why)
    by_tier: dict[int, list[EndpointState]] = {}
    for endpoint in live:
        by_tier.setdefault(TIER_ORDER[endpoint.tier], []).append(endpoint)
    for tier_rank in sorted(by_tier):
        free = [
            endpoint for endpoint in by_tier[tier_rank] if not is_saturated(endpoint, routing, now)
        ]
        if free:
            chosen = pick_in_tier(free, features, routing, rng)
            return RouteDecision(
                chosen.name, chosen.tier, spilled=tier_rank > first_tier, reason="ok"
            )
    # Everything healthy is saturated: the least loaded endpoint, cheapest tier on ties.
    chosen = min(live, key=lambda endpoint: (endpoint.load, TIER_ORDER[endpoint.tier]))
    return RouteDecision(
        chosen.name,
        chosen.tier,
        spilled=TIER_ORDER[chosen.tier] > first_tier,
        saturated=True,
        reason="all saturated",
    )
