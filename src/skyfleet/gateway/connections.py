"""Client connection limits of one gateway worker, on top of aiohttp's HTTP server.

aiohttp bounds header lines and counts and closes idle keep-alive connections, but has no
deadline for a request head that trickles in and no cap on open connections. Here:

- **head deadline**: from a request's first byte to the end of its headers, at most
  `server.header_timeout_s`; past it the connection gets a 408 and is closed (a body past
  `server.body_timeout_s` gets its 408 from the handler, and the connection is closed too,
  without aiohttp's lingering read of the rest);
- **connection cap**: at most `server.max_connections` open connections; a new one closes
  an idle one (no request being handled): the oldest of those that never completed a
  request (idle or slowloris sockets), else the one idle the longest; it is refused with a
  503 only when every open connection is handling a request;
- **OpenAI-shaped protocol errors**: a request aiohttp's parser refuses (a header line past
  `server.max_header_bytes`, too many headers: 431; malformed: 400) gets an OpenAI error
  body, logged in one line without its bytes (they may hold a key).

`GuardedRunner` is an `AppRunner` whose connections are `GuardedHandler`s (aiohttp's
`RequestHandler` plus the limits); `gateway.server.run_worker` uses it.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest
from prometheus_client import CollectorRegistry, Counter, Gauge

from skyfleet.config import ServerConfig
from skyfleet.gateway.errors import error_body, error_response

log = logging.getLogger("skyfleet.gateway")


def handler_limits(server: ServerConfig) -> dict[str, Any]:
    """aiohttp's own per-connection limits from the `server` section."""
    return {
        "keepalive_timeout": server.keepalive_timeout_s,
        "max_line_size": server.max_header_bytes,
        "max_field_size": server.max_header_bytes,
        "max_headers": server.max_headers,
    }


def raise_fd_limit(connections: int) -> None:
    """Raise the open-files limit to the hard limit; warn when it cannot hold `connections`
    client connections plus as many upstream ones."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    if soft < 2 * connections + 64:
        log.warning(
            "open-files limit %d is below 2 × server.max_connections (%d) + 64: accept() may "
            "fail before the connection cap applies (raise `ulimit -n`)",
            soft,
            connections,
        )


def _raw_error(status: int, reason: str, message: str, extra: str = "") -> bytes:
    """A complete HTTP/1.1 error response (written straight to a transport), then close."""
    body = error_body(status, message, code="connection_limit" if status == 503 else None)
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        f"x-skyfleet-error-source: gateway\r\n{extra}\r\n"
    )
    return head.encode() + body


class ConnectionGuard:
    """The open connections of one worker: counts, the idle order, the limits' counters."""

    def __init__(self, server: ServerConfig, registry: CollectorRegistry | None = None) -> None:
        self.max_connections = server.max_connections
        self.header_timeout_s = server.header_timeout_s
        self.max_header_bytes = server.max_header_bytes
        self.open = 0
        # idle connections, in insertion order (oldest first): never served a request, served
        self._fresh: dict[GuardedHandler, None] = {}
        self._idle: dict[GuardedHandler, None] = {}
        self.closed = Counter(
            "skyfleet_client_connections_closed",
            "Client connections the gateway closed to enforce a limit",
            ["reason"],
            registry=registry,
        )
        for reason in ("header_timeout", "evicted_idle", "refused_limit"):
            self.closed.labels(reason)
        gauge = Gauge("skyfleet_client_connections", "Open client connections", registry=registry)
        gauge.set_function(lambda: self.open)

    def admit(self, conn: GuardedHandler) -> bool:
        """Count a new connection; at the cap close an idle one (one that never served a
        request first, the oldest); False: every connection is busy, refuse it."""
        if self.open >= self.max_connections:
            victim = next(iter(self._fresh), None) or next(iter(self._idle), None)
            if victim is None:
                self.closed.labels("refused_limit").inc()
                return False
            self.release(victim)
            self.closed.labels("evicted_idle").inc()
            victim.force_close()
        self.open += 1
        self._fresh[conn] = None
        return True

    def busy(self, conn: GuardedHandler) -> None:
        """`conn` is handling a request: it may not be evicted."""
        self._fresh.pop(conn, None)
        self._idle.pop(conn, None)

    def idle(self, conn: GuardedHandler) -> None:
        """`conn` finished a request: it is the most recently idle."""
        if conn.counted:
            self._idle.pop(conn, None)
            self._idle[conn] = None

    def release(self, conn: GuardedHandler) -> None:
        """`conn` no longer counts (closed, or about to be)."""
        if conn.counted:
            conn.counted = False
            self.open -= 1
            self._fresh.pop(conn, None)
            self._idle.pop(conn, None)


class GuardedHandler(RequestHandler):
    """aiohttp's connection protocol with a head deadline and the connection cap."""

    def __init__(self, manager: web.Server, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        self.counted = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._awaiting_head = True  # the next bytes start a request head
        self._handling = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.guard.admit(self):
            self.counted = True
            return
        limit = self.guard.max_connections
        message = f"too many open connections (server.max_connections = {limit})"
        refusal = _raw_error(503, "Service Unavailable", message, "Retry-After: 1\r\n")
        transport.write(refusal)  # type: ignore[attr-defined]
        self.force_close()

    def data_received(self, data: bytes) -> None:
        # a head that arrives whole in one read (the usual case) needs no deadline
        if self._awaiting_head and self._head_timer is None and data and b"\r\n\r\n" not in data:
            self._head_timer = self._loop.call_later(
                self.guard.header_timeout_s, self._head_timed_out
            )
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:  # a complete head was parsed
            self._awaiting_head = False
            self._cancel_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        self.guard.release(self)
        super().connection_lost(exc)

    async def _handle_request(
        self,
        request: BaseRequest,
        start_time: float | None,
        request_handler: Callable[[BaseRequest], Awaitable[web.StreamResponse]],
    ) -> tuple[web.StreamResponse, bool]:
        self._handling = True
        self.guard.busy(self)
        try:
            resp, reset = await super()._handle_request(request, start_time, request_handler)
            if resp.status == 408:  # a body that trickled: close now, do not linger on it
                self.force_close()
            return resp, reset
        finally:
            self._handling = False
            self._awaiting_head = True
            self.guard.idle(self)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """An OpenAI-shaped error for a request the parser refused (or a handler's bug)."""
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error")
        if status >= 500:
            log.error("error handling a request", exc_info=exc)
            text, code = "internal gateway error", "internal_error"
        elif isinstance(exc, LineTooLong) or "too many headers" in str(exc).lower():
            status = 431
            text = (
                f"request header fields too large: a line over {self.guard.max_header_bytes} "
                "bytes or too many headers"
            )
            code = "headers_too_large"
        else:
            text, code = f"malformed HTTP request ({type(exc).__name__})", "bad_http_request"
        log.debug("refused a request: %d %s", status, type(exc).__name__)
        response = error_response(status, text, code=code)
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """aiohttp's own exception log, without a traceback for a body that could not be
        decoded (aiohttp hits it again while discarding the rest: the client's fault)."""
        if isinstance(kwargs.get("exc_info"), RequestPayloadError):
            log.debug("discarded an unreadable request body")
            return
        super().log_exception(*args, **kwargs)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._handling or self.transport is None:
            return
        self.guard.closed.labels("header_timeout").inc()
        message = f"request headers not received within {self.guard.header_timeout_s:g} s"
        self.transport.write(_raw_error(408, "Request Timeout", message))
        self.force_close()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None


class GuardedServer(web.Server):
    """aiohttp's low-level server, making `GuardedHandler` connections."""

    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, guard=self.guard, loop=self._loop, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """An `AppRunner` whose server enforces the `ConnectionGuard`'s limits."""

    def __init__(self, app: web.Application, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.guard = guard

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()  # runs the app's startup
        return GuardedServer(
            base.request_handler,
            request_factory=base.request_factory,
            guard=self.guard,
            **self._kwargs,
        )
