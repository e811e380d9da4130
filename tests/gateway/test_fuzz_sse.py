"""Hypothesis-generated SSE replies that break the rules (split anywhere, CRLF, comments,
junk lines, invalid UTF-8, huge events, error events, no [DONE], cut mid-event) from the one
upstream of an in-process gateway. Whatever arrives, the client gets a stream that ends in
`[DONE]` or in an OpenAI error event, made of the upstream's own events in order, never a 5xx
of the gateway's own, and each accepted request gets one ledger record."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .harness import KEY, FakeUpstream, Reply, chat
from .live import LiveGateway

# SKYFLEET_FUZZ_EXAMPLES: the long form (benchmarks/bench_fuzz.py)
EXAMPLES = int(os.environ.get("SKYFLEET_FUZZ_EXAMPLES", "300"))


def chunk_event(text: str) -> bytes:
    body = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    body["choices"] = [{"index": 0, "delta": {"content": text}, "finish_reason": None}]
    return b"data: " + json.dumps(body).encode() + b"\n\n"


USAGE = b'data: {"id": "c", "choices": [], "usage": {"prompt_tokens": 3}}'
USAGE_EVENT = USAGE + b"\n\n"
EVENTS = st.one_of(
    st.text(max_size=20).map(chunk_event),
    st.just(USAGE_EVENT),
    st.just(chunk_event("a model may write data: [DONE] too")),
    st.just(b": keep-alive\n\n"),
    st.just(b"event: ping\ndata: {}\n\n"),
    st.just(b'data:{"id": "c", "choices": []}\n\n'),  # no space after the colon
    st.just(b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'),
    st.just(b'data: {"usage": "not an object", "choices": []}\n\n'),
    st.binary(max_size=40),  # junk, invalid UTF-8
    st.integers(1, 200_000).map(lambda n: b"data: " + b"x" * n + b"\n\n"),
)


@st.composite
def replies(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
    """(chunks as sent, the bytes they make)."""
    events = draw(st.lists(EVENTS, max_size=8))
    if draw(st.booleans()):
        events.append(b"data: [DONE]\n\n")
    data = b"".join(events)
    if draw(st.booleans()):
        data = data.replace(b"\n", b"\r\n")
    if data and draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]  # cut anywhere
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a], data


def events_of(data: bytes) -> list[bytes]:
    """The events of an SSE body (extra blank lines between them dispatch nothing)."""
    blocks = data.replace(b"\r\n", b"\n").split(b"\n\n")
    return [e.strip(b"\n") for e in blocks if e.strip(b"\n")]


def test_sse_breaking_replies(tmp_path: Path) -> None:
    up = FakeUpstream()
    live = LiveGateway([up], tmp_path, health={"consecutive_failures": 1000})
    ends = {"done": 0, "error_event": 0, "refused": 0}
    try:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(reply=replies(), usage=st.booleans())
        def one(reply: tuple[list[bytes], bytes], usage: bool) -> None:
            chunks, sent = reply
            up.script = [Reply(raw=chunks)]
            body = chat(stream=True) | (
                {"stream_options": {"include_usage": True}} if usage else {}
            )
            headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
            status, got, content = live.request(
                "POST", "/v1/chat/completions", headers, json.dumps(body).encode()
            )
            live.judge("/v1/chat/completions", status, got, content)
            if status != 200:
                assert got["x-skyfleet-error-source"] == "upstream"
                ends["refused"] += 1
                return
            received = events_of(content)
            upstream = events_of(sent)
            last = received[-1] if received else b""
            if last == b"data: [DONE]":
                ends["done"] += 1
            else:
                assert last.startswith(b'data: {"error"'), (
                    last[-300:],
                    sent[-300:],
                    content[-300:],
                )
                err = json.loads(last.removeprefix(b"data: "))["error"]
                assert err["type"] == "server_error" and err["message"]
                ends["error_event"] += 1
                received = received[:-1]
            it = iter(upstream)  # the client's events are the upstream's, in order
            assert all(any(e == u for u in it) for e in received), (received, upstream)
            if not usage:
                assert USAGE not in received

        one()
        assert "internal_error" not in live.metrics()
    finally:
        live.close()
    print(f"\nSSE fuzz: {live.statuses.total()} streams, ends {ends}")
    assert ends["done"] and ends["error_event"] and ends["refused"]
    assert sorted(live.ledger_ids()) == sorted(live.accepted)
