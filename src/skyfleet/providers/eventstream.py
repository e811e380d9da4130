"""AWS event-stream framing (`application/vnd.amazon.eventstream`), both ways (pure).

A message is: total length (u32), headers length (u32), CRC32 of those 8 bytes, headers,
payload, CRC32 of everything before it. A header is name length (u8), name, type (u8),
value; Bedrock uses string headers (type 7: u16 length + UTF-8) such as `:event-type`,
`:message-type` (event | exception | error) and `:content-type`.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from skyfleet.providers.base import StreamGarbage, make_error

PRELUDE = 12
MAX_MESSAGE = 24 * 1024 * 1024 + 128 * 1024 + 16  # botocore's payload + headers limits
_U32 = struct.Struct(">I")
_PRE = struct.Struct(">II")
# fixed-size header value types: type -> bytes
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


@dataclass(frozen=True, slots=True)
class Message:
    headers: dict[str, str | int | bool | bytes]
    payload: bytes

    def header(self, name: str) -> str:
        value = self.headers.get(name)
        return value if isinstance(value, str) else ""


def encode(headers: dict[str, str], payload: bytes) -> bytes:
    """One message with string headers."""
    header_bytes = bytearray()
    for name, value in headers.items():
        name_bytes, value_bytes = name.encode(), value.encode()
        header_bytes += (
            bytes((len(name_bytes),))
            + name_bytes
            + b"\x07"
            + struct.pack(">H", len(value_bytes))
            + value_bytes
        )
    total = PRELUDE + len(header_bytes) + len(payload) + 4
    prelude = _PRE.pack(total, len(header_bytes))
    head = prelude + _U32.pack(zlib.crc32(prelude)) + bytes(header_bytes) + payload
    return head + _U32.pack(zlib.crc32(head))


def event(event_type: str, payload: bytes) -> bytes:
    """A Bedrock `event` message carrying JSON."""
    return encode(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
        payload,
    )


def exception(exception_type: str, payload: bytes) -> bytes:
    """A Bedrock `exception` message (e.g. throttlingException) carrying JSON."""
    return encode(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        payload,
    )


def _headers(data: bytes, what: str) -> dict[str, str | int | bool | bytes]:
    out: dict[str, str | int | bool | bytes] = {}
    pos, end = 0, len(data)
    try:
        while pos < end:
            name_len = data[pos]
            name = data[pos + 1 : pos + 1 + name_len].decode()
            pos += 1 + name_len
            value_type = data[pos]
            pos += 1
            if value_type in (0, 1):
                out[name] = value_type == 0
            elif value_type in (6, 7):
                (value_len,) = struct.unpack_from(">H", data, pos)
                raw = data[pos + 2 : pos + 2 + value_len]
                if len(raw) != value_len:
                    raise ValueError("short header value")
                out[name] = raw.decode() if value_type == 7 else raw
                pos += 2 + value_len
            elif value_type in _FIXED:
                size = _FIXED[value_type]
                raw = data[pos : pos + size]
                if len(raw) != size:
                    raise ValueError("short header value")
                out[name] = (
                    int.from_bytes(raw, "big", signed=value_type != 9) if value_type != 9 else raw
                )
                pos += size
            else:
                raise ValueError(f"unknown header type {value_type}")
    except (IndexError, ValueError, struct.error, UnicodeDecodeError) as e:
        raise _garbage(what, f"bad event-stream header ({e})") from None
    return out


def _garbage(what: str, why: str) -> StreamGarbage:
    return StreamGarbage(make_error("upstream_garbage", f"{what}: {why}"))


class Decoder:
    """Feed bytes in any chunking; `feed` returns the complete, CRC-checked messages."""

    __slots__ = ("_buf", "_what")

    def __init__(self, what: str) -> None:
        self._what = what
        self._buf = b""

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held back."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[Message]:
        buf = self._buf + chunk if self._buf else chunk
        out: list[Message] = []
        pos = 0
        while len(buf) - pos >= PRELUDE:
            total, hlen = _PRE.unpack_from(buf, pos)
            (pcrc,) = _U32.unpack_from(buf, pos + 8)
            if zlib.crc32(buf[pos : pos + 8]) != pcrc:
                raise _garbage(self._what, "event-stream prelude CRC mismatch")
            if total > MAX_MESSAGE or hlen > total - PRELUDE - 4:
                raise _garbage(self._what, f"event-stream message length {total} is invalid")
            if len(buf) - pos < total:
                break
            end = pos + total
            (mcrc,) = _U32.unpack_from(buf, end - 4)
            if zlib.crc32(buf[pos : end - 4]) != mcrc:
                raise _garbage(self._what, "event-stream message CRC mismatch")
            hstart = pos + PRELUDE
            headers = _headers(buf[hstart : hstart + hlen], self._what)
            out.append(Message(headers, buf[hstart + hlen : end - 4]))
            pos = end
        self._buf = buf[pos:]
        return out
