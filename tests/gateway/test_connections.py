"""Client connection limits (gateway/connections.py) on a real socket: the gateway app behind
`GuardedRunner`, in front of a scripted upstream, spoken to with raw TCP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from skyfleet.config import parse_config
from skyfleet.gateway.app import Gateway, build_gateway
from skyfleet.gateway.connections import ConnectionGuard, GuardedRunner, handler_limits

from .harness import KEY, FakeUpstream, Reply, fleet_config

LIMITS = {"header_timeout_s": 0.3, "body_timeout_s": 0.3, "keepalive_timeout_s": 30.0}


@asynccontextmanager
async def guarded(
    tmp: Path, upstream: FakeUpstream | None = None, **server: Any
) -> AsyncIterator[tuple[int, Gateway]]:
    """The gateway with its connection guard on 127.0.0.1: (port, gateway)."""
    upstream = upstream or FakeUpstream()
    await upstream.server.start_server()
    cfg = parse_config(fleet_config([upstream], tmp, server={**LIMITS, **server}))
    gateway = build_gateway(cfg)
    runner = GuardedRunner(
        gateway.build_app(),
        ConnectionGuard(cfg.server, gateway.metrics.registry),
        handler_cancellation=True,
        access_log=None,
        **handler_limits(cfg.server),
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1], gateway
    finally:
        await runner.cleanup()
        await upstream.server.close()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def answer(
    reader: asyncio.StreamReader, timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers, body (Content-Length framed)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return int(lines[0].split()[1]), headers, body


async def closed(reader: asyncio.StreamReader, timeout: float = 5.0) -> bool:
    """Whether the gateway closes the connection (EOF) within `timeout`."""
    try:
        return await asyncio.wait_for(reader.read(), timeout) == b""
    except (TimeoutError, ConnectionResetError):
        return False


CHAT = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}).encode()


def chat_request(body: bytes = CHAT, extra: str = "") -> bytes:
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def openai_error(body: bytes) -> dict[str, Any]:
    err: dict[str, Any] = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


async def test_a_head_that_trickles_gets_408_and_is_closed_others_are_served(
    tmp_path: Path,
) -> None:
    async with guarded(tmp_path) as (port, gateway):
        slow_r, slow_w = await connect(port)
        slow_w.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n")
        r, w = await connect(port)
        w.write(chat_request())
        assert (await answer(r))[0] == 200  # served while the slow head waits
        for i in range(3):
            await asyncio.sleep(0.1)
            slow_w.write(b"X-Slow-%d: 1\r\n" % i)
        status, headers, body = await answer(slow_r)
        assert status == 408 and headers["x-skyfleet-error-source"] == "gateway"
        assert "request headers not received within 0.3 s" in openai_error(body)["message"]
        assert await closed(slow_r)
        text = gateway.metrics.render().decode()
    assert 'skyfleet_client_connections_closed_total{reason="header_timeout"} 1.0' in text


async def test_a_body_that_trickles_gets_408_and_the_connection_is_closed(tmp_path: Path) -> None:
    async with guarded(tmp_path) as (port, gateway):
        r, w = await connect(port)
        w.write(chat_request()[:-10])  # the head and most of the body
        status, _, body = await answer(r)
        assert status == 408
        assert "request body not received within 0.3 s" in openai_error(body)["message"]
        assert await closed(r, 2.0), "no lingering on a slow body"
        text = gateway.metrics.render().decode()
    assert 'skyfleet_errors_total{cause="slow_client"} 1.0' in text


async def test_oversized_and_malformed_requests_get_openai_errors(tmp_path: Path) -> None:
    async with guarded(tmp_path, max_header_bytes=1024, max_headers=16) as (port, _):
        cases = [
            (chat_request(extra=f"X-Big: {'a' * 2000}\r\n"), 431),
            (chat_request(extra="".join(f"X-{i}: 1\r\n" for i in range(40))), 431),
            (b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: gw\r\n\r\n", 431),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n", 400),
            (b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
            (chat_request(extra="Content-Encoding: gzip\r\n"), 400),  # not gzip (the fuzzer)
        ]
        for raw, want in cases:
            r, w = await connect(port)
            w.write(raw)
            status, headers, body = await answer(r)
            assert (status, headers["x-skyfleet-error-source"]) == (want, "gateway"), raw[:40]
            openai_error(body)
            w.close()


async def test_at_the_cap_a_new_connection_closes_an_idle_one_never_a_busy_one(
    tmp_path: Path,
) -> None:
    async with guarded(tmp_path, max_connections=4) as (port, gateway):
        served_r, served_w = await connect(port)  # a keep-alive client that did a request
        served_w.write(chat_request())
        assert (await answer(served_r))[0] == 200
        idle = [await connect(port) for _ in range(3)]  # never sent anything
        await asyncio.sleep(0.05)
        newcomer_r, newcomer_w = await connect(port)
        newcomer_w.write(chat_request())
        assert (await answer(newcomer_r))[0] == 200
        assert await closed(idle[0][0], 2.0), "the oldest connection that never sent a request"
        served_w.write(chat_request())  # the served keep-alive connection was kept
        assert (await answer(served_r))[0] == 200
        assert gateway.metrics.render().decode().count("skyfleet_client_connections 4.0") == 1


async def test_when_every_connection_is_busy_a_new_one_gets_503(tmp_path: Path) -> None:
    slow = FakeUpstream(Reply(delay_s=1.0))
    async with guarded(tmp_path, slow, max_connections=2) as (port, gateway):
        busy = [await connect(port) for _ in range(2)]
        for _, w in busy:
            w.write(chat_request())
        await asyncio.sleep(0.3)
        r, _ = await connect(port)
        status, headers, body = await answer(r)
        assert status == 503 and headers["retry-after"] == "1"
        assert "too many open connections" in openai_error(body)["message"]
        for br, _ in busy:
            assert (await answer(br))[0] == 200  # the busy ones finish
        text = gateway.metrics.render().decode()
    assert 'skyfleet_client_connections_closed_total{reason="refused_limit"} 1.0' in text
