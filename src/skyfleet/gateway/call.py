"""One request on its way through the gateway, and how it ended."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from skyfleet.config import TenantConfig
from skyfleet.gateway.ledger import UsageRecord
from skyfleet.policy.outcome import Outcome
from skyfleet.policy.types import RequestFeatures


class StreamReshaper(Protocol):
    """OpenAI SSE bytes in, the client's own stream format out (e.g. Anthropic Messages)."""

    def feed(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


@dataclass(slots=True)
class Call:
    """An admitted request: what the client sent and its ledger record, carried through the
    attempts."""

    api: str  # chat | completions | embeddings
    record: UsageRecord
    features: RequestFeatures
    request: dict[str, Any]  # the parsed body
    body: bytes  # the body as the client sent it (passed through when nothing changes)
    started: float  # monotonic
    client_usage: bool  # the client asked for usage in its stream
    tenant: TenantConfig | None = None
    committed: bool = False  # bytes reached the client: no more retries
    finished: bool = False  # the stream's last event reached the client
    reshape_stream: StreamReshaper | None = None  # the client speaks another API's stream


@dataclass(slots=True)
class Answer:
    """The response an attempt (or the proxy) gave and how the request ended; the handler
    sets it on the request's record (`Handlers.settle`)."""

    response: web.StreamResponse
    outcome: Outcome
    status: int
