"""The gateway's admission step: one call per request that admits (maybe after queueing) or
refuses it.

`AdmissionController.admit` may suspend while the request waits in a queue. It returns a
`Ticket` for an admitted request — the request holds it until it ends, then calls
`ticket.release(outcome, usage)` exactly once — or raises `Rejected` (status, message,
Retry-After). `AdmitAll` admits everything; `gateway.overload.OverloadController` is the
real one (tenant limits, priority queue, shedding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from skyfleet.config import FleetConfig, TenantConfig
from skyfleet.gateway.errors import GatewayError
from skyfleet.policy.outcome import Outcome
from skyfleet.policy.types import EndpointState, RequestFeatures


class Usage(NamedTuple):
    """What an ended request consumed: its tokens and what they cost."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class Ticket(Protocol):
    """An admitted request's hold on the fleet, until `release`."""

    def release(self, outcome: Outcome, usage: Usage) -> None:
        """The request ended: free its slot, settle its token and budget charges."""
        ...


class Rejected(GatewayError):
    """Admission refused the request: the client gets `status` with `message`."""

    def __init__(
        self,
        outcome: Outcome,
        status: int,
        message: str,
        retry_after_s: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            outcome, status, message, code="rejected", retry_after_s=retry_after_s, headers=headers
        )


class AdmissionController(Protocol):
    """What the gateway needs from admission control."""

    async def admit(
        self, req: RequestFeatures, tenant: TenantConfig | None, eps: Sequence[EndpointState]
    ) -> Ticket:
        """A ticket once the request may proceed; raises `Rejected` otherwise."""
        ...

    def limit_headers(self, tenant: TenantConfig) -> dict[str, str]:
        """The tenant's current `x-ratelimit-*` headers (empty without limits)."""
        ...

    def configure(self, cfg: FleetConfig) -> None:
        """A reloaded config: re-read settings, keep live state."""
        ...

    async def start(self) -> None:
        """Connect what it needs (shared stores)."""
        ...

    async def close(self) -> None:
        """Stop background work."""
        ...


class _NoHold:
    """The ticket of a request nothing holds back."""

    def release(self, outcome: Outcome, usage: Usage) -> None:
        return None


NO_HOLD: Ticket = _NoHold()
"""The ticket of a request that holds nothing (no limits, no fleet slot)."""


class AdmitAll:
    """No admission control: every request proceeds."""

    async def admit(
        self, req: RequestFeatures, tenant: TenantConfig | None, eps: Sequence[EndpointState]
    ) -> Ticket:
        return NO_HOLD

    def limit_headers(self, tenant: TenantConfig) -> dict[str, str]:
        return {}

    def configure(self, cfg: FleetConfig) -> None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
