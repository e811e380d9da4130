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


def is_saturated(ep: EndpointState, p: RoutingConfig, now: float | None = None) -> bool:
    """Outstanding (this process's + other replicas') at capacity × threshold, throttled
    (429), or fresh scraped queue/KV over thresholds."""
    if ep.outstanding >= ep.capacity * p.saturation_threshold:
        return True
    if ep.throttled_until is not None and (now is None or now < ep.throttled_until):
        return True  # it answered 429: treat as full until its Retry-After passes
    fresh = ep.scraped_at is not None and (now is None or now - ep.scraped_at <= p.metrics_stale_s)
    if not fresh:
        return False  # fail open on stale or missing signals
    if (
        p.queue_threshold is not None
        and ep.num_waiting is not None
        and ep.num_waiting >= p.queue_threshold
    ):
        return True
    return (
        p.kv_cache_threshold is not None
        and ep.kv_cache_usage is not None
        and ep.kv_cache_usage >= p.kv_cache_threshold
    )


def _p2c(cands: Sequence[EndpointState], rng: random.Random) -> EndpointState:
    if len(cands) == 1:
        return cands[0]
    a, b = rng.sample(range(len(cands)), 2)
    ea, eb = cands[a], cands[b]
    return ea if ea.load <= eb.load else eb


def _affinity(key: int, name: str) -> int:
    """Rendezvous-hash weight of (prefix, endpoint): stable across processes."""
    return int.from_bytes(hashlib.blake2b(f"{key}:{name}".encode(), digest_size=8).digest())


def pick_in_tier(
    cands: Sequence[EndpointState], req: RequestFeatures, p: RoutingConfig, rng: random.Random
) -> EndpointState:
    """Prefix affinity (if on and not too imbalanced), else power-of-two-choices."""
    if p.prefix_affinity and req.prefix_key is not None and len(cands) > 1:
        key = req.prefix_key
        pref = max(cands, key=lambda e: _affinity(key, e.name))
        if pref.load - min(e.load for e in cands) <= p.affinity_max_imbalance:
            return pref
    return _p2c(cands, rng)


def route(
    req: RequestFeatures,
    endpoints: Sequence[EndpointState],
    p: RoutingConfig,
    rng: random.Random,
    *,
    exclude: Collection[str] = (),
    now: float | None = None,
) -> RouteDecision:
    """Choose the endpoint for the next attempt of `req` among the model's `endpoints`.

    `exclude` holds endpoints already tried for this request. `now` (monotonic seconds) lets
    stale scraped signals be ignored; pass None to trust them always.
    """
    if not endpoints:
        return RouteDecision(None, reason="model has no endpoints")
    first_tier = min(TIER_ORDER[e.tier] for e in endpoints)
    live = [e for e in endpoints if e.healthy and e.name not in exclude]
    if not live:
        why = "no healthy endpoint" if not exclude else "no healthy endpoint left to try"
        return RouteDecision(None, reason=why)
    by_tier: dict[int, list[EndpointState]] = {}
    for e in live:
        by_tier.setdefault(TIER_ORDER[e.tier], []).append(e)
    for t in sorted(by_tier):
        free = [e for e in by_tier[t] if not is_saturated(e, p, now)]
        if free:
            ep = pick_in_tier(free, req, p, rng)
            return RouteDecision(ep.name, ep.tier, spilled=t > first_tier, reason="ok")
    # Everything healthy is saturated: the least loaded endpoint, cheapest tier on ties.
    ep = min(live, key=lambda e: (e.load, TIER_ORDER[e.tier]))
    return RouteDecision(
        ep.name,
        ep.tier,
        spilled=TIER_ORDER[ep.tier] > first_tier,
        saturated=True,
        reason="all saturated",
    )
