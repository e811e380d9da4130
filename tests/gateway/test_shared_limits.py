"""Tenant limits shared through Redis (`server.redis_url`): real redis-server, emulator and
gateway processes on 127.0.0.1.

With `serve --workers 2` and no Redis each worker enforces the whole limit by itself, so a
tenant gets about twice its rate (checked here as the contrast); with Redis the two workers
together hold it within 5 %.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client import CollectorRegistry

from skyfleet.config import hash_key
from skyfleet.emulator.metrics import parse_metrics
from skyfleet.emulator.process import EmulatorProcess, start_emulator
from skyfleet.gateway.process import GatewayProcess, start_gateway
from skyfleet.gateway.redis_link import RedisLink
from skyfleet.gateway.shared_limits import KEY_PREFIX, SharedLimits
from skyfleet.policy.ratelimit import TenantLimiter, TenantLimits

from .conftest import NEEDS_REDIS, RedisServer, free_port

UPSTREAM = "Llama-3.1-8B"
KEY = "sk-shared-acme"
pytestmark = [
    pytest.mark.slow,  # about 20 s in all: two gateways with two workers each
    NEEDS_REDIS,
]


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProcess]:
    emu = start_emulator("Llama-3.1-8B@H100-SXM-80GB", time_scale=10.0, served_model_name=UPSTREAM)
    yield emu
    emu.stop()


@pytest.fixture
def gateways() -> Iterator[list[GatewayProcess]]:
    started: list[GatewayProcess] = []
    yield started
    for g in started:
        g.stop(10)


def write_config(
    path: Path,
    upstream: str,
    limits: dict[str, Any],
    redis_url: str | None,
    overload: dict[str, Any] | None = None,
) -> Path:
    server: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "watch_config": False}
    if redis_url is not None:
        server["redis_url"] = redis_url
    doc: dict[str, Any] = {
        "server": server,
        "ledger": {"path": str(path.with_suffix(".sqlite")), "flush_interval_s": 0.2},
        "routing": {"scrape_interval_s": 0},
        "providers": [{"name": "p0"}],
        "endpoints": [
            {"name": f"e{i}", "provider": "p0", "url": upstream, "model": UPSTREAM} for i in (0, 1)
        ],
        "models": [{"name": "chat", "endpoints": ["e0", "e1"]}],
        "tenants": [{"name": "acme", "api_keys": [hash_key(KEY)], "limits": limits}],
        "overload": {"adaptive_concurrency": False, **(overload or {})},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def chat(
    s: aiohttp.ClientSession, gw: GatewayProcess, max_tokens: int | None, text: str = "hi"
) -> tuple[int, dict[str, str], dict[str, Any] | None]:
    body: dict[str, Any] = {"model": "chat", "messages": [{"role": "user", "content": text}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    headers = {"Authorization": f"Bearer {KEY}"}
    async with s.post(gw.base_url + "/chat/completions", json=body, headers=headers) as r:
        data = await r.json()
        return r.status, {k.lower(): v for k, v in r.headers.items()}, data


def fresh_connections() -> aiohttp.ClientSession:
    """Every request on a new connection, so SO_REUSEPORT spreads them over the workers."""
    conn = aiohttp.TCPConnector(limit=0, force_close=True)
    return aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30))


def greedy_rate(gws: list[GatewayProcess], window: float) -> tuple[int, int, list[int]]:
    """Six clients (spread over `gws`) that retry as soon as told; accepted in the first and
    the second window."""
    ok: list[float] = []
    other: list[int] = []

    async def client(s: aiohttp.ClientSession, gw: GatewayProcess, stop: float) -> None:
        while time.monotonic() < stop:
            status, headers, _ = await chat(s, gw, 1)
            if status == 200:
                ok.append(time.monotonic())
            else:
                other.append(status)
                await asyncio.sleep(min(int(headers.get("retry-after-ms", "20")) / 1000, 0.05))

    async def run() -> float:
        async with fresh_connections() as s:
            start = time.monotonic()
            stop = start + 2 * window
            await asyncio.gather(*(client(s, gws[i % len(gws)], stop) for i in range(6)))
            return start

    start = asyncio.run(run())
    first = sum(1 for t in ok if t < start + window)
    steady = sum(1 for t in ok if start + window <= t < start + 2 * window)
    return first, steady, other


def test_two_workers_hold_a_tenant_to_its_rate_only_with_redis(
    tmp_path: Path,
    emulator: EmulatorProcess,
    redis_server: RedisServer,
    gateways: list[GatewayProcess],
) -> None:
    """Same greedy load on `--workers 2` with and without `server.redis_url`.

    GCRA is time-invariant, so a 3 s window at 1200 RPM stands in for a minute (see
    test_admission_gateway.py). With Redis: steady rate within 5 % of the limit, the first
    window at most one bucket (3 s of the limit) above it. Without: each worker has its own
    bucket and rate, so the tenant gets about twice its limit.
    """
    rpm, window = 1200, 3.0
    expected = rpm / 60 * window
    limits = {"rpm": rpm}
    shared_cfg = write_config(tmp_path / "shared.yaml", emulator.base_url, limits, redis_server.url)
    local_cfg = write_config(tmp_path / "local.yaml", emulator.base_url, limits, None)
    gw = start_gateway(shared_cfg, workers=2)
    gateways.append(gw)
    first, steady, other = greedy_rate([gw], window)
    gw.stop(10)
    assert steady == pytest.approx(expected, rel=0.05)
    assert first <= expected + rpm * 3 / 60 + 2
    assert other and set(other) == {429}
    assert redis_server.client.exists(f"{KEY_PREFIX}{{acme}}:req")

    gw = start_gateway(local_cfg, workers=2)
    gateways.append(gw)
    _, steady_local, _ = greedy_rate([gw], window)
    assert steady_local > 1.4 * expected, "per-process limits: each worker admits the full rate"


def test_three_replicas_hold_a_tenant_to_its_rate(
    tmp_path: Path,
    emulator: EmulatorProcess,
    redis_server: RedisServer,
    gateways: list[GatewayProcess],
) -> None:
    """Three separate gateway processes (replicas, not workers) on one Redis: the tenant's
    accepted requests stay within 5 % of its limit, as with one process."""
    redis_server.client.flushdb()
    rpm, window = 1200, 3.0
    expected = rpm / 60 * window
    cfg = write_config(tmp_path / "three.yaml", emulator.base_url, {"rpm": rpm}, redis_server.url)
    gws = [start_gateway(cfg) for _ in range(3)]
    gateways.extend(gws)
    first, steady, other = greedy_rate(gws, window)
    assert steady == pytest.approx(expected, rel=0.05)
    assert first <= expected + rpm * 3 / 60 + 2
    assert other and set(other) == {429}


def test_three_replicas_share_a_concurrency_limit(
    tmp_path: Path,
    emulators: Callable[..., EmulatorProcess],
    redis_server: RedisServer,
    gateways: list[GatewayProcess],
) -> None:
    """`max_concurrency: 3` over three replicas: of nine simultaneous slow requests (three per
    replica) exactly three are served, six get 429 `concurrency`; once they end, the slots
    are free again everywhere."""
    redis_server.client.flushdb()
    slow = emulators(time_scale=10)
    slow.inject("slow", ttft_delay_s=1.5)
    cfg = write_config(
        tmp_path / "conc.yaml", slow.base_url, {"max_concurrency": 3}, redis_server.url
    )
    gws = [start_gateway(cfg) for _ in range(3)]
    gateways.extend(gws)

    async def together(n: int) -> list[tuple[int, str]]:
        async with fresh_connections() as s:
            replies = await asyncio.gather(*(chat(s, gws[i % 3], 1) for i in range(n)))
        return sorted(
            (st, "" if st == 200 else (b or {})["error"]["message"]) for st, _, b in replies
        )

    refused = (429, "Too many concurrent requests (limit 3); retry after 1 s.")
    assert asyncio.run(together(9)) == [(200, "")] * 3 + [refused] * 6
    assert asyncio.run(together(3)) == [(200, "")] * 3  # released through Redis by each replica


def test_tpm_correction_is_exact_through_redis(
    tmp_path: Path,
    emulator: EmulatorProcess,
    redis_server: RedisServer,
    gateways: list[GatewayProcess],
) -> None:
    """Charged up front on the estimate; once usage is known the shared TAT has moved by
    exactly Σ(prompt + completion) tokens, whichever worker served each request."""
    tpm = 60  # one token per second, so one token of error is a second of TAT
    cfg = write_config(
        tmp_path / "tpm.yaml",
        emulator.base_url,
        {"tpm": tpm},
        redis_server.url,
        overload={"rate_limit_burst_s": 6000},  # a bucket of 6000 tokens
    )
    gw = start_gateway(cfg, workers=2)
    gateways.append(gw)
    key = f"{KEY_PREFIX}{{acme}}:tok"
    redis_server.client.delete(key)

    async def run() -> tuple[float, float, list[dict[str, Any]]]:
        async with fresh_connections() as s:
            before = redis_server.now()
            bodies = []
            for i in range(6):
                status, _, body = await chat(s, gw, None, text=f"a story about {i} cats")
                assert status == 200 and body is not None
                bodies.append(body)
                if i == 0:
                    after_first = redis_server.now()
            return before, after_first, bodies

    before, after_first, bodies = asyncio.run(run())
    used = sum(b["usage"]["prompt_tokens"] + b["usage"]["completion_tokens"] for b in bodies)
    assert all(b["usage"]["completion_tokens"] != 256 for b in bodies)  # estimate ≠ usage
    interval = 60 / tpm
    deadline = time.monotonic() + 5
    while True:  # the corrections are sent right after each response
        start = float(redis_server.client.get(key) or 0) - used * interval
        if before - 1e-3 <= start <= after_first + 1e-3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert before - 1e-3 <= start <= after_first + 1e-3, (start - before, used)


def test_redis_down_at_start_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"redis://127.0.0.1:{port}/0"
    cfg = write_config(tmp_path / "down.yaml", "http://127.0.0.1:9/v1", {"rpm": 60}, url)
    cmd = [sys.executable, "-m", "skyfleet.gateway.server", "--config", str(cfg)]
    out = subprocess.run(
        [*cmd, "--port", str(free_port()), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert f"cannot reach Redis at {url}" in out.stderr
    assert "server.redis_url" in out.stderr and "Traceback" not in out.stderr


def test_runtime_redis_failure_fails_open_to_per_process_limits(
    tmp_path: Path, emulator: EmulatorProcess, gateways: list[GatewayProcess]
) -> None:
    """Redis dies under a running gateway: requests keep being served, the process's own
    limiter still enforces the limit, a warning is logged and the metrics say so."""
    own = RedisServer()
    try:
        cfg = write_config(tmp_path / "open.yaml", emulator.base_url, {"rpm": 6}, own.url)
        gw = start_gateway(cfg)
        gateways.append(gw)

        async def burst(n: int) -> list[int]:
            async with fresh_connections() as s:
                return [(await chat(s, gw, 1))[0] for _ in range(n)]

        assert asyncio.run(burst(3)) == [200, 429, 429]  # a bucket of one request (rpm 6)
        own.stop()
        assert asyncio.run(burst(3)) == [200, 429, 429]  # now the process's own bucket
        with urllib.request.urlopen(gw.url + "/metrics", timeout=10) as r:
            m = parse_metrics(r.read().decode())
        assert m["skyfleet_shared_state_up"] == 0
        assert m['skyfleet_shared_state_errors_total{op="acquire"}'] >= 1
        assert m["skyfleet_shared_state_fallbacks_total"] == 1
        assert gw.log().count("falling back to this process's own tenant limits") == 1
    finally:
        own.stop()


async def test_crashed_worker_slots_expire_and_budget_is_shared(
    redis_server: RedisServer,
) -> None:
    """Concurrency slots of a process that never released them are freed after the slot TTL
    (held ones are kept alive by the heartbeat); spend recorded by one process blocks the
    tenant in another until UTC midnight."""
    url = redis_server.url
    limits = TenantLimits(max_concurrency=2, daily_budget_usd=1.0)
    a = SharedLimits(RedisLink(url, CollectorRegistry()), slot_ttl_s=0.6)
    b = SharedLimits(RedisLink(url, CollectorRegistry()), slot_ttl_s=0.6)
    await a.start()
    await b.start()
    try:
        tenant = f"crash-{time.monotonic_ns()}"
        held = []
        for _ in range(2):
            t = await a.acquire(tenant, TenantLimiter(limits), 10)
            d = t.try_acquire(0, 10)
            assert d.allowed
            held.append((t, d))
        d = (await b.acquire(tenant, TenantLimiter(limits), 10)).try_acquire(0, 10)
        assert not d.allowed and d.reason == "concurrency"
        await asyncio.sleep(1.0)  # a's heartbeat keeps its two slots
        d = (await b.acquire(tenant, TenantLimiter(limits), 10)).try_acquire(0, 10)
        assert not d.allowed and d.reason == "concurrency"
        t, d = held.pop()
        assert d.charge is not None
        t.complete(time.time(), d.charge, 10, cost_usd=1.5)  # frees a slot, spends the budget
        await a.close()  # "crash": the other slot is never released, nor refreshed
        await a.link.close()
        await asyncio.sleep(0.1)
        d = (await b.acquire(tenant, TenantLimiter(limits), 10)).try_acquire(0, 10)
        assert not d.allowed and d.reason == "budget"
        midnight = (time.time() // 86_400 + 1) * 86_400
        assert d.retry_after_s == pytest.approx(midnight - time.time(), abs=5)
        key = f"{KEY_PREFIX}{{{tenant}}}:conc"
        assert redis_server.client.zcount(key, redis_server.now(), "+inf") == 1
        await asyncio.sleep(0.7)
        assert redis_server.client.zcount(key, redis_server.now(), "+inf") == 0  # expired
    finally:
        await b.close()
        await b.link.close()
