"""Upstream answers that are not answers (gateway/answers.py): a 200 carrying an error or
invalid JSON, a stream whose first event is an error, not JSON, or cut before it ends, a 4xx
without an OpenAI error body. Nothing reached the client yet, so each is retried on another
endpoint like any upstream fault; found by the rude-upstream drills and the fuzzer."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from skyfleet.gateway.answers import answer_problem, client_error, stream_problem

from .harness import AUTH, FakeUpstream, Reply, chat, chunks, serving
from .test_request_path import ledger

ERROR = {"error": {"message": "The server had an error", "type": "server_error"}}


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (Reply(body=ERROR), "an error in a 2xx answer"),
        (Reply(body=b'{"id": "x", "choices": [{"mess'), "not a JSON object"),
        (Reply(stream=['{"error": {"message": "boom"}}']), "first event is an error"),
        (Reply(stream=['{"id": "c", "choices": [']), "first event not a JSON object"),
    ],
)
async def test_an_answer_that_is_no_answer_is_retried_elsewhere(
    tmp_path: Path, reply: Reply, problem: str
) -> None:
    stream = reply.stream is not None
    good = FakeUpstream(Reply(stream=chunks(["ok"])) if stream else Reply())
    bad = FakeUpstream(reply)
    async with serving([bad, good], tmp_path) as (client, gateway):
        resp = await client.post("/v1/chat/completions", json=chat(stream=stream), headers=AUTH)
        text = await resp.text()
        assert resp.status == 200 and resp.headers["x-skyfleet-endpoint"] == "e1", text
        assert "error" not in text
        metrics = gateway.metrics.render().decode()
    assert 'skyfleet_retries_total{cause="upstream_garbage",model="chat"} 1.0' in metrics
    (rec,) = ledger(tmp_path)
    assert (rec["status"], rec["endpoint"], rec["attempts"]) == (200, "e1", 2)
    assert problem  # the cause the first attempt's log line names


async def _cut_stream(request: web.Request) -> web.StreamResponse:
    """Headers and half an event, then the connection closes."""
    out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await out.prepare(request)
    await out.write(b'data: {"id": "c", "cho')
    assert request.transport is not None
    request.transport.close()
    return out


async def test_a_stream_cut_before_its_first_event_is_retried(tmp_path: Path) -> None:
    app = web.Application()
    app.router.add_post("/v1/{path:.*}", _cut_stream)
    cut = FakeUpstream()
    cut.server = TestServer(app, host="127.0.0.1")
    good = FakeUpstream(Reply(stream=chunks(["fine"])))
    async with serving([cut, good], tmp_path) as (client, _):
        resp = await client.post("/v1/chat/completions", json=chat(stream=True), headers=AUTH)
        text = await resp.text()
    assert resp.status == 200 and resp.headers["x-skyfleet-endpoint"] == "e1"
    assert "fine" in text and "error" not in text and text.endswith("data: [DONE]\n\n")


async def test_a_4xx_without_an_openai_body_reaches_the_client_in_openai_shape(
    tmp_path: Path,
) -> None:
    up = FakeUpstream(Reply(status=404, body=b"404: Not Found"))
    async with serving([up], tmp_path) as (client, _):
        for stream in (False, True):
            resp = await client.post("/v1/chat/completions", json=chat(stream=stream), headers=AUTH)
            assert resp.status == 404
            err = (await resp.json())["error"]
            assert err["code"] == "upstream_error" and "e0 answered 404" in err["message"]


def test_openai_shaped_4xx_bodies_pass_untouched() -> None:
    body = b'{"error": {"message": "bad temperature", "type": "invalid_request_error"}}'
    assert client_error("e0", 400, body, "application/json", None) == (body, "application/json")


def test_answer_and_stream_checks() -> None:
    assert answer_problem({"choices": [], "usage": {}}) is None
    assert answer_problem({"object": "list", "data": [{"embedding": [0.1]}]}) is None
    assert answer_problem({"error": {"message": "x"}, "choices": [{"index": 0}]}) is None
    sse = "text/event-stream"
    assert stream_problem(sse, b'data: {"choices": []}\n\ndata: [DONE]\n\n') is None
    assert stream_problem(sse, b": keep-alive\n\n") is None
    assert stream_problem(sse, b"data: [DONE]\r\n\r\n") is None
    assert stream_problem("application/json", b'data: {"a": 1}\n\n') == "not server-sent events"
    assert stream_problem(sse, b'data: {"a"') == "closed before its first event"
    assert stream_problem(sse, b"data: nope\n\n") == "first event not a JSON object"


async def test_an_upstream_that_stops_reading_a_large_body_times_out_at_ttfb(
    tmp_path: Path,
) -> None:
    """aiohttp's read timeouts do not bound a write the peer stopped reading: a body larger
    than the socket buffers waited for `total_s` (600 s by default), not `ttfb_s`."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)

    class Deaf(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transport.pause_reading()  # type: ignore[attr-defined]

    class DeafUpstream(FakeUpstream):
        @property
        def url(self) -> str:
            return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"

    server = await asyncio.get_running_loop().create_server(Deaf, sock=sock)
    deaf = DeafUpstream(timeouts={"connect_s": 1.0, "ttfb_s": 1.0, "total_s": 600})
    body = chat(user="x" * 8_000_000)  # passed upstream as it is
    try:
        async with serving(
            [deaf, FakeUpstream()], tmp_path, server={"max_body_bytes": 16_000_000}
        ) as (client, _):
            resp = await asyncio.wait_for(
                client.post("/v1/chat/completions", json=body, headers=AUTH), 20
            )
            assert resp.status == 200 and resp.headers["x-skyfleet-endpoint"] == "e1"
    finally:
        server.close()
    (rec,) = ledger(tmp_path)
    assert rec["attempts"] == 2
