"""Issue 7 end to end: daily budget, tenant concurrency, VTC fairness, the priority header and
the overload metrics, through a real gateway in front of real emulators on 127.0.0.1.

Two emulators (H100 profile, real time: 64 output tokens take ~0.45 s) are shared by the
module. Gateway `limits` serves two public models: `chat` (one priced endpoint with room for
64 requests, never saturated) and `small` (one endpoint of capacity 4, saturated on purpose
by the fairness test). Gateway `hedged` races attempts on two endpoints for the metrics test.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import statistics
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import yaml

from skyfleet.config import hash_key
from skyfleet.emulator.process import EmulatorProcess, start_emulator
from skyfleet.gateway.process import GatewayProcess, start_gateway

UPSTREAM = "Llama-3.1-8B"
PROFILE = "Llama-3.1-8B@H100-SXM-80GB"
USD_PER_OUTPUT_TOKEN = 0.1  # endpoint `big`: 100 000 USD per 1M output tokens, input free
BUDGET_USD = 1.0  # = two answers of 5 tokens
TENANTS: dict[str, dict[str, Any]] = {
    "budget": {"limits": {"daily_budget_usd": BUDGET_USD}},
    "conc": {"limits": {"max_concurrency": 2}},
    "hdryes": {"allow_priority_header": True},
    "hdrno": {},  # allow_priority_header: false (the default)
    "heavy": {},
    "light": {},
    "other": {},
}


def key(tenant: str) -> str:
    return f"sk-{tenant}"


# ---- processes ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def emus() -> Iterator[list[EmulatorProcess]]:
    with ThreadPoolExecutor(2) as pool:
        futs = [
            pool.submit(start_emulator, PROFILE, time_scale=1.0, seed=i, served_model_name=UPSTREAM)
            for i in range(2)
        ]
        started = [f.result() for f in futs]
    yield started
    for e in started:
        e.stop()


def write_config(path: Path, doc: dict[str, Any]) -> Path:
    base: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0, "watch_config": False},
        "ledger": {"path": str(path.with_suffix(".sqlite")), "flush_interval_s": 0.2},
        "routing": {"scrape_interval_s": 0},
        "tenants": [
            {"name": n, "api_keys": [hash_key(key(n))]} | extra for n, extra in TENANTS.items()
        ],
    }
    path.write_text(yaml.safe_dump(base | doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def gw(emus: list[EmulatorProcess], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Gateway `limits`: `chat` on a priced endpoint, `small` on a 4-slot endpoint."""
    price = {"per_1m_input_tokens": 0.0, "per_1m_output_tokens": USD_PER_OUTPUT_TOKEN * 1e6}
    cfg = write_config(
        tmp_path_factory.mktemp("e2e") / "limits.yaml",
        {
            "providers": [{"name": "pa"}, {"name": "pb"}],
            "endpoints": [
                {"name": "big", "provider": "pa", "url": emus[0].base_url, "model": UPSTREAM}
                | {"capacity": 64, "price": price},
                {"name": "tiny", "provider": "pb", "url": emus[1].base_url, "model": UPSTREAM}
                | {"capacity": 4},
            ],
            "models": [
                {"name": "chat", "endpoints": ["big"]},
                {"name": "small", "endpoints": ["tiny"]},
            ],
            "overload": {
                "enabled": True,
                "adaptive_concurrency": False,  # fixed 4 slots: the fairness test needs them
                "standard_deadline_s": 30,
                "queue_size": 64,
            },
        },
    )
    g = start_gateway(cfg)
    yield g
    g.stop(10)


# ---- helpers -----------------------------------------------------------------------------
def scrape(g: GatewayProcess) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of /metrics as (name, labels, value)."""
    with urllib.request.urlopen(g.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out: list[tuple[str, dict[str, str], float]] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, val = line.rpartition(" ")
        name, _, rest = head.partition("{")
        labels = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        out.append((name, labels, float(val)))
    return out


def value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
    return sum(
        v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())
    )


def client(g: GatewayProcess, tenant: str) -> openai.OpenAI:
    """The official SDK with its own retries off, so every 429 is seen."""
    return openai.OpenAI(base_url=g.base_url, api_key=key(tenant), max_retries=0, timeout=30)


def ask(c: openai.OpenAI, max_tokens: int = 5, model: str = "chat", **kw: Any) -> Any:
    """One chat completion through the SDK; returns the raw response (headers + parse())."""
    return c.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": "Say hello"}],
        max_tokens=max_tokens,
        **kw,
    )


def seconds_to_utc_midnight() -> float:
    now = dt.datetime.now(dt.UTC)
    midnight = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


# ---- daily budget ------------------------------------------------------------------------
def test_daily_budget_refuses_with_429_once_spend_reaches_it(gw: GatewayProcess) -> None:
    """Each answer costs 5 tokens x 0.1 USD = 0.5 USD; after two the day's 1.0 USD is spent:
    the third request gets 429 with a message naming the budget and a Retry-After that runs
    to 00:00 UTC; other tenants are unaffected."""
    if seconds_to_utc_midnight() < 60:
        pytest.skip("too close to UTC midnight: the budget day would roll over mid-test")
    c = client(gw, "budget")
    spent = 0.0
    for _ in range(2):
        r = ask(c)
        done = r.parse()
        assert done.usage is not None and done.usage.completion_tokens == 5
        spent += done.usage.completion_tokens * USD_PER_OUTPUT_TOKEN
    assert spent == pytest.approx(BUDGET_USD)
    for _ in range(2):  # refused, and stays refused (no spend while refused)
        with pytest.raises(openai.RateLimitError) as ei:
            ask(c, max_tokens=1)
        e = ei.value
        assert e.status_code == 429
        msg = str(e.message)
        assert "Daily budget of 1.0 USD used up" in msg and "00:00 UTC" in msg
        assert isinstance(e.body, dict) and e.body.get("type") == "rate_limit_error"
        retry = int(e.response.headers["retry-after"])
        assert abs(retry - seconds_to_utc_midnight()) <= 30
        assert e.response.headers["x-skyfleet-error-source"] == "gateway"
    assert ask(client(gw, "other")).status_code == 200
    m = scrape(gw)
    assert value(m, "skyfleet_shed_total", reason="rate_limit_budget") == 2


# ---- per-tenant concurrency -----------------------------------------------------------------
async def open_stream(s: aiohttp.ClientSession, g: GatewayProcess, tenant: str) -> Any:
    """Start a long stream and read its first bytes (admitted and in flight from then on)."""
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": "Tell a long story"}],
        "max_tokens": 3000,  # ~20 s of decoding: held open until the test closes it
        "stream": True,
    }
    r = await s.post(
        g.base_url + "/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key(tenant)}"},
    )
    assert r.status == 200
    assert (await r.content.readany()).startswith(b"data:")
    return r


async def post(
    s: aiohttp.ClientSession, g: GatewayProcess, tenant: str, **kw: Any
) -> tuple[int, dict[str, str], Any]:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    async with s.post(
        g.base_url + "/chat/completions",
        json=body | kw,
        headers={"Authorization": f"Bearer {key(tenant)}"},
    ) as r:
        h = {k.lower(): v for k, v in r.headers.items()}
        raw = await r.read()
        if "json" in h.get("content-type", ""):
            return r.status, h, json.loads(raw)
        return r.status, h, raw  # a stream: its SSE bytes


async def test_tenant_concurrency_limit_429s_the_third_and_frees_on_close(
    gw: GatewayProcess,
) -> None:
    """max_concurrency 2: with two streams open a third request is refused at once (429,
    Retry-After, a message naming the limit); another tenant is not; once a stream is closed
    by its client the slot is free again."""
    before = value(scrape(gw), "skyfleet_shed_total", reason="rate_limit_concurrency")
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        a = await open_stream(s, gw, "conc")
        b = await open_stream(s, gw, "conc")
        try:
            t0 = time.monotonic()
            status, headers, body = await post(s, gw, "conc")
            assert status == 429 and time.monotonic() - t0 < 5  # refused, not queued
            assert int(headers["retry-after"]) >= 1
            assert body["error"]["type"] == "rate_limit_error"
            assert "Too many concurrent requests (limit 2)" in body["error"]["message"]
            assert (await post(s, gw, "other"))[0] == 200
            a.close()  # the client goes away: the gateway cancels it and frees the slot
            deadline = time.monotonic() + 10
            while (status := (await post(s, gw, "conc"))[0]) == 429:
                assert time.monotonic() < deadline, "slot not freed after the client left"
                await asyncio.sleep(0.1)
            assert status == 200
            assert (await post(s, gw, "conc"))[0] == 200  # sequential: one slot is enough
        finally:
            a.close()
            b.close()
    after = value(scrape(gw), "skyfleet_shed_total", reason="rate_limit_concurrency")
    assert after - before >= 1


# ---- priority header -----------------------------------------------------------------------
def admitted(g: GatewayProcess) -> dict[str, float]:
    m = scrape(g)
    return {p: value(m, "skyfleet_admitted_total", priority=p) for p in ("critical", "standard")}


def test_priority_header_is_honoured_only_when_the_tenant_allows_it(gw: GatewayProcess) -> None:
    """`x-skyfleet-priority` sets the class of a tenant with allow_priority_header: true
    (a bad value is a 400); for any other tenant it is ignored, whatever it says."""
    yes, no = client(gw, "hdryes"), client(gw, "hdrno")
    crit = {"x-skyfleet-priority": "critical"}
    m0 = admitted(gw)
    assert ask(yes, extra_headers=crit).status_code == 200
    m1 = admitted(gw)
    assert (m1["critical"] - m0["critical"], m1["standard"] - m0["standard"]) == (1, 0)
    assert ask(no, extra_headers=crit).status_code == 200
    assert ask(no, extra_headers={"x-skyfleet-priority": "urgent"}).status_code == 200
    m2 = admitted(gw)
    assert (m2["critical"] - m1["critical"], m2["standard"] - m1["standard"]) == (0, 2)
    with pytest.raises(openai.BadRequestError) as ei:
        ask(yes, extra_headers={"x-skyfleet-priority": "urgent"})
    assert "x-skyfleet-priority must be one of" in str(ei.value.message)
    shed0 = value(scrape(gw), "skyfleet_admitted_total", priority="sheddable")
    assert ask(yes, extra_headers={"x-skyfleet-priority": "sheddable"}).status_code == 200
    assert value(scrape(gw), "skyfleet_admitted_total", priority="sheddable") == shed0 + 1


# ---- VTC fairness under saturation ---------------------------------------------------------
@pytest.mark.slow
async def test_light_tenant_is_not_starved_by_a_heavy_one_of_the_same_priority(
    gw: GatewayProcess,
) -> None:
    """`small` has 4 slots (3 for standard). `heavy` keeps 14 requests of 64 tokens waiting,
    `light` 2 of 4 tokens, same class. FIFO puts each light request behind ~14 heavy ones, so
    it waits as long as a heavy one (measured: light p50 1.97 s vs heavy 2.21 s, 6 served).
    VTC serves the tenant with the fewest weighted tokens first, so a light request waits for
    a slot or two to free (measured: p50 0.08-0.5 s vs heavy 2.3-2.5 s, 24-56 served).
    Also checks the queue metrics while saturated."""
    lat: dict[str, list[float]] = {"heavy": [], "light": []}
    qlen: list[float] = []
    timeout = aiohttp.ClientTimeout(total=30)

    async with aiohttp.ClientSession(timeout=timeout) as s:

        async def worker(tenant: str, max_tokens: int, stop: float) -> None:
            while time.monotonic() < stop:
                t0 = time.monotonic()
                status, _, _ = await post(s, gw, tenant, model="small", max_tokens=max_tokens)
                assert status == 200  # 30 s deadline: nobody is shed
                lat[tenant].append(time.monotonic() - t0)

        async def watch(stop: float) -> None:
            loop = asyncio.get_running_loop()
            while time.monotonic() < stop:
                m = await loop.run_in_executor(None, scrape, gw)
                qlen.append(value(m, "skyfleet_queue_length", model="small", priority="standard"))
                await asyncio.sleep(0.3)

        start = time.monotonic()
        stop = start + 6.0
        jobs = [asyncio.ensure_future(worker("heavy", 64, stop)) for _ in range(14)]
        await asyncio.sleep(1.0)  # the queue fills with heavy work first
        jobs += [asyncio.ensure_future(worker("light", 4, stop)) for _ in range(2)]
        jobs.append(asyncio.ensure_future(watch(stop)))
        await asyncio.gather(*jobs)

    heavy, light = statistics.median(lat["heavy"]), statistics.median(lat["light"])
    assert max(qlen) >= 3  # saturated: requests were waiting
    assert len(lat["light"]) >= 5, lat["light"]  # served again and again: not starved
    assert light < 0.5 * heavy, f"light p50 {light:.2f} s vs heavy p50 {heavy:.2f} s"
    m = scrape(gw)
    waits = value(m, "skyfleet_queue_wait_seconds_count", priority="standard")
    assert waits >= len(lat["light"]) // 2
    assert value(m, "skyfleet_queue_wait_seconds_sum", priority="standard") > 0
    assert value(m, "skyfleet_admitted_total", priority="standard", path="queued") > 0
    assert value(m, "skyfleet_queue_length", model="small") == 0  # drained at the end


# ---- observability: limits and hedges --------------------------------------------------------
@pytest.mark.slow
async def test_metrics_show_endpoint_limits_and_hedges_won_and_lost(
    emus: list[EmulatorProcess], tmp_path: Path
) -> None:
    """Hedging at the median with a budget of 100 %: a primary stuck 1 s on a slowed first
    token loses to its hedge (`won`); a merely above-median primary answers before its fresh
    hedge (`lost`). Each endpoint's adaptive limit is exported and stays within its bounds."""
    cfg = write_config(
        tmp_path / "hedged.yaml",
        {
            "providers": [{"name": "pa"}, {"name": "pb"}],
            "endpoints": [
                {"name": f"e{i}", "provider": p, "url": e.base_url, "model": UPSTREAM}
                | {"capacity": 16}
                for i, (p, e) in enumerate(zip(("pa", "pb"), emus, strict=True))
            ],
            "models": [{"name": "chat", "endpoints": ["e0", "e1"]}],
            "overload": {
                "enabled": True,
                "hedging": {
                    "enabled": True,
                    "percentile": 50,
                    "budget_percent": 100,
                    "min_samples": 10,
                },
            },
        },
    )
    g = start_gateway(cfg)
    emus[0].inject("slow", ttft_delay_s=1.0, fraction=0.5)
    try:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as s:

            async def worker(n: int) -> None:
                for i in range(n):
                    status, _, _ = await post(s, g, "other", max_tokens=4, stream=i % 2 == 0)
                    assert status == 200

            await asyncio.gather(*(worker(20) for _ in range(4)))
        m = scrape(g)
    finally:
        emus[0].clear_faults()
        g.stop(10)
    won = value(m, "skyfleet_hedges_total", model="chat", result="won")
    lost = value(m, "skyfleet_hedges_total", model="chat", result="lost")
    assert won >= 1 and lost >= 1, (won, lost)
    assert won + lost <= 80
    for ep in ("e0", "e1"):
        limit = [
            v
            for n, lab, v in m
            if n == "skyfleet_endpoint_concurrency_limit" and lab.get("endpoint") == ep
        ]
        assert len(limit) == 1 and 2 <= limit[0] <= 16
