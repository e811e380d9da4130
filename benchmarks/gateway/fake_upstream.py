"""A near-zero-work fake OpenAI upstream on raw asyncio (+ uvloop) for the gateway benchmark.

    python benchmarks/gateway/fake_upstream.py PORT [CHUNKS]

`POST` with `"stream": true` in the body → `CHUNKS` SSE content events, a usage event and
`data: [DONE]`, each event its own HTTP chunk; any other `POST` → one fixed chat completion;
`GET` → 200 `ok` (health probes). HTTP/1.1 keep-alive, Content-Length request bodies only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys

RESP = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1764000000,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "word " * 32},
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 120, "completion_tokens": 32, "total_tokens": 152},
    },
    separators=(",", ":"),
).encode()


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def stream_events(n: int) -> list[bytes]:
    """The HTTP chunks of one streamed answer (one SSE event each, then the terminator)."""
    head = b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1764000000,'
    ev = head + b'"model":"m","choices":[{"index":0,"delta":{"content":"word "},'
    ev += b'"finish_reason":null}]}\n\n'
    usage = head + b'"model":"m","choices":[],"usage":{"prompt_tokens":120,'
    usage += b'"completion_tokens":%d,"total_tokens":%d}}\n\n' % (n, 120 + n)
    return [_chunk(ev)] * n + [_chunk(usage), _chunk(b"data: [DONE]\n\n"), b"0\r\n\r\n"]


JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


class Upstream(asyncio.Protocol):
    """One client connection: parse requests, answer at once."""

    def __init__(self, events: list[bytes]) -> None:
        self.events = events
        self.json = (JSON_HEAD % len(RESP)) + RESP
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop: not a subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            n = 0
            i = head.find(b"content-length:")
            if i >= 0:
                j = head.find(b"\r\n", i)
                n = int(head[i + 15 : j if j >= 0 else None])
            if len(self.buf) < end + 4 + n:
                return
            body = bytes(self.buf[end + 4 : end + 4 + n])
            del self.buf[: end + 4 + n]
            self.answer(head, body)

    def answer(self, head: bytes, body: bytes) -> None:
        t = self.transport
        assert t is not None
        if not head.startswith(b"post"):
            t.write(OK)
        elif b'"stream":true' in body or b'"stream": true' in body:
            t.write(SSE_HEAD)
            for ev in self.events:  # one write per event, as a real server flushes tokens
                t.write(ev)
        else:
            t.write(self.json)


async def serve(port: int, chunks: int) -> None:
    """Serve on 127.0.0.1:port until cancelled."""
    events = stream_events(chunks)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Upstream(events), "127.0.0.1", port, backlog=4096, reuse_address=True
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    """Entry point: PORT [CHUNKS]."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    port = int(sys.argv[1])
    chunks = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(port, chunks))


if __name__ == "__main__":
    main()
