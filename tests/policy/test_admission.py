"""Admission: tenant limits → 429, fleet room → admit, else queue or 503, never a timeout."""

from __future__ import annotations

import heapq
import random
from collections import deque

import pytest

from skyfleet.config import OverloadConfig
from skyfleet.policy.admission import (
    AdmissionRequest,
    FleetLoad,
    decide,
    fleet_load,
    next_to_dispatch,
    shed_response,
)
from skyfleet.policy.priority import Priority, WaitQueue
from skyfleet.policy.ratelimit import TenantLimiter, TenantLimits
from skyfleet.policy.settings import admission_settings
from skyfleet.policy.types import EndpointState

C, S, D = Priority.CRITICAL, Priority.STANDARD, Priority.SHEDDABLE
CFG = admission_settings(OverloadConfig(queue_size=4))


def req(p: Priority = S, tenant: str = "t", inp: int = 100, out: int = 100) -> AdmissionRequest:
    return AdmissionRequest(tenant=tenant, priority=p, input_tokens=inp, max_tokens=out)


def test_rate_limited_request_gets_429_with_headers() -> None:
    lim = TenantLimiter(TenantLimits(rpm=60))
    q: WaitQueue[int] = WaitQueue(4)
    room = FleetLoad(0, 10)
    for _ in range(3):
        assert decide(req(), lim, q, room, CFG, 0.0, 0).action == "admit"
    a = decide(req(), lim, q, room, CFG, 0.0, 0)
    assert (a.action, a.status, a.reason) == ("reject", 429, "rate_limit_requests")
    assert a.headers["retry-after"] == "1" and a.headers["retry-after-ms"] == "1000"
    assert a.headers["x-ratelimit-remaining-requests"] == "0"
    assert a.retry_after_s == pytest.approx(1.0)


def test_full_fleet_queues_with_deadline_then_sheds_with_retry_after() -> None:
    lim = TenantLimiter(TenantLimits(rpm=6000, tpm=600_000))
    q: WaitQueue[int] = WaitQueue(2)
    full = FleetLoad(10, 10)
    a = decide(req(S), lim, q, full, CFG, 1.0, 1)
    assert a.action == "queue" and a.deadline == 1.0 + CFG.standard_deadline_s
    assert a.entry is not None and a.entry.payload == 1 and a.charge is not None
    decide(req(S), lim, q, full, CFG, 1.0, 2)
    before = lim.state(1.0)
    r = decide(req(S), lim, q, full, CFG, 1.0, 3)
    assert (r.action, r.status, r.reason) == ("reject", 503, "queue_full")
    assert int(r.headers["retry-after"]) >= 1
    assert lim.state(1.0) == before  # the shed request was refunded
    c = decide(req(C), lim, q, full, CFG, 1.0, 4)  # critical displaces newest standard
    assert c.action == "queue" and c.displaced is not None and c.displaced.payload == 2


def test_expected_wait_beyond_deadline_is_refused_at_once() -> None:
    q: WaitQueue[int] = WaitQueue(100)
    for i in range(10):
        decide(req(D), None, q, FleetLoad(10, 10, drain_rate_per_s=1.0), CFG, 0.0, i)
    r = decide(req(D), None, q, FleetLoad(10, 10, drain_rate_per_s=1.0), CFG, 0.0, 99)
    assert r.reason == "expected_wait_over_deadline" and r.retry_after_s == pytest.approx(3.0)
    ok = decide(req(C), None, q, FleetLoad(10, 10, drain_rate_per_s=1.0), CFG, 0.0, 100)
    assert ok.action == "queue"  # critical jumps the sheddable backlog


def test_dispatch_order_and_sheddable_headroom() -> None:
    s = admission_settings(OverloadConfig(queue_size=10, sheddable_share=0.8))
    q: WaitQueue[str] = WaitQueue(10)
    q.push(tenant="a", priority=D, now=0, deadline=9, cost=1, payload="d")
    q.push(tenant="a", priority=S, now=1, deadline=9, cost=1, payload="s")
    assert next_to_dispatch(q, FleetLoad(10, 10), s) is None
    e = next_to_dispatch(q, FleetLoad(8, 10), s)
    assert e is not None and e.payload == "s"
    assert next_to_dispatch(q, FleetLoad(8, 10), s) is None  # sheddable kept out above 80 %
    e = next_to_dispatch(q, FleetLoad(7, 10), s)
    assert e is not None and e.payload == "d"
    assert decide(req(D), None, q, FleetLoad(8, 10), s, 0.0, "x").action == "queue"
    assert decide(req(S), None, q, FleetLoad(8, 10), s, 0.0, "y").action == "admit"


def test_fleet_load_uses_adaptive_limits_of_healthy_endpoints() -> None:
    eps = [
        EndpointState("a", "p1", "primary", capacity=32, in_flight=5),
        EndpointState("b", "p2", "primary", capacity=32, in_flight=3),
        EndpointState("c", "p3", "spillover", capacity=16, in_flight=1, healthy=False),
    ]
    f = fleet_load(eps, {"a": 8}, drain_rate_per_s=2.5)
    assert f == FleetLoad(in_flight=9, limit=40, drain_rate_per_s=2.5)
    assert shed_response(S, "deadline", 0.2, CFG).headers["retry-after"] == "1"


def test_a_one_slot_fleet_still_serves_every_class() -> None:
    q: WaitQueue[int] = WaitQueue(4)
    for p in Priority:
        assert decide(req(p), None, q, FleetLoad(0, 1), CFG, 0.0, 1).action == "admit"
    assert decide(req(D), None, q, FleetLoad(1, 1), CFG, 0.0, 2).action == "queue"
    assert next_to_dispatch(q, FleetLoad(0, 0), CFG) is None


def test_no_capacity_sheds_immediately() -> None:
    q: WaitQueue[int] = WaitQueue(4)
    r = decide(req(C), None, q, FleetLoad(0, 0), CFG, 0.0, 1)
    assert (r.status, r.reason) == (503, "no_capacity") and len(q) == 0


def test_three_times_overload_keeps_critical_fast() -> None:
    """Discrete-event run: 20 slots, 1 s jobs, 3x offered load, 20/50/30 mix."""
    rng = random.Random(7)
    slots, service = 20, 1.0
    rate = 3 * slots / service
    settings = admission_settings(OverloadConfig(queue_size=64))
    q: WaitQueue[tuple[int, float]] = WaitQueue(settings.queue_size)
    events: list[tuple[float, int, str, int]] = []
    t, n, arrival = 0.0, 0, {}
    while t < 200.0:
        t += rng.expovariate(rate)
        heapq.heappush(events, (t, n, "arrive", n))
        arrival[n] = t
        n += 1
    prio = {i: rng.choices([C, S, D], weights=[20, 50, 30])[0] for i in range(n)}
    in_flight, done = 0, deque[float]()
    started: dict[int, float] = {}
    rejected: dict[int, tuple[int, float | None]] = {}

    def load(now: float) -> FleetLoad:
        while done and done[0] < now - 5.0:
            done.popleft()
        return FleetLoad(in_flight, slots, len(done) / 5.0)

    def start(i: int, now: float) -> None:
        nonlocal in_flight
        in_flight += 1
        started[i] = now
        heapq.heappush(events, (now + rng.expovariate(1 / service), n + i, "finish", i))

    while events:
        now, _, kind, i = heapq.heappop(events)
        for e in q.expire(now):
            rejected[e.payload[0]] = (503, settings.retry_after(1.0))
        if kind == "arrive":
            a = decide(req(prio[i]), None, q, load(now), settings, now, (i, now))
            if a.action == "admit":
                start(i, now)
            elif a.action == "reject":
                rejected[i] = (a.status, a.retry_after_s)
            if a.displaced is not None:
                rejected[a.displaced.payload[0]] = (503, 1.0)
        else:
            in_flight -= 1
            done.append(now)
            while (e := next_to_dispatch(q, load(now), settings)) is not None:
                start(e.payload[0], now)
    assert not q
    assert len(started) + len(rejected) == n  # every request answered exactly once
    crit = [i for i in range(n) if prio[i] is C]
    ok = [i for i in crit if i in started]
    assert len(ok) / len(crit) >= 0.99
    waits = sorted(started[i] - arrival[i] for i in ok)
    assert waits[int(0.99 * len(waits))] <= 0.75 * service  # p99 queueing delay
    assert all(st == 503 and (ra or 0) >= 1.0 for st, ra in rejected.values())
    served = {p: sum(1 for i in started if prio[i] is p) for p in Priority}
    offered = {p: sum(1 for i in range(n) if prio[i] is p) for p in Priority}
    assert served[S] / offered[S] > served[D] / offered[D]  # sheddable is shed first
    assert sum(served.values()) >= 0.95 * slots / service * 200  # capacity stays busy
