"""The pure routing, health and retry-budget policies (no I/O)."""

from __future__ import annotations

import random
from collections import Counter

from skyfleet.config import HealthConfig, RoutingConfig
from skyfleet.policy import EndpointHealth, EndpointState, RequestFeatures, RetryBudget, route

REQ = RequestFeatures(model="chat")


def ep(
    name: str, tier: str = "primary", cap: int = 10, inflight: int = 0, **kw: object
) -> EndpointState:
    return EndpointState(
        name=name, provider=name[0], tier=tier, capacity=cap, in_flight=inflight, **kw
    )  # type: ignore[arg-type]


def test_fills_primary_first_and_spills_only_when_saturated() -> None:
    p = RoutingConfig()
    rng = random.Random(0)
    eps = [ep("a", inflight=9), ep("s", "spillover"), ep("f", "fallback")]
    d = route(REQ, eps, p, rng)
    assert (d.endpoint, d.spilled) == ("a", False)
    eps[0].in_flight = 10  # at capacity × 1.0
    d = route(REQ, eps, p, rng)
    assert (d.endpoint, d.tier, d.spilled) == ("s", "spillover", True)
    eps[1].in_flight = 10
    assert route(REQ, eps, p, rng).endpoint == "f"


def test_saturation_threshold_scales_capacity() -> None:
    eps = [ep("a", inflight=5), ep("s", "spillover")]
    assert (
        route(REQ, eps, RoutingConfig(saturation_threshold=0.5), random.Random(0)).endpoint == "s"
    )
    assert (
        route(REQ, eps, RoutingConfig(saturation_threshold=1.0), random.Random(0)).endpoint == "a"
    )


def test_unhealthy_and_excluded_are_skipped() -> None:
    eps = [ep("a", healthy=False), ep("b"), ep("s", "spillover")]
    rng = random.Random(0)
    assert {route(REQ, eps, RoutingConfig(), rng).endpoint for _ in range(50)} == {"b"}
    d = route(REQ, eps, RoutingConfig(), rng, exclude={"b"})
    assert d.endpoint == "s" and d.spilled
    d = route(REQ, [ep("a", healthy=False)], RoutingConfig(), rng)
    assert d.endpoint is None and "healthy" in d.reason


def test_all_saturated_picks_least_loaded_and_flags_it() -> None:
    eps = [ep("a", cap=10, inflight=20), ep("s", "spillover", cap=10, inflight=12)]
    d = route(REQ, eps, RoutingConfig(), random.Random(0))
    assert d.saturated and d.endpoint == "s"


def test_scraped_signals_saturate_only_when_fresh() -> None:
    p = RoutingConfig(queue_threshold=4, kv_cache_threshold=0.9, metrics_stale_s=2.0)
    a = ep("a", num_waiting=5.0, kv_cache_usage=0.1, scraped_at=100.0)
    eps = [a, ep("s", "spillover")]
    assert route(REQ, eps, p, random.Random(0), now=101.0).endpoint == "s"
    assert route(REQ, eps, p, random.Random(0), now=110.0).endpoint == "a"  # stale: fail open
    a.num_waiting, a.kv_cache_usage = 0.0, 0.95
    assert route(REQ, eps, p, random.Random(0), now=101.0).endpoint == "s"


def test_p2c_balances_by_load_over_capacity() -> None:
    rng = random.Random(1)
    eps = [ep("big", cap=30), ep("small", cap=10), ep("mid", cap=20)]
    for _ in range(600):  # simulate: every pick stays in flight
        d = route(REQ, eps, RoutingConfig(saturation_threshold=100), rng)
        next(e for e in eps if e.name == d.endpoint).in_flight += 1
    loads = [e.in_flight / e.capacity for e in eps]
    assert max(loads) - min(loads) < 0.3 * max(loads)
    assert eps[0].in_flight > eps[2].in_flight > eps[1].in_flight


def test_prefix_affinity_is_sticky_until_imbalanced() -> None:
    p = RoutingConfig(prefix_affinity=True, affinity_max_imbalance=0.5)
    eps = [ep(n) for n in "abcd"]
    req = RequestFeatures(model="chat", prefix_key=1234)
    rng = random.Random(0)
    picks = Counter(route(req, eps, p, rng).endpoint for _ in range(50))
    assert len(picks) == 1
    fav = next(iter(picks))
    other_keys = {
        route(RequestFeatures("chat", prefix_key=k), eps, p, rng).endpoint for k in range(40)
    }
    assert len(other_keys) >= 3  # different prefixes spread out
    next(e for e in eps if e.name == fav).in_flight = 6  # 0.6 above the idlest: yields
    assert all(route(req, eps, p, rng).endpoint != fav for _ in range(30))


def test_ejection_backs_off_exponentially_and_probe_brings_back() -> None:
    cfg = HealthConfig(consecutive_failures=3, base_ejection_s=10, max_ejection_s=35)
    h = EndpointHealth()
    assert not h.on_failure(0, cfg) and not h.on_failure(0, cfg)
    h.on_success()
    assert not h.on_failure(1, cfg) and not h.on_failure(1, cfg)
    assert h.on_failure(1, cfg)  # third in a row
    assert not h.routable(5) and h.ejected_until == 11
    h.on_probe(True, 5, cfg)  # before expiry the probe does not end the ejection
    assert not h.routable(5)
    assert h.on_probation(11)
    h.on_probe(True, 11, cfg)
    assert h.routable(11)
    for _ in range(3):
        h.on_failure(12, cfg)
    assert h.ejected_until == 12 + 20  # second ejection in a row: doubled
    h.on_probe(True, 32, cfg)
    for _ in range(3):
        h.on_failure(33, cfg)
    assert h.ejected_until == 33 + 35  # capped at max_ejection_s


def test_failing_probes_take_endpoint_out() -> None:
    cfg = HealthConfig(unhealthy_after_probe_failures=2)
    h = EndpointHealth()
    h.on_probe(False, 0, cfg)
    assert h.routable(0)
    h.on_probe(False, 1, cfg)
    assert not h.routable(1)
    h.on_probe(True, 2, cfg)
    assert h.routable(2)


def test_retry_budget_caps_ratio_and_attempts() -> None:
    b = RetryBudget(ratio=0.2, min_retries=0, window_s=10, max_attempts=3)
    for i in range(100):
        b.record_request(i * 0.05)
    allowed = sum(b.try_retry(1, 5.0) for _ in range(50))
    assert allowed == 20
    assert not RetryBudget(ratio=0.2, min_retries=5, window_s=10, max_attempts=3).try_retry(
        3, 0.0
    )  # 3 attempts made: no 4th
    floor = RetryBudget(ratio=0.2, min_retries=5, window_s=10, max_attempts=3)
    assert sum(floor.try_retry(1, 0.0) for _ in range(10)) == 5
    for i in range(100):
        b.record_request(20 + i * 0.01)  # old window slides out
    assert b.totals(21.0) == (100, 0)


def test_throttled_endpoint_counts_as_saturated_until_retry_after() -> None:
    eps = [ep("a", throttled_until=10.0), ep("s", "spillover")]
    assert route(REQ, eps, RoutingConfig(), random.Random(0), now=5.0).endpoint == "s"
    assert route(REQ, eps, RoutingConfig(), random.Random(0), now=10.5).endpoint == "a"


def test_other_replicas_in_flight_count_for_saturation_and_balance() -> None:
    """With shared fleet state `peer_in_flight` is load like this process's own."""
    p = RoutingConfig()
    eps = [ep("a", cap=4, inflight=1, peer_in_flight=3), ep("s", "spillover", cap=4)]
    assert route(REQ, eps, p, random.Random(0)).endpoint == "s"  # a is full fleet-wide
    rng = random.Random(0)
    busy, idle = ep("a", inflight=0, peer_in_flight=8), ep("b", inflight=1)
    assert {route(REQ, [busy, idle], p, rng).endpoint for _ in range(20)} == {"b"}


def test_adopted_ejection_expires_like_an_own_one_and_keeps_the_later() -> None:
    cfg = HealthConfig(consecutive_failures=2, base_ejection_s=10, max_ejection_s=100)
    h = EndpointHealth()
    assert not h.adopt_ejection(5.0, 1, now=5.0)  # already over: ignored
    assert h.adopt_ejection(20.0, 2, now=5.0)
    assert not h.routable(5.0) and h.ejected_until == 20.0
    assert not h.adopt_ejection(15.0, 1, now=6.0)  # an earlier expiry does not shorten it
    h.on_probe(True, 10.0, cfg)
    assert not h.routable(10.0)  # a good probe before expiry does not end it
    h.on_probe(True, 20.0, cfg)  # probation → probe OK → back
    assert h.routable(20.0)
    h.on_failure(21.0, cfg)
    assert h.on_failure(21.0, cfg)
    assert h.ejected_until == 21.0 + 40  # third in a row: the back-off continued from 2


def test_retry_budget_counts_the_peers_requests_and_retries() -> None:
    b = RetryBudget(ratio=0.2, min_retries=0, window_s=10, max_attempts=3)
    for i in range(10):
        b.record_request(i * 0.1)
    b.peers = (90, 15)  # the other replicas: 90 requests, 15 retries in their windows
    assert b.own_totals(1.0) == (10, 0) and b.totals(1.0) == (100, 15)
    assert sum(b.try_retry(1, 1.0) for _ in range(10)) == 5  # 20 % of 100, 15 taken
