"""Priority classes and the wait queue: strict bands, VTC fairness, FIFO, bounds, deadlines."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyfleet.policy.priority import (
    Priority,
    PushResult,
    WaitQueue,
    parse_priority,
    resolve_priority,
    token_cost,
)

C, S, D = Priority.CRITICAL, Priority.STANDARD, Priority.SHEDDABLE


def push(
    q: WaitQueue[str],
    name: str,
    tenant: str = "t",
    p: Priority = S,
    now: float = 0.0,
    deadline: float = 100.0,
    cost: float = 1.0,
) -> PushResult[str]:
    return q.push(tenant=tenant, priority=p, now=now, deadline=deadline, cost=cost, payload=name)


def test_parse_and_resolve_priority() -> None:
    assert parse_priority(" Critical ") is C
    with pytest.raises(ValueError, match="critical, standard, sheddable"):
        parse_priority("urgent")
    assert resolve_priority("standard", "critical", allow=False) is S  # header ignored
    assert resolve_priority("standard", "critical", allow=True) is C
    assert resolve_priority(D, None, allow=True) is D
    with pytest.raises(ValueError):
        resolve_priority("standard", "bogus", allow=True)
    assert token_cost(100, 50) == 200


def test_bands_are_strict_and_fifo_inside_a_tenant() -> None:
    q: WaitQueue[str] = WaitQueue(10)
    push(q, "d1", p=D, now=0)
    push(q, "s1", p=S, now=1)
    push(q, "s2", p=S, now=2)
    push(q, "c1", p=C, now=3)
    order = [e.payload for e in iter(q.pop, None)]
    assert order == ["c1", "s1", "s2", "d1"]


def test_pop_respects_max_priority() -> None:
    q: WaitQueue[str] = WaitQueue(10)
    push(q, "d1", p=D)
    assert q.pop(max_priority=S) is None
    push(q, "s1", p=S)
    e = q.pop(max_priority=S)
    assert e is not None and e.payload == "s1"


def test_heavy_tenant_cannot_starve_a_light_one() -> None:
    q: WaitQueue[str] = WaitQueue(1000)
    for i in range(50):
        push(q, f"heavy{i}", tenant="heavy", now=i, cost=1000)
    for i in range(50):
        push(q, f"light{i}", tenant="light", now=100 + i, cost=100)
    first = [q.pop() for _ in range(22)]
    light = sum(1 for e in first if e is not None and e.tenant == "light")
    assert light >= 19  # ~10 light requests per heavy one, although they arrived later


def test_idle_tenant_does_not_bank_credit() -> None:
    q: WaitQueue[str] = WaitQueue(1000)
    for i in range(20):
        push(q, f"a{i}", tenant="a", cost=10)
        push(q, f"b{i}", tenant="b", cost=10)
    for _ in range(20):
        q.pop()
    push(q, "late", tenant="late", cost=10)  # lifted to min(counter of a, b)
    assert q.counter(S, "late") == min(q.counter(S, "a"), q.counter(S, "b"))
    served = [q.pop() for _ in range(6)]
    assert sum(1 for e in served if e is not None and e.tenant == "late") == 1


def test_full_queue_sheds_sheddable_then_standard_never_critical() -> None:
    q: WaitQueue[str] = WaitQueue(3)
    push(q, "d1", p=D, now=0)
    push(q, "d2", p=D, now=1)
    push(q, "s1", p=S, now=2)
    r = push(q, "c1", p=C, now=3)
    assert r.accepted and r.displaced is not None and r.displaced.payload == "d2"  # newest
    r = push(q, "c2", p=C, now=4)
    assert r.accepted and r.displaced is not None and r.displaced.payload == "d1"
    r = push(q, "c3", p=C, now=5)
    assert r.accepted and r.displaced is not None and r.displaced.payload == "s1"
    r = push(q, "c4", p=C, now=6)
    assert not r.accepted and len(q) == 3
    assert not push(q, "d3", p=D, now=7).accepted


def test_expire_returns_only_entries_past_their_deadline() -> None:
    q: WaitQueue[str] = WaitQueue(10)
    push(q, "a", deadline=5)
    b = push(q, "b", deadline=3).entry
    push(q, "c", deadline=9)
    assert b is not None and q.remove(b)
    assert q.next_deadline() == 5
    assert [e.payload for e in q.expire(6.0)] == ["a"]
    assert len(q) == 1 and q.next_deadline() == 9


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("push"),
            st.sampled_from("abc"),
            st.sampled_from(list(Priority)),
            st.floats(0.1, 50),
            st.floats(1, 500),
        ),
        st.tuples(st.just("pop"), st.sampled_from(list(Priority))),
        st.tuples(st.just("expire"), st.floats(0, 5)),
    ),
    max_size=120,
)


@settings(max_examples=200, deadline=None)
@given(capacity=st.integers(0, 12), ops=ops)
def test_every_entry_leaves_exactly_once_and_order_holds(capacity: int, ops: list) -> None:
    q: WaitQueue[int] = WaitQueue(capacity)
    now, n, live, out = 0.0, 0, set(), []
    for op in ops:
        now += 1.0
        if op[0] == "push":
            _, tenant, prio, ttl, cost = op
            r = q.push(
                tenant=tenant, priority=prio, now=now, deadline=now + ttl, cost=cost, payload=n
            )
            if r.accepted:
                live.add(n)
            if r.displaced is not None:
                assert r.displaced.priority > prio
                live.remove(r.displaced.payload)
                out.append(r.displaced.payload)
            n += 1
        elif op[0] == "pop":
            e = q.pop(op[1])
            if e is not None:
                assert e.priority <= op[1]
                assert all(q.count(p) == 0 for p in Priority if p < e.priority)
                live.remove(e.payload)
                out.append(e.payload)
        else:
            for e in q.expire(now + op[1]):
                assert e.deadline <= now + op[1]
                live.remove(e.payload)
                out.append(e.payload)
        assert len(q) == len(live) <= capacity
    assert len(out) == len(set(out))


@settings(max_examples=100, deadline=None)
@given(
    costs=st.lists(st.lists(st.floats(1, 100), min_size=30, max_size=30), min_size=2, max_size=4)
)
def test_backlogged_tenants_get_service_within_the_vtc_bound(costs: list[list[float]]) -> None:
    q: WaitQueue[int] = WaitQueue(1000)
    for t, cs in enumerate(costs):
        for i, c in enumerate(cs):
            q.push(tenant=str(t), priority=S, now=i, deadline=1e9, cost=c, payload=i)
    served = dict.fromkeys((str(t) for t in range(len(costs))), 0.0)
    while True:
        e = q.pop()
        assert e is not None
        served[e.tenant] += e.cost
        if any(served[t] >= sum(costs[int(t)]) for t in served):
            break  # some tenant drained: no longer all backlogged
        assert max(served.values()) - min(served.values()) <= 2 * 100
