"""A minimal HTTP/1.1 keep-alive client for non-streaming requests (raw asyncio protocol).

aiohttp costs ~250 µs of CPU per request; this path parses just a status line, headers and
a Content-Length or chunked body, so one process sends several times more tiny requests
per second. Used by the load generator for non-streaming runs over plain `http://`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from urllib.parse import urlsplit

KEPT_HEADERS = frozenset({"x-request-id", "x-skyfleet-endpoint", "x-skyfleet-attempts"})


class HttpError(Exception):
    """The connection broke or the response could not be parsed."""


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.tr: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes, dict[str, str]]] | None = None
        self.closed = False
        self.keep = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tr = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(HttpError("server closed the connection"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is not None and not self.waiter.done():
            try:
                done = self._parse()
            except (ValueError, IndexError) as e:
                self.waiter.set_exception(HttpError(f"bad HTTP response: {e}"))
                return
            if done is not None:
                self.waiter.set_result(done)

    def _parse(self) -> tuple[int, bytes, dict[str, str]] | None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        length = -1
        chunked = False
        kept: dict[str, str] = {}
        for h in head[1:]:
            k, _, v = h.partition(":")
            k = k.strip().lower()
            if k in KEPT_HEADERS:
                kept[k] = v.strip()
            elif k == "content-length":
                length = int(v)
            elif k == "transfer-encoding" and "chunked" in v.lower():
                chunked = True
            elif k == "connection" and v.strip().lower() == "close":
                self.keep = False
        start = end + 4
        if chunked:
            body = bytearray()
            pos = start
            while True:
                nl = self.buf.find(b"\r\n", pos)
                if nl < 0:
                    return None
                size = int(bytes(self.buf[pos:nl]).split(b";")[0], 16)
                if size == 0:
                    if len(self.buf) < nl + 4:
                        return None
                    del self.buf[: nl + 4]
                    return status, bytes(body), kept
                if len(self.buf) < nl + 2 + size + 2:
                    return None
                body += self.buf[nl + 2 : nl + 2 + size]
                pos = nl + 2 + size + 2
        if length < 0:
            self.keep = False
            return None  # read to close: not supported on this fast path
        if len(self.buf) < start + length:
            return None
        body_b = bytes(self.buf[start : start + length])
        del self.buf[: start + length]
        return status, body_b, kept


class FastHttp:
    """A pool of keep-alive connections to one `http://host:port`."""

    def __init__(self, url: str) -> None:
        u = urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"fast path needs http://host[:port], got {url!r}")
        self.host = u.hostname
        self.port = u.port or 80
        self.hosthdr = f"{self.host}:{self.port}".encode()
        self.idle: deque[_Conn] = deque()

    async def _conn(self) -> _Conn:
        while self.idle:
            c = self.idle.pop()
            if not c.closed:
                return c
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(_Conn, self.host, self.port)
        return proto

    async def post(
        self, path: str, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> tuple[int, bytes, dict[str, str]]:
        """Send one POST: (status, body, the `KEPT_HEADERS` it had); raises HttpError or
        TimeoutError."""
        c = await self._conn()
        lines = [b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d" % (
            path.encode(), self.hosthdr, len(body))]  # fmt: skip
        lines += [f"{k}: {v}".encode() for k, v in headers.items()]
        payload = b"\r\n".join(lines) + b"\r\n\r\n" + body
        fut: asyncio.Future[tuple[int, bytes, dict[str, str]]]
        fut = asyncio.get_running_loop().create_future()
        c.waiter = fut
        assert c.tr is not None
        c.tr.write(payload)
        try:
            res = await asyncio.wait_for(fut, timeout)
        except BaseException:
            c.closed = True
            if c.tr is not None:
                c.tr.close()
            raise
        c.waiter = None
        if c.keep and not c.closed:
            self.idle.append(c)
        elif c.tr is not None:
            c.tr.close()
        return res

    def close(self) -> None:
        while self.idle:
            c = self.idle.pop()
            if c.tr is not None:
                c.tr.close()
