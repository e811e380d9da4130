"""Incremental server-sent-events parser (WHATWG rules; pure): bytes in, (event, data) out."""

from __future__ import annotations

from skyfleet.providers.base import StreamGarbage, make_error

MAX_EVENT = 8 << 20  # bytes one event may take before the stream counts as garbage


class SSEParser:
    """Feed bytes as they arrive; `feed` returns the complete events as (event, data).

    `event` is None when the event has no `event:` line; data lines are joined with \\n.
    Comments (`:` lines) and `id:`/`retry:` fields are skipped. CRLF, LF and CR all end
    lines, as in the spec.
    """

    __slots__ = ("_buf", "_data", "_event", "_what")

    def __init__(self, what: str) -> None:
        self._what = what  # names the provider in errors
        self._buf = b""
        self._event: str | None = None
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[tuple[str | None, bytes]]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            if buf.endswith(b"\r"):  # a CR that may start a CRLF: wait for the next byte
                buf = buf[:-1]
                keep_cr = True
            else:
                keep_cr = False
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        else:
            keep_cr = False
        out: list[tuple[str | None, bytes]] = []
        start = 0
        while True:
            newline = buf.find(b"\n", start)
            if newline < 0:
                break
            line = buf[start:newline]
            start = newline + 1
            if not line:
                if self._data or self._event is not None:
                    out.append((self._event, b"\n".join(self._data)))
                self._event, self._data = None, []
                continue
            if line[0:1] == b":":
                continue
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value)
            elif name == b"event":
                self._event = value.decode("utf-8", "replace")
        rest = buf[start:]
        self._buf = rest + b"\r" if keep_cr else rest
        if len(self._buf) + sum(len(part) for part in self._data) > MAX_EVENT:
            raise StreamGarbage(
                make_error("upstream_garbage", f"{self._what}: stream event over {MAX_EVENT} bytes")
            )
        return out

    def flush(self) -> list[tuple[str | None, bytes]]:
        """At EOF: a last event not followed by a blank line still counts (spec: it does not,
        but providers that close right after `data:` lines mean it)."""
        out = self.feed(b"\n") if self._buf else []
        if self._data:
            out.append((self._event, b"\n".join(self._data)))
            self._event, self._data = None, []
        return out
