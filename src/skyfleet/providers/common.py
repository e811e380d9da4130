"""What the translating adapters share: a base class and JSON helpers (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from skyfleet.providers.base import (
    RequestRejected,
    ResponseGarbage,
    UpstreamRequest,
    header,
    make_error,
)

if TYPE_CHECKING:
    import aiohttp

    from skyfleet.config import EndpointConfig


def loads(body: bytes) -> Any:
    """JSON, or None when the body is not JSON."""
    try:
        return orjson.loads(body)
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        return None


def json_args(arguments: str, param: str, provider: str) -> Any:
    """A tool call's arguments (JSON text) as an object, or RequestRejected."""
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        raise RequestRejected(
            f"'{param}' must be JSON text ({provider} needs the arguments as an object)", param
        ) from None
    if not isinstance(parsed, dict):
        raise RequestRejected(f"'{param}' must be a JSON object for {provider}", param)
    return parsed


class TranslatingAdapter:
    """Base of the adapters whose provider speaks its own protocol (chat only)."""

    kind = ""
    provider = ""  # how messages name the provider ("Anthropic", "Bedrock", ...)
    passthrough = False
    fields: frozenset[str] = frozenset()  # OpenAI chat fields the provider can take

    def __init__(self, cfg: EndpointConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.extra_headers = {name: value.get_secret_value() for name, value in cfg.headers.items()}
        self._checked: tuple[dict[str, Any], dict[str, Any]] | None = None

    def what(self) -> str:
        return f"endpoint {self.name} ({self.provider})"

    def supports(self, api: str) -> bool:
        return api == "chat"

    def check(self, api: str, obj: dict[str, Any]) -> tuple[str, str] | None:
        if not self.supports(api):
            return (f"the {api} API is not supported by {self.provider} endpoints", "model")
        try:
            self._checked = (obj, self.translate(obj))
        except RequestRejected as e:
            return (e.message, e.param or "")
        return None

    def translated(self, obj: dict[str, Any]) -> dict[str, Any]:
        """`translate(obj)`, reusing the result of `check(obj)` just before (same object)."""
        last, self._checked = self._checked, None
        if last is not None and last[0] is obj:
            return last[1]
        return self.translate(obj)

    def translate(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The provider's request body for an OpenAI chat request; RequestRejected."""
        raise NotImplementedError

    def parse_ok(self, body: bytes) -> dict[str, Any]:
        """A 2xx body as a JSON object, or ResponseGarbage."""
        obj = loads(body)
        if not isinstance(obj, dict):
            raise ResponseGarbage(
                make_error("upstream_garbage", f"{self.what()} returned a body that is not JSON")
            )
        return obj

    def stream_start_ok(self, headers: Mapping[str, str], first: bytes) -> bool:
        """SSE: content type text/event-stream and a first line an SSE field starts."""
        content_type = header(headers, "Content-Type") or ""
        head = first.lstrip()
        return (
            bool(first)
            and "text/event-stream" in content_type
            and head.startswith((b"data:", b":", b"event:", b"id:"))
        )

    def probe(self) -> UpstreamRequest | None:
        return None

    async def start(self, session: aiohttp.ClientSession) -> None:
        return None

    async def close(self) -> None:
        return None
