"""The gateway's admission step: one call per request that admits, queues or rejects.

An `Admission` object's `admit` coroutine may suspend while the request waits in a queue; it
returns an `AdmissionDecision` whose action is "admit" or "reject" (status + Retry-After).
`release` is called exactly once for every admitted request when it ends, with its usage.
The default admits everything; the overload policies (issue 7) plug in here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from skyfleet.config import TenantConfig
from skyfleet.policy.types import ADMIT, AdmissionDecision, EndpointState, RequestFeatures


class Admission(Protocol):
    """What the gateway needs from an admission controller."""

    async def admit(
        self, req: RequestFeatures, tenant: TenantConfig | None, eps: Sequence[EndpointState]
    ) -> AdmissionDecision:
        """Decide (possibly after queueing) whether the request may proceed."""
        ...

    def release(
        self, req: RequestFeatures, tenant: TenantConfig | None, prompt: int, completion: int
    ) -> None:
        """An admitted request ended; `prompt`/`completion` are its tokens."""
        ...


class AdmitAll:
    """No admission control: every request proceeds."""

    async def admit(
        self, req: RequestFeatures, tenant: TenantConfig | None, eps: Sequence[EndpointState]
    ) -> AdmissionDecision:
        return ADMIT

    def release(
        self, req: RequestFeatures, tenant: TenantConfig | None, prompt: int, completion: int
    ) -> None:
        return None
