"""Server-sent-event relay: pass chunks through, pick out (and optionally strip) usage."""

from __future__ import annotations

import re
from typing import Any

import orjson

_MAX_PENDING = 1 << 20
_DONE = re.compile(rb"(?:^|\n)data: ?\[DONE\]\n")  # the line, not the text inside an event


class SSERelay:
    """Feed upstream bytes, get the bytes to send to the client now.

    Complete events are forwarded as soon as they arrive; a partial event waits for its end.
    The usage event (`choices: []` with a `usage` object) is recorded, and dropped when the
    client did not ask for usage (`strip_usage`).
    """

    __slots__ = ("buf", "done", "events", "strip_usage", "usage")

    def __init__(self, strip_usage: bool) -> None:
        self.strip_usage = strip_usage
        self.buf = b""
        self.done = False  # saw `data: [DONE]`
        self.events = 0  # complete events relayed (a token-count estimate when usage is lost)
        self.usage: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> bytes:
        """Bytes of complete events ready for the client."""
        data = self.buf + chunk if self.buf else chunk
        if b"\r\n" in data:
            data = data.replace(b"\r\n", b"\n")
        cut = data.rfind(b"\n\n")
        if cut < 0:
            if len(data) > _MAX_PENDING:  # no event boundary in sight: pass it on
                self.buf = b""
                return data
            self.buf = data
            return b""
        complete, self.buf = data[: cut + 2], data[cut + 2 :]
        if not self.done and b"[DONE]" in complete and _DONE.search(complete):
            self.done = True
        if b'"usage"' not in complete:
            self.events += complete.count(b"\n\n")
            return complete
        return self._scan(complete)

    def flush(self) -> bytes:
        """At the upstream's end: what follows `[DONE]` (nothing of a cut stream's partial
        event, which would corrupt the error event written after it)."""
        rest, self.buf = self.buf, b""
        return rest if self.done else b""

    def _scan(self, complete: bytes) -> bytes:
        out: list[bytes] = []
        for event in complete.split(b"\n\n")[:-1]:
            keep = True
            if b'"usage"' in event:
                payload = b"".join(
                    line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")
                )
                try:
                    obj = orjson.loads(payload)
                except ValueError:
                    obj = None
                if isinstance(obj, dict) and isinstance(obj.get("usage"), dict):
                    self.usage = obj["usage"]
                    if self.strip_usage and not obj.get("choices"):
                        keep = False
            if keep:
                out.append(event + b"\n\n")
                self.events += 1
        return b"".join(out)


def error_event(message: str, code: int = 502) -> bytes:
    """An OpenAI-style error event that ends a broken stream."""
    err = {"message": message, "type": "server_error", "param": None, "code": code}
    return b"data: " + orjson.dumps({"error": err}) + b"\n\n"
