"""What an upstream answered: is it an answer to pass on? (pure checks, plus reading a
stream up to its first event).

A 2xx body must be a JSON object that is not an error; a stream must be server-sent events
whose first event is JSON and not an error; an upstream's error body reaches the client only
as an OpenAI error object, with the endpoint's own key masked should it echo it. Answers that
fail the first two are retried elsewhere like any upstream fault (`Outcome.UPSTREAM_GARBAGE`),
because nothing has reached the client yet.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from skyfleet.gateway.errors import error_body

_FIRST_EVENT_MAX = 1 << 20


async def first_event(upstream: aiohttp.ClientResponse) -> bytes:
    """The stream's bytes up to the end of its first event (or its end, or 1 MiB)."""
    first = await upstream.content.readany()
    while first and not has_event_end(first) and len(first) < _FIRST_EVENT_MAX:
        more = await upstream.content.readany()
        if not more:
            break
        first += more
    return first


def has_event_end(data: bytes) -> bool:
    """Whether `data` holds the end of an SSE event (a blank line)."""
    return b"\n\n" in data or b"\r\n\r\n" in data


def stream_problem(content_type: str, first: bytes) -> str | None:
    """Why a stream's first bytes are not a stream to relay, or None: not SSE, closed before
    its first event, or a first event that is an error or not JSON."""
    head = first.lstrip()
    if "text/event-stream" not in content_type or not head.startswith(
        (b"data:", b":", b"event:", b"id:")
    ):
        return "not server-sent events"
    if not has_event_end(first):
        return "closed before its first event" if len(first) < _FIRST_EVENT_MAX else None
    event = first.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    payload = b"".join(
        line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")
    )
    if not payload or payload == b"[DONE]":
        return None
    parsed = json_object(payload)
    if parsed is None:
        return "first event not a JSON object"
    if "error" in parsed and not parsed.get("choices"):
        return "first event is an error"
    return None


def json_object(data: bytes) -> dict[str, Any] | None:
    """`data` parsed, when it is a JSON object."""
    try:
        parsed = orjson.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return parsed if isinstance(parsed, dict) else None


def answer_problem(parsed: dict[str, Any] | None) -> str | None:
    """Why a 2xx body is not an answer (not a JSON object; an error object), or None."""
    if parsed is None:
        return "not a JSON object"
    if "error" in parsed and not parsed.get("choices") and not parsed.get("data"):
        return "an error in a 2xx answer"
    return None


def upstream_error_body(data: bytes, secret: str | None) -> bytes | None:
    """An upstream's error body to pass on: as sent when it is an OpenAI error object (with
    the endpoint's own API key, should it echo it, masked), else None."""
    parsed = json_object(data)
    error = parsed.get("error") if parsed is not None else None
    if not (isinstance(error, dict) and isinstance(error.get("message"), str)):
        return None
    if secret and secret.encode() in data:
        data = data.replace(secret.encode(), b"***")
    return data


def client_error(
    endpoint: str, status: int, data: bytes, content_type: str, secret: str | None
) -> tuple[bytes, str]:
    """An upstream's 4xx body and content type for the client: its OpenAI error object
    (`upstream_error_body`), else an OpenAI error naming the endpoint and status."""
    body = upstream_error_body(data, secret)
    if body is not None:
        return body, content_type
    message = f"endpoint {endpoint} answered {status} without an OpenAI error body"
    return error_body(status, message, code="upstream_error"), "application/json"
