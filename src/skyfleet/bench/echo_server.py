"""A minimal, fast OpenAI-shaped server (raw asyncio protocol) for testing the generator.

Not an engine: it answers at once (or after fixed delays) so a benchmark measures the load
generator, not the server. Run: `python -m skyfleet.bench.echo_server --port 0` (prints
`listening on http://127.0.0.1:PORT`). Options: `--api-key` (else 401), `--token-delay-ms`
between streamed tokens, `--ttft-ms`, `--fail-every N` (HTTP 500), `--hang-every N` (never
answers), `--cut-every N` (the stream ends with `[DONE]` after one token and no
finish_reason, as llama-cpp-python's server cuts an answer when another request arrives).
Supports keep-alive, chat and completions, streaming (chunked SSE) and not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Any

_MODEL = "echo"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class EchoProtocol(asyncio.Protocol):
    """One connection: parse HTTP/1.1 requests, answer each."""

    cfg: argparse.Namespace
    counter = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tr: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1").split("\r\n")
            length = 0
            auth = ""
            for h in head[1:]:
                k, _, v = h.partition(":")
                k = k.strip().lower()
                if k == "content-length":
                    length = int(v.strip())
                elif k == "authorization":
                    auth = v.strip()
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            method, path = head[0].split(" ")[:2]
            self.handle(method, path, auth, body)

    def send(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 500: "Internal Server Error"}
        self.tr.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (status, reason.get(status, "X").encode(), len(data), data)
        )

    def handle(self, method: str, path: str, auth: str, body: bytes) -> None:
        cfg = self.cfg
        if cfg.api_key and auth != f"Bearer {cfg.api_key}":
            self.send(401, {"error": {"message": "Incorrect API key provided", "code": 401}})
            return
        if method == "GET" and path == "/v1/models":
            self.send(200, {"object": "list", "data": [{"id": _MODEL, "object": "model"}]})
            return
        if method != "POST" or path not in ("/v1/chat/completions", "/v1/completions"):
            self.send(404, {"error": {"message": f"no route {path}"}})
            return
        EchoProtocol.counter += 1
        n = EchoProtocol.counter
        if cfg.hang_every and n % cfg.hang_every == 0:
            return
        if cfg.fail_every and n % cfg.fail_every == 0:
            self.send(500, {"error": {"message": "injected failure"}})
            return
        req = json.loads(body or b"{}")
        chat = path.endswith("chat/completions")
        out = int(req.get("max_tokens") or 1)
        prompt_tokens = len(json.dumps(req.get("messages") or req.get("prompt") or "")) // 4
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": out,
                 "total_tokens": prompt_tokens + out}  # fmt: skip
        if not req.get("stream"):
            msg = {"role": "assistant", "content": " tok" * out}
            choice = {"index": 0, "finish_reason": "length"}
            choice |= {"message": msg} if chat else {"text": " tok" * out}
            resp = {"id": "x", "object": "chat.completion", "model": _MODEL, "choices": [choice]}
            loop = asyncio.get_running_loop()
            loop.call_later(cfg.ttft_ms / 1e3, self.send, 200, resp | {"usage": usage})
            return
        self.tr.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        key = "delta" if chat else "text"
        cut = bool(cfg.cut_every and n % cfg.cut_every == 0 and out > 1)

        def event(i: int) -> None:
            if self.tr.is_closing():
                return
            if cut and i == 1:
                self.tr.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
            elif i < out:
                last = "length" if i == out - 1 else None
                c: dict[str, Any] = {"index": 0, "finish_reason": last}
                c |= {"delta": {"content": " tok"}} if key == "delta" else {"text": " tok"}
                self.tr.write(_chunk(b"data: " + json.dumps({"choices": [c]}).encode() + b"\n\n"))
                loop.call_later(cfg.token_delay_ms / 1e3, event, i + 1)
            else:
                u = json.dumps({"choices": [], "usage": usage}).encode()
                self.tr.write(_chunk(b"data: " + u + b"\n\n") + _chunk(b"data: [DONE]\n\n"))
                self.tr.write(b"0\r\n\r\n")

        loop = asyncio.get_running_loop()
        loop.call_later(cfg.ttft_ms / 1e3, event, 0)


async def serve(cfg: argparse.Namespace) -> None:
    EchoProtocol.cfg = cfg
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(EchoProtocol, "127.0.0.1", cfg.port, backlog=4096)
    port = srv.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    async with srv:
        await srv.serve_forever()


class EchoServer:
    """A running echo server subprocess (`.url`); `stop()` ends it."""

    def __init__(self, *args: str, startup_timeout: float = 20.0) -> None:
        import re
        import subprocess
        import sys
        import time

        cmd = [sys.executable, "-m", "skyfleet.bench.echo_server", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + startup_timeout
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        m = re.search(r"http://127.0.0.1:(\d+)", line)
        if not m or time.monotonic() > deadline:
            self.stop()
            raise RuntimeError(f"echo server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{m[1]}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except Exception:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> EchoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description="minimal fast OpenAI-shaped test server")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--api-key", default="")
    ap.add_argument("--token-delay-ms", type=float, default=0.0)
    ap.add_argument("--ttft-ms", type=float, default=0.0)
    ap.add_argument("--fail-every", type=int, default=0)
    ap.add_argument("--hang-every", type=int, default=0)
    ap.add_argument("--cut-every", type=int, default=0)
    cfg = ap.parse_args()
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        uvloop.run(serve(cfg))
    except KeyboardInterrupt:
        os._exit(0)


if __name__ == "__main__":
    main()
