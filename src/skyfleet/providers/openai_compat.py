"""Pieces for upstreams that speak OpenAI's own wire format (Azure, Vertex's OpenAI endpoint)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from skyfleet.gateway.sse import SSERelay
from skyfleet.providers.base import (
    ResponseGarbage,
    UpstreamError,
    Usage,
    client_status,
    make_error,
    retry_after,
)
from skyfleet.providers.common import loads
from skyfleet.providers.openai_out import usage_from


class OpenAIStream(SSERelay):
    """OpenAI SSE passed through byte for byte (usage recorded, and stripped unless asked)."""

    __slots__ = ("error",)

    def __init__(self, include_usage: bool) -> None:
        super().__init__(strip_usage=not include_usage)
        self.error: UpstreamError | None = None

    def flush(self) -> bytes:
        rest, self.buf = self.buf, b""
        return self.feed(rest + b"\n\n") if rest.strip() else b""


def with_model(obj: dict[str, Any], model: str, stream: bool, include_usage: bool) -> bytes:
    """The client's body for an OpenAI-format upstream: its model, usage asked for."""
    body = dict(obj)
    body["model"] = model
    if stream:
        body["stream"] = True
    if stream and include_usage:
        stream_options = dict(body.get("stream_options") or {})
        stream_options["include_usage"] = True
        body["stream_options"] = stream_options
    return orjson.dumps(body)


def response(what: str, body: bytes) -> tuple[bytes, Usage | None]:
    """The body as it came (byte for byte) and its usage; ResponseGarbage if not JSON."""
    obj = loads(body)
    if not isinstance(obj, dict):
        raise ResponseGarbage(
            make_error("upstream_garbage", f"{what} returned a body that is not JSON")
        )
    if "error" in obj and "choices" not in obj and "data" not in obj:
        raise ResponseGarbage(
            make_error("upstream_5xx", f"{what} returned an error with status 200")
        )
    return body, usage_from(obj.get("usage"))


def error(
    what: str, provider: str, status: int, headers: Mapping[str, str], body: bytes
) -> UpstreamError:
    """An OpenAI-shaped error answer (OpenAI, vLLM, Azure, Vertex's OpenAI endpoint)."""
    obj = loads(body)
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):  # Vertex wraps errors in a list
        err = obj[0].get("error")
    msg = str(err.get("message", "")) if isinstance(err, dict) else ""
    code = err.get("code") if isinstance(err, dict) else None
    code_s = str(code) if code is not None else None
    inner = err.get("innererror") if isinstance(err, dict) else None
    if code_s == "content_filter" or (
        isinstance(inner, dict) and inner.get("code") == "ResponsibleAIPolicyViolation"
    ):
        return make_error(
            "content_filter", f"{provider} content filter: {msg}", code="content_filter"
        )
    if status == 429:
        return make_error(
            "upstream_429",
            f"{what} is rate limiting: {msg}",
            retry_after_s=retry_after(headers),
            code=code_s,
        )
    if status in (401, 403):
        return make_error(
            "upstream_auth", f"{what} rejected the gateway's credentials ({status})", code=code_s
        )
    if status == 404:
        return make_error("upstream_not_found", f"{what}: {msg or 'not found'}", code=code_s)
    if status >= 500:
        return make_error(
            "upstream_5xx",
            f"{what} answered {status}: {msg}",
            status=client_status(status),
            code=code_s,
        )
    return make_error(
        "upstream_bad_request",
        f"{provider}: {msg or f'status {status}'}",
        status=status if status in (400, 413, 422) else 400,
        code=code_s,
    )
