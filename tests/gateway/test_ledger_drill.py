"""Two `skyfleet serve` replicas sharing one real PostgreSQL ledger (`ledger.url`).

N requests through both, then SIGTERM → exactly N rows, one per request id. The SIGKILL drill
kills one replica mid-load: what it loses is at most the records of the requests it finished
in its last flush interval (docs/gateway.md: `flush_interval_s` + the time one flush takes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import yaml

from skyfleet.config import hash_key
from skyfleet.emulator.process import EmulatorProcess, start_emulator
from skyfleet.gateway.process import GatewayProcess, start_gateway

pytestmark = pytest.mark.slow  # about 25 s: one emulator, four gateway starts
UPSTREAM = "Llama-3.1-8B"
KEY = "sk-drill-acme"
FLUSH_S = 0.5
SLACK_S = 1.5  # one flush plus event-loop stalls when other work takes the 2 cores


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProcess]:
    emu = start_emulator("Llama-3.1-8B@H100-SXM-80GB", time_scale=50.0, served_model_name=UPSTREAM)
    yield emu
    emu.stop()


@pytest.fixture
def replicas(tmp_path: Path, emulator: EmulatorProcess, pg_url: str) -> Iterator[Any]:
    started: list[GatewayProcess] = []
    cfg = tmp_path / "fleet.yaml"
    doc: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0, "watch_config": False},
        "ledger": {"url": pg_url, "flush_interval_s": FLUSH_S},
        "routing": {"scrape_interval_s": 0},
        "providers": [{"name": "p0"}],
        "endpoints": [
            {"name": "e0", "provider": "p0", "url": emulator.base_url, "model": UPSTREAM}
        ],
        "models": [{"name": "chat", "endpoints": ["e0"]}],
        "tenants": [{"name": "acme", "api_keys": [hash_key(KEY)]}],
        "overload": {"adaptive_concurrency": False},
    }
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))

    def start(n: int) -> list[GatewayProcess]:
        for _ in range(n):
            started.append(start_gateway(cfg))
        return started

    yield start
    for g in started:
        g.stop(15)


@dataclass
class Done:
    replica: int
    status: int
    request_id: str | None
    t: float  # time.monotonic() when the response had arrived


async def client(
    s: aiohttp.ClientSession, gw: GatewayProcess, idx: int, stop: float, out: list[Done]
) -> int:
    """Closed loop until `stop` or until the replica is gone; returns connection errors."""
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    headers = {"Authorization": f"Bearer {KEY}"}
    errors = 0
    while time.monotonic() < stop:
        try:
            async with s.post(gw.base_url + "/chat/completions", json=body, headers=headers) as r:
                await r.read()
                out.append(Done(idx, r.status, r.headers.get("x-request-id"), time.monotonic()))
        except aiohttp.ClientError:
            errors += 1
            if gw.proc.poll() is not None:
                return errors
            await asyncio.sleep(0.05)
    return errors


async def ledger_ids(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [r[0] for r in await conn.fetch("SELECT request_id FROM usage")]
    finally:
        await conn.close()


async def fixed_count(gws: list[GatewayProcess], n: int, out: list[Done]) -> None:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    headers = {"Authorization": f"Bearer {KEY}"}
    sem = asyncio.Semaphore(8)

    async def one(s: aiohttp.ClientSession, i: int) -> None:
        gw = gws[i % len(gws)]
        async with sem, s.post(gw.base_url + "/chat/completions", json=body, headers=headers) as r:
            await r.read()
            out.append(Done(i % len(gws), r.status, r.headers.get("x-request-id"), 0.0))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        await asyncio.gather(*(one(s, i) for i in range(n)))


def test_n_requests_through_two_replicas_make_exactly_n_rows(replicas: Any, pg_url: str) -> None:
    gws = replicas(2)
    done: list[Done] = []
    n = 400
    asyncio.run(fixed_count(gws, n, done))
    assert len(done) == n and {d.status for d in done} == {200}
    for g in gws:
        assert g.stop(15) == 0  # SIGTERM: drain, flush, exit 0
    ids = asyncio.run(ledger_ids(pg_url))
    assert len(ids) == n
    assert set(ids) == {d.request_id for d in done}


def test_sigkill_loses_at_most_the_last_flush_interval(
    replicas: Any, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = replicas(2)
    done: list[Done] = []
    kill_at, total = 6.0, 8.0  # 4.5 s of finished requests must all be in the ledger

    async def run() -> tuple[float, list[int]]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
            t0 = time.monotonic()
            tasks = [
                asyncio.create_task(client(s, gw, idx, t0 + total, done))
                for idx, gw in ((0, a), (1, b))
                for _ in range(3)
            ]
            await asyncio.sleep(kill_at)
            killed = time.monotonic()
            a.proc.kill()  # SIGKILL: no drain, no final flush
            return killed, await asyncio.gather(*tasks)

    killed, errors = asyncio.run(run())
    assert b.stop(15) == 0
    ids = set(asyncio.run(ledger_ids(pg_url)))
    ok_a = [d for d in done if d.replica == 0 and d.status == 200 and d.t <= killed]
    ok_b = [d for d in done if d.replica == 1 and d.status == 200]
    assert {d.status for d in done} == {200}
    assert len(ok_a) > 100 and len(ok_b) > 100, "enough load on both replicas to mean something"
    assert all(d.request_id in ids for d in ok_b), "the replica stopped with SIGTERM lost none"
    lost = [d for d in ok_a if d.request_id not in ids]
    window = [d for d in ok_a if d.t > killed - FLUSH_S - SLACK_S]
    oldest_lost = max((killed - d.t for d in lost), default=0.0)
    with capsys.disabled():
        print(
            f"\nSIGKILL drill: replica A finished {len(ok_a)} requests before the kill, "
            f"{len(lost)} records lost (oldest finished {oldest_lost * 1e3:.0f} ms before the "
            f"kill; bound {FLUSH_S * 1e3:.0f} ms + one flush); {len(window)} finished in the "
            f"last {(FLUSH_S + SLACK_S) * 1e3:.0f} ms; B: {len(ok_b)} requests, none lost; "
            f"{sum(errors[:3])} connection errors on A's clients"
        )
    assert oldest_lost <= FLUSH_S + SLACK_S, "lost a record older than the last flush interval"
    assert len(lost) <= len(window)
    assert len(ids) >= len(ok_a) - len(lost) + len(ok_b)
