"""Rude upstreams: a raw-socket HTTP/1.1 server that answers like an OpenAI-compatible engine
until it is told to misbehave in one way.

`python -m skyfleet.drill.rude MODE [--port N] [--rude]` prints `listening on
http://127.0.0.1:PORT (pid P)`. It starts polite (fixed chat, completions and embeddings
answers, streams of `--chunks` events `--gap-s` apart) unless `--rude`; SIGUSR1 turns the rude
mode on, SIGUSR2 off. Rude, every inference request gets:

- `no-read`: nothing: the server stops reading its sockets (4 KiB receive buffers), so a
  sender's TCP buffers fill; `/health` hangs too;
- `silent`: the request is read, never answered; `/health` hangs too;
- `truncated`: fewer bytes than announced, then the connection closes (in turn: cut in the
  status line, in the headers, in the JSON body or the first SSE event);
- `malformed`: not HTTP (in turn: a bad status code, binary junk, a header without a colon,
  broken chunked framing);
- `error-200`: status 200 with an OpenAI error body, or a stream whose first event is an
  error;
- `bad-json`: status 200 with a body that is not JSON, or a stream whose first event is not;
- `forever`: a stream that never ends (no `[DONE]`), or a chunked JSON body that never ends.

In the rude modes other than `no-read` and `silent`, `GET /health` still answers 200: the
process looks alive, only its answers are wrong (what active probes cannot see).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import os
import signal
import socket
import time
from typing import Any

MODES = ("no-read", "silent", "truncated", "malformed", "error-200", "bad-json", "forever")
_RCVBUF = 4096


def _response(
    status: int, body: bytes, content_type: str = "application/json", close: bool = False
) -> bytes:
    reason = {200: "OK", 404: "Not Found", 400: "Bad Request"}.get(status, "Error")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
    )
    return head.encode() + body


def _usage(prompt: int, completion: int) -> dict[str, int]:
    total = prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def polite_json(api: str, body: dict[str, Any], words: int) -> dict[str, Any]:
    """A spec-shaped answer to a chat, completions or embeddings request."""
    model = str(body.get("model", "m"))
    created = int(time.time())
    if api == "embeddings":
        inputs = body.get("input")
        n = len(inputs) if isinstance(inputs, list) and inputs else 1
        data = [{"object": "embedding", "index": i, "embedding": [0.0, 0.5, 1.0]} for i in range(n)]
        usage = {"prompt_tokens": n, "total_tokens": n}
        return {"object": "list", "data": data, "model": model, "usage": usage}
    text = " ".join(["word"] * words)
    if api == "chat":
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
        kind = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}
        kind = "text_completion"
    return {
        "id": "cmpl-rude",
        "object": kind,
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": _usage(8, words),
    }


def polite_events(api: str, body: dict[str, Any], words: int) -> list[bytes]:
    """The SSE events of a polite stream: one per word, the usage event, `[DONE]`."""
    model = str(body.get("model", "m"))
    created = int(time.time())
    out = []
    for i in range(words):
        if api == "chat":
            delta: dict[str, Any] = {"content": "word "}
            if i == 0:
                delta["role"] = "assistant"
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None}
            choice["finish_reason"] = "stop" if i == words - 1 else None
            kind = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": "word ", "logprobs": None}
            choice["finish_reason"] = "stop" if i == words - 1 else None
            kind = "text_completion"
        event = {"id": "cmpl-rude", "object": kind, "created": created, "model": model}
        out.append(_event(event | {"choices": [choice]}))
    usage = {"id": "cmpl-rude", "object": "chat.completion.chunk", "created": created}
    out.append(_event(usage | {"model": model, "choices": [], "usage": _usage(8, words)}))
    out.append(b"data: [DONE]\n\n")
    return out


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


_SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
_ERROR = {
    "error": {
        "message": "The server had an error while processing your request.",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}


class RudeServer:
    """The server's state: the mode, whether it is rude now, the open connections."""

    def __init__(self, mode: str, *, rude: bool, chunks: int, gap_s: float) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        self.mode = mode
        self.rude = rude
        self.chunks = chunks
        self.gap_s = gap_s
        self.turn = itertools.count()
        self.connections: set[_Conn] = set()
        self.answered = {"polite": 0, "rude": 0}

    def set_rude(self, on: bool) -> None:
        self.rude = on
        if self.mode == "no-read":
            for c in self.connections:
                c.reading(not on)


class _Conn(asyncio.Protocol):
    """One client connection: parse requests, answer each in the server's current manner."""

    def __init__(self, server: RudeServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.busy = False
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        if self.server.rude and self.server.mode == "no-read":
            self.reading(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None
        if self.task is not None:
            self.task.cancel()

    def reading(self, on: bool) -> None:
        if self.transport is not None:
            with contextlib.suppress(RuntimeError):
                if on:
                    self.transport.resume_reading()
                else:
                    self.transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].decode("latin-1").split("\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip() or 0)
        if len(self.buf) < end + 4 + length:
            return
        body = self.buf[end + 4 : end + 4 + length]
        self.buf = self.buf[end + 4 + length :]
        method, path = [*head[0].split(" "), "", ""][:2]
        self.busy = True
        self.task = asyncio.get_running_loop().create_task(self._answer(method, path, body))

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def _answer(self, method: str, path: str, raw: bytes) -> None:
        server = self.server
        try:
            if method == "GET" and path.startswith("/health"):
                if server.rude and server.mode in ("silent", "no-read"):
                    return  # never answered
                self._write(_response(200, b'{"status": "ok"}'))
            elif method == "POST" and path.startswith("/v1/"):
                api = path[len("/v1/") :].split("?")[0]
                api = {"chat/completions": "chat"}.get(api, api)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                body = body if isinstance(body, dict) else {}
                stream = api != "embeddings" and body.get("stream") is True
                if server.rude:
                    server.answered["rude"] += 1
                    if not await self._rude(api, body, stream):
                        return
                else:
                    server.answered["polite"] += 1
                    await self._polite(api, body, stream)
            else:
                self._write(_response(404, b'{"error": {"message": "not found"}}'))
        finally:
            self.busy = False
            self.task = None
        if self.buf:
            self._next()

    async def _polite(self, api: str, body: dict[str, Any], stream: bool) -> None:
        words = self.server.chunks
        if not stream:
            await asyncio.sleep(self.server.gap_s * words)
            self._write(_response(200, json.dumps(polite_json(api, body, words)).encode()))
            return
        self._write(_SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        for event in polite_events(api, body, words):
            await asyncio.sleep(self.server.gap_s)
            self._write(_chunk(event))
        self._write(b"0\r\n\r\n")

    async def _rude(self, api: str, body: dict[str, Any], stream: bool) -> bool:
        """Answer rudely; False when the connection must not take another request."""
        mode = self.server.mode
        turn = next(self.server.turn)
        if mode in ("silent", "no-read"):
            await asyncio.Event().wait()  # until the connection closes
        if mode == "truncated":
            full = (
                _SSE_HEAD + b"\r\n" + polite_events(api, body, 4)[0]
                if stream
                else _response(200, json.dumps(polite_json(api, body, 4)).encode())
            )
            head_end = full.find(b"\r\n\r\n")
            cut = [8, head_end // 2, head_end + 4 + (len(full) - head_end - 4) // 2][turn % 3]
            self._write(full[:cut])
            self._close()
            return False
        if mode == "malformed":
            variants = (
                b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\n{}",
                b"\x00\x01\x02\xff\xfe junk \x00\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length 2\r\nbroken header\r\n\r\n{}",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nnot a chunk\r\n",
            )
            self._write(variants[turn % len(variants)])
            self._close()
            return False
        if mode == "error-200":
            if stream:
                self._write(_SSE_HEAD + b"Connection: close\r\n\r\n" + _event(_ERROR))
                self._write(b"data: [DONE]\n\n")
                self._close()
                return False
            self._write(_response(200, json.dumps(_ERROR).encode()))
            return True
        if mode == "bad-json":
            if stream:
                self._write(_SSE_HEAD + b"Connection: close\r\n\r\n")
                self._write(b'data: {"id": "cmpl-rude", "choices": [\n\n' + b"data: [DONE]\n\n")
                self._close()
                return False
            self._write(_response(200, b'{"id": "cmpl-rude", "choices": [{"message": '))
            return True
        # forever
        if stream:
            self._write(_SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
            event = polite_events(api, body, 2)[0]
            while self.transport is not None:
                self._write(_chunk(event))
                await asyncio.sleep(self.server.gap_s)
        else:
            self._write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            self._write(b"Transfer-Encoding: chunked\r\n\r\n" + _chunk(b'{"id": "cmpl-rude", '))
            while self.transport is not None:
                self._write(_chunk(b" " * 64))
                await asyncio.sleep(self.server.gap_s)
        return False


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening socket whose connections get small receive buffers (set before listen)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(server: RudeServer, host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT; SIGUSR1/SIGUSR2 turn the rude mode on/off."""
    loop = asyncio.get_running_loop()
    sock = listen_socket(host, port)
    srv = await loop.create_server(functools.partial(_Conn, server), sock=sock)
    bound = sock.getsockname()[1]
    where = f"http://{host}:{bound} (pid {os.getpid()})"
    print(f"rude upstream ({server.mode}) listening on {where}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, server.set_rude, True)
    loop.add_signal_handler(signal.SIGUSR2, server.set_rude, False)
    await stop.wait()
    srv.close()
    for c in list(server.connections):
        c._close()
    print(f"answered {server.answered}", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m skyfleet.drill.rude")
    ap.add_argument("mode", choices=MODES)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--rude", action="store_true", help="rude from the start")
    ap.add_argument("--chunks", type=int, default=8, help="words per polite answer")
    ap.add_argument("--gap-s", type=float, default=0.005, help="between polite stream events")
    a = ap.parse_args(argv)
    server = RudeServer(a.mode, rude=a.rude, chunks=a.chunks, gap_s=a.gap_s)
    asyncio.run(serve(server, a.host, a.port))


if __name__ == "__main__":
    main()
