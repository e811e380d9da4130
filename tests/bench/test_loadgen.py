"""The load generator against a real (fake, fast) server process: shapes, metrics, errors."""

from __future__ import annotations

import asyncio
import socket

import pytest

from skyfleet.bench import (
    HeaderVariant,
    LiveStats,
    Load,
    Slo,
    SyntheticRequests,
    Target,
    preflight,
    run_load,
)
from skyfleet.bench.echo_server import EchoServer
from skyfleet.errors import SkyfleetError

pytestmark = pytest.mark.timeout(60)


async def _target(url: str, **kw: object) -> Target:
    t, _ = await preflight(Target(url, **kw))  # type: ignore[arg-type]
    return t


async def test_closed_loop_streams_and_measures_ttft_itl(echo: EchoServer) -> None:
    t = await _target(echo.url)
    assert t.model == "echo"
    rr = await run_load(t, SyntheticRequests(16, 5), Load(concurrency=4, num_requests=40))
    s = rr.summary()
    assert (s.requests, s.completed, s.failed) == (40, 40, 0)
    assert s.max_concurrency <= 4
    assert s.mean_output_tokens == 5  # from the server's usage
    assert 0.018 < s.ttft.p50 < 0.2  # server waits 20 ms before the first token
    assert s.itl.count == 40 * 4 and 0.0015 < s.itl.p50 < 0.1
    assert s.tpot.mean == pytest.approx((s.e2e.mean - s.ttft.mean) / 4, rel=0.05)


async def test_open_loop_rate_and_warmup(echo: EchoServer) -> None:
    t = await _target(echo.url, stream=False)
    load = Load(rate=100.0, process="constant", num_requests=60, warmup_requests=10)
    rr = await run_load(t, SyntheticRequests(8, 1), load)
    s = rr.summary()
    assert len(rr.results) == 70 and s.requests == 60 and s.failed == 0
    assert s.send_rate == pytest.approx(100.0, rel=0.2)
    assert s.ttft.count == 0 and s.e2e.count == 60  # no TTFT without streaming


async def test_duration_bound_and_completions_api(echo: EchoServer) -> None:
    t = await _target(echo.url, api="completions")
    rr = await run_load(t, SyntheticRequests(8, 2), Load(rate=50.0, duration_s=0.6, seed=2))
    s = rr.summary()
    assert 10 <= s.requests <= 60 and s.failed == 0
    assert max(r.sent for r in rr.results) < 0.6 + 0.2


async def test_errors_and_timeouts_are_counted_never_hang(flaky_echo: EchoServer) -> None:
    t = await _target(flaky_echo.url, stream=False, timeout_s=0.5)
    rr = await run_load(t, SyntheticRequests(8, 1), Load(concurrency=8, num_requests=35))
    s = rr.summary()
    assert s.requests == 35
    assert s.errors.get("http_500", 0) >= 4
    assert s.errors.get("timeout", 0) >= 3
    assert s.completed + s.failed == 35


async def test_a_stream_cut_short_is_a_failure_not_a_short_answer() -> None:
    """A stream that ends with [DONE] but never gave a finish_reason was cut by the server
    (llama-cpp-python does that when another request arrives): counted as failed, not as a
    one-token answer that would pull TPOT and output throughput down."""
    with EchoServer("--cut-every", "3") as cutting:
        t = await _target(cutting.url)
        rr = await run_load(t, SyntheticRequests(8, 4), Load(concurrency=3, num_requests=30))
    s = rr.summary()
    assert s.errors == {"cut_stream": 10} and s.completed == 20
    assert s.mean_output_tokens == 4
    assert "finish_reason" in s.error_examples["cut_stream"]


async def test_stop_event_gives_partial_results(echo: EchoServer) -> None:
    t = await _target(echo.url)
    stop = asyncio.Event()
    live = LiveStats()
    asyncio.get_running_loop().call_later(0.4, stop.set)
    rr = await run_load(
        t, SyntheticRequests(8, 200), Load(concurrency=5, duration_s=30), live=live, stop=stop
    )
    assert rr.interrupted
    assert rr.incomplete == 5  # the five in flight were cut off
    assert live.sent == len(rr.results) + rr.incomplete


async def test_rate_function_and_header_mix_labels(echo: EchoServer) -> None:
    t = await _target(echo.url, stream=False)
    mix = [HeaderVariant(1, {"x-priority": "critical"}, "critical"), HeaderVariant(1, {}, "std")]
    seen: list[str] = []
    rr = await run_load(
        t,
        SyntheticRequests(8, 1, mix=mix),
        Load(rate=lambda x: 40.0 if x < 0.5 else 120.0, duration_s=1.0, seed=4),
        on_result=lambda r: seen.append(r.label),
    )
    assert set(rr.labels()) == {"critical", "std"}
    assert len(seen) == len(rr.results)
    early = sum(1 for r in rr.results if r.planned < 0.5)
    late = len(rr.results) - early
    assert late > 1.8 * early  # the rate tripled half way
    crit = rr.summary(Slo(), "critical")
    assert 0 < crit.requests < len(rr.results)


async def test_preflight_rejects_wrong_key_and_unreachable_url(keyed_echo: EchoServer) -> None:
    with pytest.raises(SkyfleetError, match="rejected the API key"):
        await preflight(Target(keyed_echo.url, api_key="sk-wrong"))
    t, info = await preflight(Target(keyed_echo.url + "/v1", api_key="sk-right"))
    assert t.model == "echo" and info["served_models"] == ["echo"]
    with pytest.raises(SkyfleetError, match="not served"):
        await preflight(Target(keyed_echo.url, api_key="sk-right", model="gpt-9"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SkyfleetError, match="cannot reach"):
        await preflight(Target(f"http://127.0.0.1:{port}"))


async def test_raw_client_and_aiohttp_agree(flaky_echo: EchoServer) -> None:
    """Non-streaming runs over the raw keep-alive client and over aiohttp count the same."""
    t = await _target(flaky_echo.url, stream=False, timeout_s=0.5)
    out = []
    for fast in (True, False):
        rr = await run_load(
            t, SyntheticRequests(8, 3), Load(concurrency=4, num_requests=20), fast_path=fast
        )
        s = rr.summary()
        out.append((s.requests, s.completed, s.mean_output_tokens))
        assert s.errors.get("http_500", 0) >= 2 and s.completed + s.failed == 20
    assert out[0][0] == out[1][0] and out[0][2] == out[1][2] == 3


async def test_raw_client_parses_chunked_bodies() -> None:
    from skyfleet.bench.fastclient import _Conn

    c = _Conn()
    fut: asyncio.Future[tuple[int, bytes, dict[str, str]]]
    fut = asyncio.get_running_loop().create_future()
    c.waiter = fut
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Request-Id: req-1\r\n\r\n"
    c.data_received(head + b"5\r\nhel")
    assert not fut.done()
    c.data_received(b"lo\r\n6\r\n world\r\n0\r\n\r\n")
    assert fut.result() == (200, b"hello world", {"x-request-id": "req-1"})


async def test_cooldown_keeps_the_load_on_but_is_not_measured(echo: EchoServer) -> None:
    t = await _target(echo.url)
    load = Load(concurrency=3, num_requests=12, warmup_requests=2, cooldown_requests=4)
    rr = await run_load(t, SyntheticRequests(8, 3), load)
    assert len(rr.results) == 18 and all(r.ok for r in rr.results)
    assert [r.index for r in rr.results if r.cooldown] == [14, 15, 16, 17]
    assert rr.summary().requests == 12
    with pytest.raises(SkyfleetError, match="cool-down"):
        Load(concurrency=1, num_requests=1, cooldown_requests=-1)


async def test_exact_rate_sends_the_asked_mean_rate(echo: EchoServer) -> None:
    """A short seeded Poisson run misses its rate by ~1/√n; `exact_rate` hits it."""
    t = await _target(echo.url, stream=False)
    load = Load(rate=200.0, num_requests=40, seed=5, exact_rate=True)
    rr = await run_load(t, SyntheticRequests(8, 1), load)
    planned = sorted(r.planned for r in rr.results)
    assert planned[-1] == pytest.approx(40 / 200.0, rel=1e-9)
    assert Load(rate=200.0, num_requests=40, seed=5).describe()["exact_rate"] is False
