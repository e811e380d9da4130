"""Near-zero-work fake Anthropic and Bedrock upstreams (raw asyncio + uvloop), for
`bench_provider_overhead.py`; the OpenAI one is `fake_upstream.py`, whose framing this reuses.

    python benchmarks/gateway/fake_providers.py anthropic|bedrock PORT [CHUNKS]

Each answers as fixed bytes what `fake_upstream.py` answers in OpenAI's format, with the same
token counts: a 32-token JSON answer (prompt 120, completion 32) and a stream of `CHUNKS`
content events (prompt 120, completion CHUNKS), each event its own HTTP chunk and write.

- anthropic: `POST /v1/messages` — JSON `message`, or (`"stream":true` in the body) SSE with
  named events: message_start, content_block_start, ping, CHUNKS × content_block_delta,
  content_block_stop, message_delta, message_stop.
- bedrock: `POST …/converse` — Converse JSON; `…/converse-stream` — AWS event-stream messages
  (`application/vnd.amazon.eventstream`): messageStart, CHUNKS × contentBlockDelta,
  contentBlockStop, messageStop, metadata. The SigV4 signature is not checked.

`GET` → 200 `ok`. Nothing is parsed beyond the request line and Content-Length.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys

from fake_upstream import JSON_HEAD, OK, Upstream, _chunk

from skyfleet.providers import eventstream

PROMPT, COMPLETION = 120, 32  # the same counts as fake_upstream.py's answers
TEXT = "word "
MODEL = "m"


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _sse(name: str, obj: dict[str, object]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (name.encode(), _dumps(obj))


def anthropic_answers(n: int) -> tuple[bytes, list[bytes]]:
    """(JSON body, stream events) in the Messages API's format."""

    def usage(out: int) -> dict[str, int]:
        return {
            "input_tokens": PROMPT,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": out,
        }

    def message(content: list[dict[str, str]], stop: str | None, out: int) -> dict[str, object]:
        return {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage(out),
        }

    body = _dumps(message([{"type": "text", "text": TEXT * COMPLETION}], "max_tokens", COMPLETION))
    delta = {"type": "content_block_delta", "index": 0}
    events = [
        _sse("message_start", {"type": "message_start", "message": message([], None, 1)}),
        _sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        _sse("ping", {"type": "ping"}),
        *[_sse("content_block_delta", delta | {"delta": {"type": "text_delta", "text": TEXT}})] * n,
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                "usage": {"output_tokens": n},
            },
        ),
        _sse("message_stop", {"type": "message_stop"}),
    ]
    return body, events


def bedrock_answers(n: int) -> tuple[bytes, list[bytes]]:
    """(Converse JSON body, ConverseStream event-stream messages)."""

    def usage(out: int) -> dict[str, int]:
        return {
            "inputTokens": PROMPT,
            "outputTokens": out,
            "totalTokens": PROMPT + out,
            "cacheReadInputTokens": 0,
            "cacheWriteInputTokens": 0,
        }

    body = _dumps(
        {
            "output": {"message": {"role": "assistant", "content": [{"text": TEXT * COMPLETION}]}},
            "stopReason": "max_tokens",
            "usage": usage(COMPLETION),
            "metrics": {"latencyMs": 1},
        }
    )
    ev = eventstream.event
    delta = _dumps({"contentBlockIndex": 0, "delta": {"text": TEXT}})
    events = [
        ev("messageStart", b'{"role":"assistant"}'),
        *[ev("contentBlockDelta", delta)] * n,
        ev("contentBlockStop", b'{"contentBlockIndex":0}'),
        ev("messageStop", b'{"stopReason":"max_tokens"}'),
        ev("metadata", _dumps({"usage": usage(n), "metrics": {"latencyMs": 1}})),
    ]
    return body, events


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


class FakeProvider(Upstream):
    """One connection of a fake Anthropic or Bedrock upstream."""

    def __init__(self, kind: str, body: bytes, events: list[bytes]) -> None:
        super().__init__([_chunk(e) for e in events] + [b"0\r\n\r\n"])
        self.kind = kind
        self.json = (JSON_HEAD % len(body)) + body
        ctype = (
            b"text/event-stream" if kind == "anthropic" else b"application/vnd.amazon.eventstream"
        )
        self.stream_head = STREAM_HEAD % ctype

    def wants_stream(self, head: bytes, body: bytes) -> bool:
        if self.kind == "bedrock":  # the path says it: …/converse-stream
            return b"/converse-stream " in head[: head.find(b"\r\n")]
        return b'"stream":true' in body or b'"stream": true' in body

    def answer(self, head: bytes, body: bytes) -> None:
        t = self.transport
        assert t is not None
        if not head.startswith(b"post"):
            t.write(OK)
        elif self.wants_stream(head, body):
            t.write(self.stream_head)
            for ev in self.events:  # one write per event, as a real server flushes tokens
                t.write(ev)
        else:
            t.write(self.json)


async def serve(kind: str, port: int, chunks: int) -> None:
    """Serve on 127.0.0.1:port until cancelled."""
    body, events = {"anthropic": anthropic_answers, "bedrock": bedrock_answers}[kind](chunks)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: FakeProvider(kind, body, events),
        "127.0.0.1",
        port,
        backlog=4096,
        reuse_address=True,
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    """Entry point: KIND PORT [CHUNKS]."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind not in ("anthropic", "bedrock"):
        sys.exit(f"kind must be anthropic or bedrock, not {kind!r}")
    chunks = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(kind, port, chunks))


if __name__ == "__main__":
    main()
