"""In-process gateway tests: the real gateway app in front of scripted fake upstreams, both
on aiohttp test servers in the test's own event loop (no subprocess).

A `FakeUpstream` answers each POST with the next `Reply` of its script (the last one
repeats): a JSON body, an error status, an SSE stream (optionally cut or stalled; or raw
chunks, as the SSE fuzzer sends them), or bytes that are not what was promised. The
harness builds the gateway with `build_gateway` and serves it with the production server's
connection limits (`GuardedRunner`), so the request path under test is the production one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from skyfleet.config import hash_key, parse_config
from skyfleet.gateway.app import Gateway, build_gateway
from skyfleet.gateway.connections import ConnectionGuard, GuardedRunner, handler_limits

KEY = "sk-test-tenant"
ADMIN = "sk-test-admin"


@dataclass
class Reply:
    """One scripted upstream answer."""

    status: int = 200
    body: Any = None  # a JSON value, or bytes sent as they are
    stream: Sequence[str] | None = None  # SSE `data:` payloads (then `[DONE]` unless cut)
    cut: bool = False  # end the stream without `[DONE]`
    delay_s: float = 0.0  # before answering
    headers: dict[str, str] = field(default_factory=dict)
    raw: Sequence[bytes] | None = None  # an SSE body written as these chunks, as they are
    # with both `body` and `stream`: each request gets the one it asked for (`"stream": true`)


def completion(text: str = "hi", prompt: int = 5, completion_tokens: int = 2) -> dict[str, Any]:
    """A minimal chat.completion body with usage."""
    return {
        "id": "cmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        },
    }


def chunks(words: Sequence[str], prompt: int = 5) -> list[str]:
    """SSE payloads of a chat stream: one chunk per word, then the usage chunk."""
    out = [
        json.dumps(
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}],
            }
        )
        for w in words
    ]
    usage = {"prompt_tokens": prompt, "completion_tokens": len(words)}
    out.append(json.dumps({"id": "c", "choices": [], "usage": usage}))
    return out


class FakeUpstream:
    """A scripted OpenAI-compatible upstream; records every request body it received."""

    def __init__(
        self,
        *script: Reply,
        timeouts: dict[str, float] | None = None,
        api_key: str | None = None,
    ) -> None:
        self.script = list(script) or [Reply(body=completion())]
        self.timeouts = timeouts  # the endpoint's `timeouts` in the fleet config
        self.api_key = api_key  # the endpoint's `api_key` (the provider secret)
        self.received: list[dict[str, Any]] = []
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/{path:.*}", self._answer)
        app.router.add_get("/health", _ok)
        app.router.add_get("/metrics", _ok)
        self.server = TestServer(app, host="127.0.0.1")

    @property
    def url(self) -> str:
        return str(self.server.make_url("/v1"))

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.received.append(await request.json())
        reply = self.script[min(len(self.received) - 1, len(self.script) - 1)]
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.raw is not None:
            out = web.StreamResponse(
                status=reply.status, headers={"Content-Type": "text/event-stream"}
            )
            await out.prepare(request)
            for chunk in reply.raw:
                await out.write(chunk)
            await out.write_eof()
            return out
        asked_stream = self.received[-1].get("stream") is True
        if reply.stream is None or (reply.body is not None and not asked_stream):
            body = reply.body if reply.body is not None else completion()
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            return web.Response(
                status=reply.status,
                body=data,
                content_type="application/json",
                headers=reply.headers,
            )
        out = web.StreamResponse(status=reply.status, headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        for payload in reply.stream:
            await out.write(f"data: {payload}\n\n".encode())
        if not reply.cut:
            await out.write(b"data: [DONE]\n\n")
        await out.write_eof()
        return out


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def fleet_config(
    upstreams: Sequence[FakeUpstream],
    tmp: Path,
    *,
    tenants: bool = True,
    **sections: Any,
) -> dict[str, Any]:
    """A fleet config with one endpoint per upstream (in tier order), one model `chat`."""
    endpoints = [
        {
            "name": f"e{i}",
            "provider": f"p{i}",
            "url": u.url,
            "model": "m",
            "capacity": 8,
            "tier": "primary" if i == 0 else "spillover",
            "price": {"per_1m_input_tokens": 1.0, "per_1m_output_tokens": 2.0},
            **({"timeouts": u.timeouts} if u.timeouts else {}),
            **({"api_key": u.api_key} if u.api_key else {}),
        }
        for i, u in enumerate(upstreams)
    ]
    cfg: dict[str, Any] = {
        "server": {"admin_api_keys": [hash_key(ADMIN)], "watch_config": False},
        "ledger": {"path": str(tmp / "usage.sqlite"), "flush_interval_s": 0.05},
        "health": {"consecutive_failures": 2, "probe_interval_s": 60},
        "routing": {"scrape_interval_s": 0},
        "providers": [{"name": f"p{i}"} for i in range(len(upstreams))],
        "endpoints": endpoints,
        "models": [{"name": "chat", "endpoints": [e["name"] for e in endpoints]}],
    }
    if tenants:
        cfg["tenants"] = [{"name": "t", "api_keys": [hash_key(KEY)]}]
    for name, section in sections.items():
        cfg[name] = {**cfg.get(name, {}), **section}
    return cfg


class GatewayTestServer(TestServer):
    """A test server for the gateway app with the production server's connection limits."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway.build_app(), host="127.0.0.1")
        self.gateway = gateway

    async def _make_runner(self, **kwargs: Any) -> GuardedRunner:
        server = self.gateway.fleet.cfg.server
        guard = ConnectionGuard(server, self.gateway.metrics.registry)
        return GuardedRunner(self.app, guard, **kwargs, **handler_limits(server))


@asynccontextmanager
async def serving(
    upstreams: Sequence[FakeUpstream], tmp: Path, **config: Any
) -> AsyncIterator[tuple[TestClient[web.Request, web.Application], Gateway]]:
    """The gateway in front of `upstreams`, with a client for it; all stopped after."""
    for upstream in upstreams:
        await upstream.server.start_server()
    gateway = build_gateway(parse_config(fleet_config(upstreams, tmp, **config)))
    client = TestClient(GatewayTestServer(gateway))
    await client.start_server()
    try:
        yield client, gateway
    finally:
        await client.close()
        for upstream in upstreams:
            await upstream.server.close()


def chat(stream: bool = False, **extra: Any) -> dict[str, Any]:
    """A chat request body for the public model `chat`."""
    body = {"model": "chat", "messages": [{"role": "user", "content": "hello"}], "stream": stream}
    return body | extra


AUTH = {"Authorization": f"Bearer {KEY}"}
