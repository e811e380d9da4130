"""Fleet state shared by gateway replicas through one real redis-server (`server.redis_url`).

Endpoint health (an ejection made by one replica's traffic is honoured by all within one
probe interval, and recovery follows), outstanding requests per endpoint and the retry
budget. Replicas are separate `skyfleet serve` processes on 127.0.0.1 in front of emulators,
except the load/budget test, which runs two gateways in the test's event loop to read their
state directly. Redis is killed under load: no request fails, every replica reports the
fall-back, and rejoins when it is back.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from skyfleet.config import FleetConfig, parse_config
from skyfleet.emulator.metrics import metric, parse_metrics
from skyfleet.emulator.process import EmulatorProcess
from skyfleet.errors import SkyfleetError
from skyfleet.gateway.app import build_gateway
from skyfleet.gateway.fleet import Fleet
from skyfleet.gateway.process import GatewayProcess
from skyfleet.gateway.redis_link import RedisLink, check_redis
from skyfleet.gateway.shared_fleet import SharedFleet
from skyfleet.policy.settings import retry_budget

from . import harness
from .conftest import (
    ADMIN_KEY,
    HTTP,
    NEEDS_REDIS,
    RedisServer,
    Result,
    fleet_config,
    one_request,
)

pytestmark = NEEDS_REDIS

PROBE_S = 1.0  # health.probe_interval_s of the replicas: the bound under test
EJECTION_S = 5.0


def replicas_config(tmp: Path, a0: EmulatorProcess, g0: EmulatorProcess, redis_url: str) -> Path:
    path = fleet_config(
        tmp / "fleet.yaml",
        [
            {"name": "a0", "provider": "azure", "url": a0.base_url},
            {"name": "g0", "provider": "gcp", "url": g0.base_url},
        ],
        server={"redis_url": redis_url, "watch_config": False},
        routing={"scrape_interval_s": 0},
        health={
            "consecutive_failures": 3,
            "base_ejection_s": EJECTION_S,
            "max_ejection_s": 20.0,
            "probe_interval_s": PROBE_S,
        },
    )
    doc = yaml.safe_load(path.read_text())
    # every request also runs the shared tenant-limit scripts (acquire + correction)
    doc["tenants"][0]["limits"] = {"rpm": 1_000_000, "max_concurrency": 1000}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def admin(gw: GatewayProcess) -> dict[str, Any]:
    r = HTTP.get(gw.url + "/admin/endpoints", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    return {e["name"]: e for e in r.json()["endpoints"]}


def metrics(gw: GatewayProcess) -> dict[str, float]:
    return parse_metrics(HTTP.get(gw.url + "/metrics").text)


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> float:
    """Poll `check` until true; the seconds it took."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - start


def start_replicas(
    n: int, cfg: Path, gateway: Callable[..., GatewayProcess]
) -> list[GatewayProcess]:
    gws = [gateway(cfg) for _ in range(n)]
    for gw in gws:
        wait_for("replicas see each other", lambda g=gw: _peers(g) == n - 1, 10)
    return gws


def _peers(gw: GatewayProcess) -> float:
    return metrics(gw).get("skyfleet_shared_state_peers", -1)


def eject_through(gw: GatewayProcess, a0: EmulatorProcess) -> float:
    """Make `gw` eject a0 with its own traffic (a0 answers 500), then heal a0 at once: from
    then on only the shared ejection keeps anyone off it. The monotonic time of the ejection."""
    a0.inject("error", status=500)
    try:
        with httpx.Client(timeout=30) as c:
            for _ in range(60):
                r = one_request(c, gw, stream=False)
                assert r.ok, r  # the failures are retried on g0
                if not admin(gw)["a0"]["healthy"]:
                    return time.monotonic()
        raise AssertionError("a0 was not ejected")
    finally:
        a0.clear_faults()


@dataclass
class Sent:
    replica: int
    started: float  # monotonic
    took: float  # seconds
    result: Result


def load(gws: list[GatewayProcess], duration_s: float, per_replica: int = 2) -> list[Sent]:
    """Closed-loop load on every replica (alternating JSON and streams) for `duration_s`."""
    out: list[Sent] = []
    lock = threading.Lock()
    stop = time.monotonic() + duration_s

    def client(i: int, k: int) -> None:
        n = 0
        with httpx.Client(timeout=30) as c:
            while time.monotonic() < stop:
                started = time.monotonic()
                r = one_request(c, gws[i], stream=(n + k) % 2 == 1)
                with lock:
                    out.append(Sent(i, started, time.monotonic() - started, r))
                n += 1

    threads = [
        threading.Thread(target=client, args=(i, k))
        for i in range(len(gws))
        for k in range(per_replica)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 3])
def test_an_ejection_by_one_replica_is_honoured_by_all_within_a_probe_interval(
    n: int,
    tmp_path: Path,
    redis_server: RedisServer,
    emulators: Callable[..., EmulatorProcess],
    gateway: Callable[..., GatewayProcess],
) -> None:
    redis_server.client.flushdb()
    a0, g0 = emulators(time_scale=50), emulators(time_scale=50, seed=1)
    gws = start_replicas(n, replicas_config(tmp_path, a0, g0, redis_server.url), gateway)
    ejected = eject_through(gws[0], a0)
    others = gws[1:]
    # a0 is healthy again, yet the other replicas, which never saw it fail, keep off it
    sent = load(others, duration_s=EJECTION_S - 1.5)
    assert sent and all(s.result.ok for s in sent)
    late = [s for s in sent if s.started >= ejected + PROBE_S]
    assert len(late) > 20
    assert {s.result.endpoint for s in late} == {"g0"}, "a replica still sent to a0"
    for gw in others:
        m = metrics(gw)
        assert m['skyfleet_shared_state_ejections_total{source="adopted"}'] == 1
        assert 'skyfleet_upstream_attempts_total{endpoint="a0",outcome="upstream_5xx"}' not in m
        assert "ejected for" in gw.log() and "by another gateway replica" in gw.log()
    # recovery: the ejection ends at the same moment everywhere, each replica's probe brings
    # a0 back (probation → probe OK), and every replica sends to it again
    for gw in gws:
        wait_for("a0 back", lambda g=gw: admin(g)["a0"]["healthy"], EJECTION_S + 2 * PROBE_S)
    with httpx.Client(timeout=30) as c:
        for gw in gws:
            assert "a0" in {one_request(c, gw, stream=False).endpoint for _ in range(30)}


@pytest.mark.slow
def test_redis_killed_under_load_no_request_fails_and_replicas_rejoin(
    tmp_path: Path,
    emulators: Callable[..., EmulatorProcess],
    gateway: Callable[..., GatewayProcess],
) -> None:
    own = RedisServer()  # this test kills it
    try:
        a0, g0 = emulators(time_scale=50), emulators(time_scale=50, seed=1)
        gws = start_replicas(3, replicas_config(tmp_path, a0, g0, own.url), gateway)
        timer = threading.Timer(1.5, own.kill)
        timer.start()
        sent = load(gws, duration_s=4.0)
        timer.join()
        failed = [s.result for s in sent if not s.result.ok]
        assert not failed, failed[:3]
        after_kill = [s for s in sent if s.started > sent[0].started + 2.0]
        assert {s.replica for s in after_kill} == {0, 1, 2}  # every replica served without it
        for gw in gws:
            m = metrics(gw)
            assert m["skyfleet_shared_state_up"] == 0
            assert m["skyfleet_shared_state_fallbacks_total"] == 1
            assert m["skyfleet_shared_state_peers"] == 0  # own numbers only
            assert gw.log().count("falling back to this process's own tenant limits") == 1
        own.start()  # same port, empty: the replicas rejoin and share again
        for gw in gws:
            wait_for("rejoined", lambda g=gw: _peers(g) == 2, 10)
            assert metrics(gw)["skyfleet_shared_state_up"] == 1
            assert "answers again; sharing" in gw.log()
        assert own.client.exists("skyfleet:fleet:{fleet}:load")
        ejected = eject_through(gws[1], a0)
        for gw in (gws[0], gws[2]):
            lag = wait_for("adopted after rejoin", lambda g=gw: not admin(g)["a0"]["healthy"], 5)
            assert time.monotonic() - ejected - lag < PROBE_S + 0.5
        with httpx.Client(timeout=30) as c:
            assert one_request(c, gws[0], stream=False).ok
        assert own.client.exists("skyfleet:limits:{acme}:req")  # tenant limits shared again
        for gw in gws:  # rejoined for good: no second fall-back
            assert metrics(gw)["skyfleet_shared_state_fallbacks_total"] == 1
    finally:
        own.stop()


async def test_in_flight_and_retry_budget_reach_the_other_replica(tmp_path: Path) -> None:
    """Two gateways in one loop: requests held open on A count as B's peer in-flight, so B's
    admission sees the fleet full and queues until A's requests end; A's requests count in B's
    retry budget; B's numbers drop to its own at once when Redis stops answering."""
    slow = harness.Reply(body=harness.completion(), delay_s=1.5)
    ups = [harness.FakeUpstream(slow), harness.FakeUpstream(slow)]
    for u in ups:
        await u.server.start_server()
    own = RedisServer()
    server = {"redis_url": own.url, "shared_state_interval_s": 0.1, "watch_config": False}
    overload = {"standard_share": 1.0, "adaptive_concurrency": False}
    cfg = harness.fleet_config(ups, tmp_path, server=server, overload=overload)
    for e in cfg["endpoints"]:
        e["capacity"] = 3  # the fleet holds 6 requests
    gws = [build_gateway(parse_config(cfg)) for _ in range(2)]
    clients = [TestClient(TestServer(g.build_app(), host="127.0.0.1")) for g in gws]
    a, b = gws
    held: list[asyncio.Task[Any]] = []

    def post(i: int) -> asyncio.Task[Any]:
        body = harness.chat()
        return asyncio.create_task(
            clients[i].post("/v1/chat/completions", json=body, headers=harness.AUTH)
        )

    try:
        for c in clients:
            await c.start_server()
        held += [post(0) for _ in range(6)]
        await asyncio.sleep(0.6)  # A's 6 open requests, published and read within 2 periods
        assert sum(e.state.in_flight for e in a.fleet.endpoints.values()) == 6
        for name, e in b.fleet.endpoints.items():
            assert e.state.peer_in_flight == a.fleet.endpoints[name].state.in_flight
        text = await (await clients[1].get("/metrics")).text()
        assert metric(parse_metrics(text), "skyfleet_endpoint_peer_in_flight") == 6
        assert b.proxy.retry_budget.peers == (6, 0)
        assert a.proxy.retry_budget.peers == (0, 0)
        late = await post(1)  # the fleet is full: B queues it until A's requests end
        assert late.status == 200
        for r in await asyncio.gather(*held):
            assert r.status == 200
        m = parse_metrics(await (await clients[1].get("/metrics")).text())
        assert m['skyfleet_admitted_total{path="queued",priority="standard"}'] == 1
        await asyncio.sleep(0.3)
        assert sum(e.state.peer_in_flight for e in b.fleet.endpoints.values()) == 0
        own.kill()
        await asyncio.sleep(0.5)
        assert b.link is not None and not b.link.available
        assert b.proxy.retry_budget.peers == (0, 0)  # this process's own window only
    finally:
        for t in held:
            t.cancel()
        await asyncio.gather(*held, return_exceptions=True)
        for c in clients:
            await c.close()
        for u in ups:
            await u.server.close()
        own.stop()


def test_redis_refusing_at_start_is_a_clear_error() -> None:
    """Which URL (password masked), what failed, what to do — for each way Redis can refuse."""
    locked = RedisServer(password="s3cret")
    try:
        base = f"127.0.0.1:{locked.port}"
        cases = [
            (f"redis://{base}/0", f"Redis at redis://{base}/0 refused the credentials"),
            (f"redis://:wrong@{base}/0", f"Redis at redis://:***@{base}/0 refused the credentials"),
            (f"redis://:s3cret@{base}/99", "answered with an error (DB index is out of range)"),
        ]
        for url, what in cases:
            with pytest.raises(SkyfleetError) as e:
                check_redis(url, "fleet.yaml")
            msg = str(e.value)
            assert msg.startswith("fleet.yaml: server.redis_url: ") and what in msg, msg
            assert "wrong" not in msg and "server.redis_required: false" in msg
        check_redis(f"redis://:s3cret@{base}/0")  # the right password: no error
    finally:
        locked.stop()


@pytest.mark.slow
def test_optional_redis_down_at_start_serves_locally_then_joins(
    tmp_path: Path,
    emulators: Callable[..., EmulatorProcess],
    gateway: Callable[..., GatewayProcess],
) -> None:
    """`redis_required: false`: the gateway starts without Redis (logged, metric), serves with
    its own state, and shares once Redis answers."""
    later = RedisServer()
    later.kill()  # its port, nothing listening yet
    try:
        a0, g0 = emulators(time_scale=50), emulators(time_scale=50, seed=1)
        cfg = replicas_config(tmp_path, a0, g0, later.url)
        doc = yaml.safe_load(cfg.read_text())
        doc["server"]["redis_required"] = False
        cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
        gw = gateway(cfg)
        with httpx.Client(timeout=30) as c:
            assert all(one_request(c, gw, stream=i % 2 == 1).ok for i in range(6))
        m = metrics(gw)
        assert m["skyfleet_shared_state_up"] == 0
        assert m["skyfleet_shared_state_fallbacks_total"] == 1
        assert f"Redis at {later.url} failed" in gw.log()
        later.start()
        wait_for("joined", lambda: metrics(gw)["skyfleet_shared_state_up"] == 1, 10)
        with httpx.Client(timeout=30) as c:
            assert one_request(c, gw, stream=False).ok
        assert later.client.exists("skyfleet:limits:{acme}:req")
        wait_for("published", lambda: later.client.hlen("skyfleet:fleet:{fleet}:load") == 1, 5)
    finally:
        later.stop()


@pytest.mark.slow
def test_a_hung_redis_delays_requests_by_one_timeout_at_most(
    tmp_path: Path,
    emulators: Callable[..., EmulatorProcess],
    gateway: Callable[..., GatewayProcess],
) -> None:
    """redis-server frozen (SIGSTOP: connections open, no answers): the requests in flight
    then wait for one call timeout, later ones not at all; all succeed; SIGCONT → rejoined."""
    own = RedisServer()
    try:
        a0, g0 = emulators(time_scale=50), emulators(time_scale=50, seed=1)
        gw = gateway(replicas_config(tmp_path, a0, g0, own.url))
        assert own.proc is not None
        timer = threading.Timer(1.0, lambda: own.proc.send_signal(signal.SIGSTOP))  # type: ignore[union-attr]
        timer.start()
        sent = load([gw], duration_s=4.0, per_replica=4)
        timer.join()
        assert sent and all(s.result.ok for s in sent), [s.result for s in sent if not s.result.ok]
        assert max(s.took for s in sent) < 1.0 + 2.0  # OP_TIMEOUT_S, and a margin for a busy box
        after = [s for s in sent if s.started > sent[0].started + 2.5]
        assert len(after) > 20 and max(s.took for s in after) < 1.0  # no wait at all
        assert metrics(gw)["skyfleet_shared_state_up"] == 0
        own.proc.send_signal(signal.SIGCONT)
        wait_for("rejoined", lambda: metrics(gw)["skyfleet_shared_state_up"] == 1, 10)
    finally:
        if own.proc is not None and own.proc.poll() is None:
            own.proc.send_signal(signal.SIGCONT)
        own.stop()


async def _stores(
    cfg: FleetConfig, url: str, registries: list[CollectorRegistry]
) -> list[tuple[Fleet, SharedFleet]]:
    """One fleet and its shared store per registry, each on its own link to `url`."""
    stores = []
    for registry in registries:
        fleet = Fleet(cfg)
        link = RedisLink(url, CollectorRegistry())
        await link.start()
        budget = retry_budget(cfg.routing)
        stores.append((fleet, SharedFleet(fleet, link, lambda b=budget: b, registry)))
    return stores


async def test_the_totals_drop_a_stopped_replica_at_once_and_a_crashed_one_after_its_ttl() -> None:
    """Three stores on one Redis, exchanging by hand: each sees the sum of the others'
    in-flight counts; one that stops leaves the sum at the next exchange, one that vanishes
    (no goodbye) after its TTL; an ejection made by one is adopted by the others with the
    same expiry."""
    own = RedisServer()
    doc = {
        "server": {"redis_url": own.url},
        "health": {"probe_interval_s": 5.0, "base_ejection_s": 30.0},
        "providers": [{"name": "p"}],
        "endpoints": [
            {"name": n, "provider": "p", "url": "http://127.0.0.1:9/v1", "model": "m"}
            for n in ("e0", "e1")
        ],
        "models": [{"name": "chat", "endpoints": ["e0", "e1"]}],
    }
    cfg = parse_config(doc)
    registry = CollectorRegistry()  # c's
    stores = await _stores(cfg, own.url, [CollectorRegistry(), CollectorRegistry(), registry])
    (fa, a), (fb, b), (fc, c) = stores
    try:
        fa.endpoints["e0"].state.in_flight = 5
        fb.endpoints["e0"].state.in_flight = 2
        fb.endpoints["e1"].state.in_flight = 1
        for s in (a, b, c, a, b, c):
            await s.exchange()
        assert [fc.endpoints[n].state.peer_in_flight for n in ("e0", "e1")] == [7, 1]
        assert [fa.endpoints[n].state.peer_in_flight for n in ("e0", "e1")] == [2, 1]
        fb.endpoints["e1"].state.in_flight = 0  # a change moves the totals
        await b.exchange()
        await c.exchange()
        assert [fc.endpoints[n].state.peer_in_flight for n in ("e0", "e1")] == [7, 0]
        await b.close()  # a goodbye: out of the sum at the next exchange
        await c.exchange()
        assert fc.endpoints["e0"].state.peer_in_flight == 5
        now = time.monotonic()
        assert fa.endpoints["e1"].health.on_failure(now, cfg.health) is False
        for _ in range(4):
            fa.endpoints["e1"].health.on_failure(now, cfg.health)
        until = fa.endpoints["e1"].health.ejected_until
        assert until is not None
        await a.exchange()
        await c.exchange()
        adopted = fc.endpoints["e1"].health.ejected_until
        assert adopted is not None and abs(adopted - until) < 0.05  # one-way delays apart
        assert not fc.endpoints["e1"].state.healthy
        # a: no goodbye; its numbers stay until its TTL (2 s) passes
        await asyncio.sleep(1.0)
        await c.exchange()
        assert fc.endpoints["e0"].state.peer_in_flight == 5
        await asyncio.sleep(1.3)
        await c.exchange()
        assert fc.endpoints["e0"].state.peer_in_flight == 0
        assert registry.get_sample_value("skyfleet_shared_state_peers") == 0
    finally:
        for _, s in stores:
            await s.link.close()
        own.stop()


async def test_a_replica_back_from_an_ejection_does_not_adopt_the_same_one_again() -> None:
    """Redis holds an ejection a round trip longer than the replicas that made or adopted it
    (its clock read it later). A replica whose probe brings the endpoint back before Redis's
    copy expires must not read it back as a new ejection (seen on a busy machine: a replica
    showed the endpoint healthy, then sent nothing to it); a later, new ejection is adopted."""
    own = RedisServer()
    doc = {
        "server": {"redis_url": own.url},
        "health": {"probe_interval_s": 5.0, "base_ejection_s": 30.0},
        "providers": [{"name": "p"}],
        "endpoints": [
            {"name": "e0", "provider": "p", "url": "http://127.0.0.1:9/v1", "model": "m"}
        ],
        "models": [{"name": "chat", "endpoints": ["e0"]}],
    }
    cfg = parse_config(doc)
    stores = await _stores(cfg, own.url, [CollectorRegistry(), CollectorRegistry()])
    (fa, a), (fb, b) = stores
    try:
        health_a, health_b = fa.endpoints["e0"].health, fb.endpoints["e0"].health
        now = time.monotonic()
        for _ in range(cfg.health.consecutive_failures):
            health_a.on_failure(now, cfg.health)
        first = health_a.ejected_until
        assert first is not None
        await a.exchange()  # published
        await b.exchange()  # adopted
        assert health_b.ejected_until is not None
        for fleet, store in stores:  # each probe brings e0 back when its own copy expires
            health = fleet.endpoints["e0"].health
            assert health.ejected_until is not None
            health.on_probe(True, health.ejected_until, cfg.health)
            fleet.endpoints["e0"].state.healthy = True
            await store.exchange()  # Redis still holds the ejection: read back, not adopted
            assert health.ejected_until is None and fleet.endpoints["e0"].state.healthy
        for _ in range(cfg.health.consecutive_failures):  # a new ejection, made by a
            health_a.on_failure(first + 1.0, cfg.health)
        second = health_a.ejected_until
        assert second is not None and second > first + 10
        await a.exchange()
        await b.exchange()
        assert health_b.ejected_until == pytest.approx(second, abs=0.05)
        assert not fb.endpoints["e0"].state.healthy
    finally:
        for _, s in stores:
            await s.link.close()
        own.stop()


async def test_the_retry_budget_is_one_for_the_fleet(tmp_path: Path) -> None:
    """A budget floor of 2 retries per window, ratio 0: two retries through A use it up for
    B too, so B's failure is answered instead of retried (without Redis B would retry)."""
    broken = harness.FakeUpstream(harness.Reply(status=500, body={"error": {"message": "x"}}))
    good = harness.FakeUpstream()
    for u in (broken, good):
        await u.server.start_server()
    own = RedisServer()
    server = {"redis_url": own.url, "shared_state_interval_s": 0.1, "watch_config": False}
    routing = {"retry_budget_ratio": 0.0, "retry_budget_min": 2, "retry_budget_window_s": 30}
    cfg = harness.fleet_config(
        [broken, good],
        tmp_path,
        server=server,
        routing=routing,
        health={"consecutive_failures": 100},  # e0 stays in: every request fails there first
        overload={"enabled": False},
    )
    gws = [build_gateway(parse_config(cfg)) for _ in range(2)]
    clients = [TestClient(TestServer(g.build_app(), host="127.0.0.1")) for g in gws]
    try:
        for c in clients:
            await c.start_server()

        async def send(i: int) -> int:
            r = await clients[i].post(
                "/v1/chat/completions", json=harness.chat(), headers=harness.AUTH
            )
            await r.read()
            return r.status

        assert [await send(0), await send(0)] == [200, 200]  # retried on e1: the floor, used
        await asyncio.sleep(0.4)  # A's window published and read by B
        assert gws[1].proxy.retry_budget.peers == (2, 2)
        assert await send(1) == 500  # e0's answer: no retry left in the fleet's budget
        text = await (await clients[1].get("/metrics")).text()
        assert parse_metrics(text)["skyfleet_retry_budget_exhausted_total"] == 1
    finally:
        for c in clients:
            await c.close()
        for u in (broken, good):
            await u.server.close()
        own.stop()
