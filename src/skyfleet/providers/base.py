"""The upstream-adapter interface between the gateway and each provider kind (pure).

The gateway calls an endpoint's adapter (`skyfleet.providers.build_adapter(cfg)`) to turn
the client's OpenAI request into the provider's HTTP request, and the provider's answer
back into OpenAI bytes. Nothing here does I/O except `Adapter.start`/`close` (credential
refresh in the background, never on the hot path).

Call order for one attempt (the gateway's side):

    err = adapter.check(api, obj)            # None, or (message, param) -> 400 to the client
    req = adapter.build(api, obj, stream=..., include_usage=True)
    POST req.url, headers=req.headers, data=req.body
    non-2xx:   e = adapter.error(status, headers, body)          -> UpstreamError
    2xx JSON:  body, usage = adapter.response(api, status, headers, body, model=public)
    2xx stream: adapter.stream_start_ok(headers, first) ; t = adapter.stream(api, ...)
               for chunk: client.write(t.feed(chunk)) ; at EOF client.write(t.flush())
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

if TYPE_CHECKING:
    import aiohttp

APIS: Final = ("chat", "completions", "embeddings")
KINDS: Final = ("openai", "azure_openai", "vertex", "bedrock", "anthropic")

CAUSES: Final = (
    "upstream_429",  # provider rate limit: retry elsewhere, no ejection, mark throttled
    "upstream_overloaded",  # 529 / ThrottlingException / RESOURCE_EXHAUSTED: same as 429
    "upstream_5xx",  # provider server error: retry elsewhere, endpoint fault
    "upstream_auth",  # our credentials rejected (401/403): 502, retry elsewhere, no ejection
    "upstream_not_found",  # the endpoint's model/deployment does not exist: 502, retry, fault
    "content_filter",  # provider refused the content: 400, no retry, no ejection
    "upstream_bad_request",  # provider says the translated request is invalid: 400, no retry
    "upstream_garbage",  # unparsable answer or broken stream framing: retry, endpoint fault
)


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """One HTTP request to the provider: POST unless it is a `probe()` (GET, empty body)."""

    url: str  # full URL of the upstream call
    headers: dict[str, str]  # auth included (api-key, x-api-key, SigV4, Bearer token)
    body: bytes


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one answer, OpenAI semantics (prompt includes cached tokens)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None

    def as_openai(self) -> dict[str, Any]:
        """OpenAI's `usage` object."""
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }
        if self.cached_tokens is not None:
            out["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return out


@dataclass(frozen=True, slots=True)
class UpstreamError:
    """How the gateway must treat a provider's non-2xx answer (or a 2xx that is an error)."""

    status: int  # HTTP status for the client, OpenAI semantics
    cause: str  # one of CAUSES (the ledger's `error`, a metric label)
    message: str  # for the client; names the endpoint and provider, never a secret
    retryable: bool  # may the gateway try another endpoint (only before the first byte)?
    endpoint_fault: bool  # does it count towards the endpoint's outlier ejection?
    retry_after_s: float | None = None
    error_type: str = "server_error"  # OpenAI error.type
    code: str | None = None  # OpenAI error.code (the provider's own error name)

    def body(self) -> bytes:
        """The OpenAI error JSON for the client."""
        import orjson

        err = {"message": self.message, "type": self.error_type, "param": None, "code": self.code}
        return orjson.dumps({"error": err})


class ResponseGarbage(Exception):
    """A 2xx answer that cannot be translated (not JSON, or an error in disguise)."""

    def __init__(self, error: UpstreamError) -> None:
        super().__init__(error.message)
        self.error = error


class StreamGarbage(ResponseGarbage):
    """Stream bytes that break the provider's framing (SSE / AWS event-stream)."""


class RequestRejected(Exception):
    """`build` was given a request `check` would have refused: (message, param)."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.message, self.param = message, param


@runtime_checkable
class StreamTranslator(Protocol):
    """Provider stream bytes in (any chunking) → OpenAI `chat.completion.chunk` SSE bytes out.

    The translator writes `data: [DONE]` itself when the provider's end-of-stream event
    arrives (`done` turns True). A provider error event inside the stream becomes an OpenAI
    error event in the output and sets `error` (the stream is then not `done`).
    """

    done: bool
    usage: dict[str, Any] | None  # OpenAI usage once known (prompt_tokens_details too)
    events: int  # content events emitted (a token estimate when usage is lost)
    error: UpstreamError | None

    def feed(self, chunk: bytes) -> bytes: ...  # may return b""; raises StreamGarbage

    def flush(self) -> bytes: ...  # at upstream EOF: anything left


@runtime_checkable
class Adapter(Protocol):
    """One endpoint's translation and auth. Built once per endpoint config."""

    kind: str  # one of KINDS
    passthrough: bool  # True only for `openai`: the gateway keeps its byte-for-byte path
    name: str  # the endpoint's name (for messages)

    def supports(self, api: str) -> bool:
        """Whether `api` ("chat", "completions", "embeddings") can go to this endpoint."""
        ...

    def check(self, api: str, obj: dict[str, Any]) -> tuple[str, str] | None:
        """(message naming field and provider, param) for a field the provider cannot take."""
        ...

    def build(
        self, api: str, obj: dict[str, Any], *, stream: bool, include_usage: bool
    ) -> UpstreamRequest:
        """The provider request for the client's OpenAI `obj` (the endpoint's model put in).

        `include_usage`: ask the provider for usage (OpenAI-style upstreams need
        stream_options; the others always report it). Raises RequestRejected for what
        `check` refuses."""
        ...

    def response(
        self, api: str, status: int, headers: Mapping[str, str], body: bytes, *, model: str
    ) -> tuple[bytes, Usage | None]:
        """A 2xx body → OpenAI JSON bytes (`model` = the public name) and its usage."""
        ...

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        """Any non-2xx answer → what the client sees and what the gateway does."""
        ...

    def stream_start_ok(self, headers: Mapping[str, str], first: bytes) -> bool:
        """Is this the start of a stream in the provider's framing?"""
        ...

    def stream(self, api: str, *, model: str, include_usage: bool) -> StreamTranslator:
        """A translator for one streamed answer; `include_usage`: the client asked for it."""
        ...

    def probe(self) -> UpstreamRequest | None:
        """A cheap GET health probe, or None (cloud APIs: rely on passive ejection)."""
        ...

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Load credentials and start refreshing them in the background (before expiry)."""
        ...

    async def close(self) -> None:
        """Stop background tasks."""
        ...


# -- helpers shared by the adapters -----------------------------------------------------


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup on any mapping (aiohttp's is already insensitive)."""
    exact = headers.get(name)
    if exact is not None:
        return exact
    low = name.lower()
    for key, value in headers.items():
        if key.lower() == low:
            return value
    return None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds; an HTTP date is ignored)."""
    millis = header(headers, "retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    seconds = header(headers, "retry-after")
    if seconds is not None:
        try:
            return max(0.0, float(seconds))
        except ValueError:
            return None
    return None


def cause_of_status(status: int, *, throttled: str) -> str:
    """The cause of an error answer the provider named no code for, by its HTTP status
    (`throttled`: what this provider's 429 means). Anthropic's 529 is its overload."""
    if status in (401, 403):
        return "upstream_auth"
    if status == 404:
        return "upstream_not_found"
    if status == 429:
        return throttled
    if status == 529:
        return "upstream_overloaded"
    return "upstream_5xx" if status >= 500 else "upstream_bad_request"


def client_status(upstream: int) -> int:
    """The status a client sees for an upstream server error."""
    return upstream if upstream in (500, 502, 503, 504) else 502


def make_error(
    cause: str,
    message: str,
    *,
    status: int | None = None,
    retry_after_s: float | None = None,
    code: str | None = None,
) -> UpstreamError:
    """An UpstreamError with the retry/ejection rules of `cause` (see CAUSES)."""
    if cause in ("upstream_429", "upstream_overloaded"):
        return UpstreamError(
            status or 429, cause, message, True, False, retry_after_s, "rate_limit_error", code
        )
    if cause == "upstream_5xx":
        return UpstreamError(status or 502, cause, message, True, True, None, "server_error", code)
    if cause == "upstream_auth":
        return UpstreamError(502, cause, message, True, False, None, "server_error", code)
    if cause == "upstream_not_found":
        return UpstreamError(502, cause, message, True, True, None, "server_error", code)
    if cause == "content_filter":
        return UpstreamError(400, cause, message, False, False, None, "invalid_request_error", code)
    if cause == "upstream_bad_request":
        return UpstreamError(
            status or 400, cause, message, False, False, None, "invalid_request_error", code
        )
    if cause == "upstream_garbage":
        return UpstreamError(502, cause, message, True, True, None, "server_error", code)
    raise ValueError(f"unknown cause {cause!r}")
