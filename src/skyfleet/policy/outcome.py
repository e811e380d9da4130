"""How a request, or one upstream attempt, ended: one vocabulary for the gateway, the ledger,
the metrics and the simulator.

The value is what the ledger's `error` column and the `cause`/`outcome` metric labels
hold. Properties say what the request path does about it: whether another endpoint may be
tried (only before the first byte reached the client), whether the endpoint's outlier
detection counts it, and whether it is an overload signal for the endpoint's adaptive
concurrency limit.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """The end of a request or of one attempt."""

    OK = "ok"
    # refused by the gateway itself, before any upstream attempt (no ledger record)
    AUTH = "auth"
    TOO_LARGE = "too_large"
    SLOW_CLIENT = "slow_client"  # the body did not arrive within server.body_timeout_s (408)
    BAD_REQUEST = "bad_request"
    UNKNOWN_MODEL = "unknown_model"
    RATE_LIMITED = "rate_limited"  # the tenant's limits (429)
    SHED = "shed"  # overload control (queue full, past deadline, displaced)
    NO_HEALTHY_ENDPOINT = "no_healthy_endpoint"
    # one upstream attempt
    UPSTREAM_CLIENT_ERROR = "upstream_4xx"  # the upstream's 4xx, passed on: the client's request
    UPSTREAM_BAD_REQUEST = "upstream_bad_request"  # a translated request the provider refused
    CONTENT_FILTER = "content_filter"
    UNSUPPORTED = "unsupported"  # the endpoint's provider cannot take a field of the request
    UPSTREAM_AUTH = "upstream_auth"  # the gateway's own credentials were refused
    UPSTREAM_NOT_FOUND = "upstream_not_found"  # the endpoint's model/deployment does not exist
    UPSTREAM_429 = "upstream_429"  # rate limited
    UPSTREAM_OVERLOADED = "upstream_overloaded"  # Anthropic 529, Bedrock throttling, Vertex
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"  # 503 from an OpenAI-compatible server
    UPSTREAM_5XX = "upstream_5xx"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_CONNECT = "upstream_connect"
    UPSTREAM_GARBAGE = "upstream_garbage"
    # after the first byte reached the client
    MID_STREAM = "mid_stream"
    CLIENT_DISCONNECTED = "client_disconnected"
    INTERNAL = "internal_error"

    @property
    def ok(self) -> bool:
        """The request was served."""
        return self is Outcome.OK

    @property
    def endpoint_fault(self) -> bool:
        """Counts towards the endpoint's outlier ejection."""
        return self in _ENDPOINT_FAULTS

    @property
    def retryable(self) -> bool:
        """Another endpoint may be tried (before the first byte reached the client)."""
        return self in _RETRYABLE

    @property
    def overload(self) -> bool:
        """An overload signal: the endpoint's adaptive concurrency limit backs off."""
        return self in _OVERLOAD

    @property
    def shed(self) -> bool:
        """Refused to protect the service (tenant limits or overload control)."""
        return self in (Outcome.RATE_LIMITED, Outcome.SHED)


_ENDPOINT_FAULTS = frozenset(
    {
        Outcome.UPSTREAM_NOT_FOUND,
        Outcome.UPSTREAM_UNAVAILABLE,
        Outcome.UPSTREAM_5XX,
        Outcome.UPSTREAM_TIMEOUT,
        Outcome.UPSTREAM_CONNECT,
        Outcome.UPSTREAM_GARBAGE,
        Outcome.MID_STREAM,
    }
)
_RETRYABLE = frozenset(
    {
        Outcome.UNSUPPORTED,
        Outcome.UPSTREAM_AUTH,
        Outcome.UPSTREAM_NOT_FOUND,
        Outcome.UPSTREAM_429,
        Outcome.UPSTREAM_OVERLOADED,
        Outcome.UPSTREAM_UNAVAILABLE,
        Outcome.UPSTREAM_5XX,
        Outcome.UPSTREAM_TIMEOUT,
        Outcome.UPSTREAM_CONNECT,
        Outcome.UPSTREAM_GARBAGE,
    }
)
_OVERLOAD = frozenset({Outcome.UPSTREAM_429, Outcome.UPSTREAM_OVERLOADED, Outcome.UPSTREAM_TIMEOUT})

OUTCOMES: tuple[Outcome, ...] = tuple(Outcome)
"""Every outcome in a fixed order: `OUTCOMES.index(o)` is a compact code (the simulator's
per-request arrays)."""
